"""The slice cache (vetseg.data.cache): same slices as decoding, resume, refusal."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from vetseg.config import AugmentConfig, PreprocessConfig
from vetseg.data import cache as cache_module
from vetseg.data.cache import CacheSettings, SliceCache, prepare_cache
from vetseg.data.datasets import load_case, open_dataset
from vetseg.data.slices import SliceDataset
from vetseg.errors import InputError
from vetseg.training.stages import settle_preprocess
from vetseg.training.validation import cached_validation_cases, make_validation_cases

ORGANS = ("liver", "spleen")
PRE = PreprocessConfig(size=32, spacing=2.5)
SETTINGS = CacheSettings.of(PRE, ORGANS, None)


def _write_dataset(root: Path, n_cases: int = 3) -> Path:
    """MSD layout, cases of different in-plane spacings and origins (different model grids)."""
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n_cases):
        image = rng.normal(40.0, 300.0, size=(6, 30 + 4 * i, 28)).astype(np.float32)
        labels = np.zeros(image.shape, dtype=np.uint8)
        labels[1:5, 6:18, 5:15] = 1
        labels[2:4, 20:26, 18:24] = 2
        image[labels == 1] = 90.0 + rng.normal(0, 10, size=int((labels == 1).sum()))
        for array, sub, name in ((image, "imagesTr", f"c{i}_0000"), (labels, "labelsTr", f"c{i}")):
            itk = sitk.GetImageFromArray(array)
            itk.SetSpacing((1.0 + 0.3 * i, 1.0 + 0.3 * i, 2.0))
            itk.SetOrigin((0.7 * i, -1.1 * i, 0.0))
            sitk.WriteImage(itk, str(root / sub / f"{name}.nii.gz"))
    labels_json = {"background": 0, "liver": 1, "spleen": 2}
    (root / "dataset.json").write_text(json.dumps({"labels": labels_json}))
    return root


@pytest.fixture()
def dataset_dir(tmp_path: Path) -> Path:
    return _write_dataset(tmp_path / "ds")


def _decoded(root: Path) -> list:
    dataset = open_dataset(root, organs=ORGANS)
    return [load_case(dataset, case, PRE.orientation) for case in dataset.cases]


def test_cached_slices_equal_the_decoded_ones_exactly(dataset_dir: Path, tmp_path: Path) -> None:
    cache = prepare_cache(dataset_dir, tmp_path / "cache", SETTINGS)
    loaded = _decoded(dataset_dir)
    ids = [case.case_id for case in loaded]
    # The intensity statistics from the cache's organ samples are those of the decoded scans.
    pre = settle_preprocess(PRE, loaded)
    assert settle_preprocess(PRE, [cache.cases[i] for i in ids], cache) == pre
    augment = AugmentConfig(horizontal_flip=0.5, shift_scale_rotate=0.5)
    decoded = SliceDataset(loaded, ORGANS, pre, augment=augment, empty_slice_rate=0.5, seed=4)
    cached = SliceDataset.from_cache(cache, ids, ORGANS, pre, augment, 0.5, seed=4)
    assert len(cached) == len(decoded) > 0
    assert cached.n_slices_total == decoded.n_slices_total
    for epoch in (0, 1):
        decoded.set_epoch(epoch)
        cached.set_epoch(epoch)
        for index in range(len(decoded)):
            assert cached.slice_origin(index) == decoded.slice_origin(index)
            for a, b in zip(cached[index], decoded[index], strict=True):
                assert torch.equal(a, b)
    np.testing.assert_array_equal(cached.slice_weights(), decoded.slice_weights())
    for a, b in zip(
        cached_validation_cases(cache, ids, pre, max_slices=8),
        make_validation_cases(loaded, pre, max_slices=8),
        strict=True,
    ):
        assert a.case_id == b.case_id
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    # Digests are the cases' identity elsewhere (splits, KnownCases).
    assert [cache.cases[i].digest for i in ids] == [case.digest for case in loaded]


def test_the_cache_is_memory_mapped_and_pickles_as_paths(dataset_dir: Path, tmp_path: Path) -> None:
    import pickle

    cache = prepare_cache(dataset_dir, tmp_path / "cache", SETTINGS)
    pre = dataclasses.replace(PRE, intensity=(50.0, 200.0))
    dataset = SliceDataset.from_cache(cache, list(cache.cases), ORGANS, pre)
    sample = dataset[0]
    assert isinstance(dataset._images[0].array, np.memmap)
    copy = pickle.loads(pickle.dumps(dataset))
    assert len(pickle.dumps(dataset)) < 20_000  # paths, not voxels
    assert all(torch.equal(a, b) for a, b in zip(copy[0], sample, strict=True))


def test_prepare_resumes_after_an_interruption(
    dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "cache"
    real = cache_module.prepare_case
    calls: list[str] = []

    def dies_on_the_second_case(dataset, case, settings, folder):  # type: ignore[no-untyped-def]
        calls.append(case.case_id)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(dataset, case, settings, folder)

    monkeypatch.setattr(cache_module, "prepare_case", dies_on_the_second_case)
    with pytest.raises(KeyboardInterrupt):
        prepare_cache(dataset_dir, out, SETTINGS)
    with pytest.raises(InputError, match=r"unfinished slice cache \(1 of 3 cases\)"):
        SliceCache.open(out)
    assert not list(out.rglob("*.tmp*"))  # no half-written file left behind
    first = out / "cases" / "c0" / "image.npy"
    stamp = first.stat().st_mtime_ns

    monkeypatch.setattr(cache_module, "prepare_case", real)
    counts: list[tuple[int, int]] = []
    done: list[str] = []
    cache = prepare_cache(
        dataset_dir, out, SETTINGS, on_start=lambda *c: counts.append(c), on_case=done.append
    )
    assert counts == [(2, 3)] and done == ["c1", "c2"]
    assert first.stat().st_mtime_ns == stamp
    assert sorted(SliceCache.open(out).cases) == sorted(cache.cases) == ["c0", "c1", "c2"]

    # A source file that changes makes the cache stale for that case, and prepare redoes it.
    label = dataset_dir / "labelsTr" / "c1.nii.gz"
    os.utime(label, ns=(label.stat().st_atime_ns, label.stat().st_mtime_ns + 10**9))
    dataset = open_dataset(dataset_dir, organs=ORGANS)
    with pytest.raises(InputError, match="c1 were added, removed or changed"):
        cache.check_source(dataset)
    done.clear()
    prepare_cache(dataset_dir, out, SETTINGS, on_case=done.append)
    assert done == ["c1"]
    SliceCache.open(out).check_source(dataset)


def test_parallel_workers_write_the_same_cache(dataset_dir: Path, tmp_path: Path) -> None:
    one = prepare_cache(dataset_dir, tmp_path / "one", SETTINGS, workers=1)
    two = prepare_cache(dataset_dir, tmp_path / "two", SETTINGS, workers=2)
    for case_id in one.cases:
        assert one.cases[case_id] == two.cases[case_id]
        np.testing.assert_array_equal(one.images(case_id)[:], two.images(case_id)[:])
        np.testing.assert_array_equal(one.labels(case_id)[:], two.labels(case_id)[:])


def test_a_cache_made_with_other_settings_is_refused(dataset_dir: Path, tmp_path: Path) -> None:
    cache = prepare_cache(dataset_dir, tmp_path / "cache", SETTINGS)
    other = dataclasses.replace(SETTINGS, spacing=2.0, window=(-500.0, 500.0))
    with pytest.raises(InputError) as error:
        cache.check(other)
    message = str(error.value)
    assert "spacing 2.5 mm (this run: 2 mm)" in message and "window -1000..1000 HU" in message
    assert ". " not in message and "\n" not in message and message.endswith(".")  # one sentence
    pre = dataclasses.replace(PRE, spacing=2.0, intensity=(0.0, 1.0))
    with pytest.raises(InputError, match="other settings: spacing"):
        SliceDataset.from_cache(cache, ["c0"], ORGANS, pre)
    with pytest.raises(InputError, match="organs liver,spleen"):
        cache.check(dataclasses.replace(SETTINGS, organs=("liver",)))
    # Writing into a cache of other settings is refused too, before anything is touched.
    with pytest.raises(InputError, match="made with other settings"):
        prepare_cache(dataset_dir, tmp_path / "cache", other)
    with pytest.raises(InputError, match="not a slice cache"):
        SliceCache.open(tmp_path)
