"""Dataset layouts, case loading and case-level splits (vetseg.data.datasets)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from vetseg.data.datasets import (
    load_case,
    open_dataset,
    read_splits,
    split_by_case,
    write_splits,
)
from vetseg.errors import GridMismatchError, InputError, LabelMappingError
from vetseg.labels import CORE_ORGANS, organ_ids

SHAPE = (6, 16, 20)  # z, y, x
IDS = organ_ids(CORE_ORGANS)


def _write(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 2.0), direction=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    if direction is not None:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path))
    return path


def _image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-1000, 1000, size=SHAPE).astype(np.int16)


def _labels(values: tuple[int, ...]) -> np.ndarray:
    """Stripes of the given ids along x, so every id is present on every slice."""
    labels = np.zeros(SHAPE, dtype=np.uint8)
    for k, value in enumerate(values):
        labels[:, 2:14, 2 + 4 * k : 5 + 4 * k] = value
    return labels


def _msd(root: Path, labels_json: dict, n: int = 3, suffix: str = "_0000", **extra) -> Path:
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    # Every named id (v2: {"liver": 1}, v1: {"1": "liver"}) is drawn in every label map.
    ids = labels_json.values() if "background" in labels_json else map(int, labels_json)
    values = tuple(v for v in ids if v != 0)
    for i in range(n):
        _write(root / "imagesTr" / f"case_{i:03d}{suffix}.nii.gz", _image(i))
        _write(root / "labelsTr" / f"case_{i:03d}.nii.gz", _labels(values))
    (root / "dataset.json").write_text(json.dumps({"labels": labels_json, **extra}))
    return root


# --------------------------------------------------------------------------- layouts
def test_msd_v2_labels_with_channel_suffix(tmp_path: Path) -> None:
    root = _msd(tmp_path / "ds", {"background": 0, "liver": 1, "kidney_left": 2, "tumour": 3})
    dataset = open_dataset(root)
    assert dataset.layout == "msd"
    assert dataset.case_ids == ["case_000", "case_001", "case_002"]
    assert dataset.mapping == {1: "liver", 2: "kidney_left", 3: None}
    assert dataset.synthetic is False and dataset.species is None
    loaded = load_case(dataset, dataset.cases[1])
    assert loaded.image.dtype == np.float32 and loaded.image.shape == SHAPE
    assert loaded.labels is not None and loaded.labels.dtype == np.uint8
    assert set(np.unique(loaded.labels)) == {0, IDS["liver"], IDS["kidney_left"]}
    np.testing.assert_array_equal(loaded.image, _image(1).astype(np.float32))
    assert loaded.meta.spacing == (1.0, 1.0, 2.0)


def test_msd_v1_labels_without_suffix_and_flags(tmp_path: Path) -> None:
    root = _msd(
        tmp_path / "ds",
        {"0": "background", "1": "spleen", "2": "Left Kidney", "3": "lung_upper_lobe_left"},
        suffix="",
        synthetic=True,
        species="rabbit",
    )
    dataset = open_dataset(root)
    assert dataset.mapping == {1: "spleen", 2: "kidney_left", 3: "lungs"}
    assert dataset.synthetic is True and dataset.species == "rabbit"
    loaded = load_case(dataset, dataset.case("case_002"))
    expected = _labels((IDS["spleen"], IDS["kidney_left"], IDS["lungs"]))
    np.testing.assert_array_equal(loaded.labels, expected)


def test_msd_real_cases_among_synthetic_ones(tmp_path: Path) -> None:
    labels = {"background": 0, "liver": 1}
    mixed = open_dataset(_msd(tmp_path / "mixed", labels, synthetic=True, real_cases=["case_001"]))
    assert mixed.synthetic and mixed.real_cases == ("case_001",) and mixed.has_real_cases
    phantoms = open_dataset(_msd(tmp_path / "phantoms", labels, synthetic=True))
    assert phantoms.real_cases == () and not phantoms.has_real_cases
    assert open_dataset(_msd(tmp_path / "real", labels)).has_real_cases
    with pytest.raises(InputError, match="real_cases"):
        open_dataset(_msd(tmp_path / "bad", labels, synthetic=True, real_cases="case_001"))


def test_msd_other_file_ending(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
    for i in range(2):
        _write(root / "imagesTr" / f"c{i}_0000.nrrd", _image(i))
        _write(root / "labelsTr" / f"c{i}.nrrd", _labels((1,)))
    (root / "dataset.json").write_text(
        json.dumps({"labels": {"background": 0, "heart": 1}, "file_ending": ".nrrd"})
    )
    dataset = open_dataset(root, organs=("heart",))
    assert dataset.case_ids == ["c0", "c1"]
    assert set(np.unique(load_case(dataset, dataset.cases[0]).labels)) == {0, 1}


def test_pairs_without_names_use_vetseg_ids(tmp_path: Path) -> None:
    for i in range(2):
        _write(tmp_path / f"rabbit{i}.nii.gz", _image(i))
        _write(tmp_path / f"rabbit{i}_seg.nii.gz", _labels((1, 5, 7)))
    dataset = open_dataset(tmp_path)
    assert dataset.layout == "pairs"
    assert dataset.case_ids == ["rabbit0", "rabbit1"]
    loaded = load_case(dataset, dataset.cases[0])
    np.testing.assert_array_equal(loaded.labels, _labels((1, 5, 7)))


def test_pairs_with_totalseg_labels_json(tmp_path: Path) -> None:
    _write(tmp_path / "s1.nii.gz", _image(0))
    _write(tmp_path / "s1_seg.nii.gz", _labels((5, 12, 92, 52)))  # liver, lobe, rib, aorta
    names = {"5": "liver", "12": "lung_upper_lobe_right", "92": "rib_left_1", "52": "aorta"}
    (tmp_path / "labels.json").write_text(json.dumps(names))
    dataset = open_dataset(tmp_path)
    loaded = load_case(dataset, dataset.cases[0])
    expected = _labels((IDS["liver"], IDS["lungs"], IDS["bone"], 0))
    np.testing.assert_array_equal(loaded.labels, expected)


def _totalseg_subject(root: Path, name: str, seed: int) -> None:
    _write(root / name / "ct.nii.gz", _image(seed))
    seg = root / name / "segmentations"
    masks = {
        "liver": (slice(None), slice(2, 6), slice(2, 6)),
        "lung_upper_lobe_left": (slice(None), slice(8, 12), slice(2, 6)),
        "lung_lower_lobe_left": (slice(None), slice(12, 14), slice(2, 6)),
        "rib_left_1": (slice(None), slice(2, 4), slice(10, 12)),
        "aorta": (slice(None), slice(8, 10), slice(10, 12)),
    }
    for structure, where in masks.items():
        mask = np.zeros(SHAPE, dtype=np.uint8)
        mask[where] = 1
        _write(seg / f"{structure}.nii.gz", mask)
    _write(seg / "kidney_right.nii.gz", np.zeros(SHAPE, dtype=np.uint8))  # empty: fine


def test_totalseg_layout_merges_structure_masks(tmp_path: Path) -> None:
    _totalseg_subject(tmp_path, "s0002", 1)
    _totalseg_subject(tmp_path, "s0001", 0)
    (tmp_path / "meta.csv").write_text("image_id\ns0001\ns0002\n")
    dataset = open_dataset(tmp_path)
    assert dataset.layout == "totalseg"
    assert dataset.case_ids == ["s0001", "s0002"]
    assert dataset.cases[0].label is None and dataset.cases[0].label_dir is not None
    labels = load_case(dataset, dataset.cases[0]).labels
    assert labels is not None
    assert set(np.unique(labels)) == {0, IDS["liver"], IDS["lungs"], IDS["bone"]}
    assert (labels[:, 8:14, 2:6] == IDS["lungs"]).all()  # two lobes, one organ
    assert (labels[:, 8:10, 10:12] == 0).all()  # the aorta is not a vetseg organ


def test_real_totalseg_sample_loads(shared_data: Path) -> None:
    root = shared_data / "human" / "totalseg_layout"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    dataset = open_dataset(root)
    assert dataset.layout == "totalseg" and dataset.species == "human"
    start = time.perf_counter()
    loaded = load_case(dataset, dataset.cases[0])
    elapsed = time.perf_counter() - start
    assert loaded.labels is not None and loaded.labels.shape == loaded.image.shape
    counts = np.bincount(loaded.labels.ravel(), minlength=len(CORE_ORGANS) + 1)
    for organ in ("liver", "lungs", "bone"):
        assert counts[IDS[organ]] > 100, organ
    # Real CT: air near -1000 HU somewhere, soft tissue and bone above 0.
    assert loaded.image.min() < -900 and loaded.image.max() > 300
    assert elapsed < 15

    def centre(organ: str) -> np.ndarray:
        return np.argwhere(loaded.labels == IDS[organ]).mean(axis=0)  # (z, y, x)

    # Canonical anatomy, which the left-right flip augmentation relies on: column 0 is the
    # patient's right (liver, right kidney), axis 0 runs to the head (lungs above the liver).
    assert centre("kidney_right")[2] < centre("kidney_left")[2]
    assert centre("liver")[2] < centre("spleen")[2]
    assert centre("lungs")[0] > centre("liver")[0]


def test_load_case_turns_to_canonical_orientation(tmp_path: Path) -> None:
    ras = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[:, 1, 2] = 1  # a marker near the first row and column on disk
    _write(tmp_path / "c.nii.gz", _image(0), direction=ras)
    _write(tmp_path / "c_seg.nii.gz", labels, direction=ras)
    loaded = load_case(dataset := open_dataset(tmp_path), dataset.cases[0])
    # RAS on disk -> LPS canonical: rows and columns reversed; image and labels together.
    np.testing.assert_array_equal(loaded.image, _image(0)[:, ::-1, ::-1].astype(np.float32))
    assert loaded.labels is not None and loaded.labels[0, SHAPE[1] - 2, SHAPE[2] - 3] == 1
    assert loaded.meta.direction == ras
    assert loaded.canonical_meta.direction == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


# --------------------------------------------------------------------------- errors
def test_unrecognised_or_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=str(tmp_path)):
        open_dataset(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="not a dataset folder"):
        open_dataset(tmp_path)
    with pytest.raises(InputError, match="no such dataset folder"):
        open_dataset(tmp_path / "absent")


def test_msd_missing_label_file_is_named(tmp_path: Path) -> None:
    root = _msd(tmp_path / "ds", {"background": 0, "liver": 1})
    (root / "labelsTr" / "case_001.nii.gz").unlink()
    with pytest.raises(InputError, match=r"case_001\.nii\.gz"):
        open_dataset(root)


def test_pairs_missing_label_file_is_named(tmp_path: Path) -> None:
    _write(tmp_path / "a.nii.gz", _image(0))
    _write(tmp_path / "a_seg.nii.gz", _labels((1,)))
    _write(tmp_path / "b.nii.gz", _image(1))
    with pytest.raises(InputError, match=r"b_seg\.nii\.gz is missing"):
        open_dataset(tmp_path)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not a readable JSON"),
        ('{"name": "x"}', "no 'labels'"),
        ('{"labels": {"background": 0, "kidneys": [1, 2]}}', "region-based"),
        ('{"labels": {"background": 0, "tumour": 1}}', "none of the label names"),
    ],
)
def test_malformed_dataset_json(tmp_path: Path, content: str, message: str) -> None:
    root = _msd(tmp_path / "ds", {"background": 0, "liver": 1})
    (root / "dataset.json").write_text(content)
    with pytest.raises(InputError, match=message) as info:
        open_dataset(root)
    assert "dataset.json" in str(info.value)


def test_grid_mismatch_is_reported(tmp_path: Path) -> None:
    _write(tmp_path / "a.nii.gz", _image(0))
    _write(tmp_path / "a_seg.nii.gz", _labels((1,)), spacing=(1.0, 1.0, 3.0))
    dataset = open_dataset(tmp_path)
    with pytest.raises(GridMismatchError, match=r"a_seg\.nii\.gz"):
        load_case(dataset, dataset.cases[0])


def test_unknown_label_ids_name_the_file(tmp_path: Path) -> None:
    root = _msd(tmp_path / "ds", {"background": 0, "liver": 1})
    _write(root / "labelsTr" / "case_002.nii.gz", _labels((1, 9)))
    dataset = open_dataset(root)
    load_case(dataset, dataset.cases[0])  # the good cases still load
    with pytest.raises(LabelMappingError, match=r"case_002\.nii\.gz.*\b9\b"):
        load_case(dataset, dataset.cases[2])


# --------------------------------------------------------------------------- splits
def test_split_is_a_seeded_partition_with_8_1_1_proportions() -> None:
    ids = [f"case{i:02d}" for i in range(50)]
    splits = split_by_case(ids, seed=3)
    assert [len(splits[k]) for k in ("train", "val", "test")] == [40, 5, 5]
    joined = splits["train"] + splits["val"] + splits["test"]
    assert sorted(joined) == ids and len(set(joined)) == 50
    assert split_by_case(list(reversed(ids)), seed=3) == splits  # input order is irrelevant
    assert split_by_case(ids, seed=4) != splits


@pytest.mark.parametrize(
    "n, sizes", [(3, (1, 1, 1)), (5, (3, 1, 1)), (10, (8, 1, 1)), (12, (10, 1, 1))]
)
def test_split_small_sets_keep_one_val_and_one_test_case(n: int, sizes: tuple) -> None:
    splits = split_by_case([f"c{i}" for i in range(n)], seed=0)
    assert tuple(len(splits[k]) for k in ("train", "val", "test")) == sizes


def test_split_keeps_seen_cases_in_train_when_enough_new_ones_remain() -> None:
    ids = [f"c{i}" for i in range(10)]
    seen = ["c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "elsewhere"]
    splits = split_by_case(ids, seed=2, keep_in_train=seen)
    assert tuple(len(splits[k]) for k in ("train", "val", "test")) == (8, 1, 1)
    assert set(seen[:8]) <= set(splits["train"])  # ids not in the data are ignored
    assert sorted(splits["val"] + splits["test"]) == ["c8", "c9"]
    assert split_by_case(ids, seed=2, keep_in_train=seen) == splits  # reproducible
    # One new case cannot fill val and test: the plain split stands.
    too_many = [f"c{i}" for i in range(9)]
    assert split_by_case(ids, seed=2, keep_in_train=too_many) == split_by_case(ids, seed=2)


def test_split_rejects_too_few_or_repeated_cases() -> None:
    with pytest.raises(InputError, match="at least 3"):
        split_by_case(["a", "b"], seed=0)
    with pytest.raises(InputError, match="more than once"):
        split_by_case(["a", "b", "a", "c"], seed=0)


def test_splits_json_round_trip(tmp_path: Path) -> None:
    splits = split_by_case([f"c{i}" for i in range(20)], seed=1)
    path = tmp_path / "splits.json"
    write_splits(path, splits)
    assert read_splits(path) == splits
    assert [p.name for p in tmp_path.iterdir()] == ["splits.json"]  # no temporary left
    path.write_text(json.dumps({"train": ["a", "b"], "val": ["b"], "test": []}))
    with pytest.raises(InputError, match="both 'train' and 'val'"):
        read_splits(path)
