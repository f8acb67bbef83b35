"""In-memory 2D training slices (vetseg.data.slices)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from vetseg.config import AugmentConfig, PreprocessConfig
from vetseg.data.datasets import LoadedCase, load_case, open_dataset, split_by_case
from vetseg.data.preprocess import prepare_volume
from vetseg.data.slices import SliceDataset
from vetseg.errors import InputError
from vetseg.io.image import ImageMeta
from vetseg.labels import CORE_ORGANS, organ_ids

IDS = organ_ids(CORE_ORGANS)
PRE = PreprocessConfig(size=32)
META = ImageMeta((1.0, 1.0, 1.0), (0.0, 0.0, 0.0))


def _case(case_id: str, n_slices: int = 100, liver: range = range(0, 20), spleen=range(0, 2)):
    """A [n, 40, 40] case: liver on ``liver`` slices, spleen (rare) on ``spleen`` slices."""
    rng = np.random.default_rng(list(case_id.encode()))  # str hash() is salted per process
    image = rng.normal(0.0, 200.0, size=(n_slices, 40, 40)).astype(np.float32)
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[list(liver), 5:25, 5:25] = IDS["liver"]
    labels[list(spleen), 28:36, 28:36] = IDS["spleen"]
    return LoadedCase(case_id, image, labels, META, META)


def test_sample_shapes_and_binary_targets() -> None:
    dataset = SliceDataset([_case("a")], CORE_ORGANS, PRE, augment=AugmentConfig(), seed=1)
    assert len(dataset) > 0
    for i in range(len(dataset)):
        image, target = dataset[i]
        assert image.shape == (1, 32, 32) and image.dtype == torch.float32
        assert target.shape == (len(CORE_ORGANS), 32, 32) and target.dtype == torch.float32
        assert set(target.unique().tolist()) <= {0.0, 1.0}
        assert torch.isfinite(image).all()


def test_samples_match_the_shared_input_definition() -> None:
    case = _case("a")
    dataset = SliceDataset([case], CORE_ORGANS, PRE, augment=None)
    prepared = prepare_volume(case.image, PRE)
    for i in (0, len(dataset) - 1):
        case_id, z = dataset.slice_origin(i)
        image, target = dataset[i]
        assert case_id == "a"
        np.testing.assert_array_equal(image.numpy(), prepared[z])
        liver = target[CORE_ORGANS.index("liver")].numpy()
        assert liver.any() == (case.labels[z] == IDS["liver"]).any()
        assert target[CORE_ORGANS.index("heart")].sum() == 0


@pytest.mark.parametrize("rate, expected", [(0.0, 20), (0.25, 40), (1.0, 100)])
def test_empty_slice_rate_is_honoured(rate: float, expected: int) -> None:
    # 20 slices show an organ, 80 show none: round(rate * 80) of those are kept.
    dataset = SliceDataset([_case("a")], CORE_ORGANS, PRE, empty_slice_rate=rate, seed=5)
    assert len(dataset) == expected
    assert dataset.n_empty_total == 80
    kept_empty = [dataset.slice_origin(i)[1] for i in range(len(dataset))]
    assert sum(z >= 20 for z in kept_empty) == expected - 20


def test_empty_slice_choice_is_seeded() -> None:
    def empties(seed: int) -> list[int]:
        ds = SliceDataset([_case("a")], CORE_ORGANS, PRE, empty_slice_rate=0.25, seed=seed)
        return [ds.slice_origin(i)[1] for i in range(len(ds)) if ds.slice_origin(i)[1] >= 20]

    assert empties(1) == empties(1)
    assert empties(1) != empties(2)


def test_weights_favour_rare_organs() -> None:
    dataset = SliceDataset([_case("a")], CORE_ORGANS, PRE, empty_slice_rate=0.25)
    weights = dataset.slice_weights()
    assert weights.shape == (len(dataset),) and weights.sum() == pytest.approx(1.0)
    z = np.array([dataset.slice_origin(i)[1] for i in range(len(dataset))])
    with_spleen, liver_only, empty = weights[z < 2], weights[(z >= 2) & (z < 20)], weights[z >= 20]
    # liver on 20 slices, spleen on 2: w = 1 + 1 + sqrt(20 / 2) vs 1 + 1 vs 1.
    np.testing.assert_allclose(with_spleen / empty[0], 2 + np.sqrt(10), rtol=1e-6)
    np.testing.assert_allclose(liver_only / empty[0], 2.0, rtol=1e-6)
    assert with_spleen.min() > liver_only.max() > empty.max()
    equal = dataset.slice_weights(balance=1.0)  # equal exposure: spleen boost 20 / 2
    np.testing.assert_allclose(equal[z < 2] / equal[z >= 20][0], 2 + 10.0, rtol=1e-6)
    flat = dataset.slice_weights(balance=0.0)  # no preference between organs
    np.testing.assert_allclose(flat[z < 2] / flat[z >= 20][0], 3.0, rtol=1e-6)


def test_augmentation_reproduces_per_seed_epoch_and_index() -> None:
    strong = AugmentConfig(motion_blur=0.5, shift_scale_rotate=1.0, distortion=0.5, gauss_noise=1.0)

    def sample(seed: int, epoch: int, index: int) -> torch.Tensor:
        ds = SliceDataset([_case("a")], CORE_ORGANS, PRE, augment=strong, seed=seed)
        ds.set_epoch(epoch)
        return ds[index][0]

    assert torch.equal(sample(0, 1, 3), sample(0, 1, 3))
    assert not torch.equal(sample(0, 1, 3), sample(0, 2, 3))
    assert not torch.equal(sample(0, 1, 3), sample(1, 1, 3))


def test_works_with_a_weighted_sampler_and_loader() -> None:
    dataset = SliceDataset([_case("a"), _case("b")], CORE_ORGANS, PRE, augment=AugmentConfig())
    sampler = torch.utils.data.WeightedRandomSampler(
        torch.as_tensor(dataset.slice_weights()), 16, generator=torch.Generator().manual_seed(0)
    )
    images, targets = next(iter(torch.utils.data.DataLoader(dataset, 8, sampler=sampler)))
    assert images.shape == (8, 1, 32, 32) and targets.shape == (8, len(CORE_ORGANS), 32, 32)
    assert set(dataset.case_ids_per_slice) == {"a", "b"}


def test_bad_cases_raise() -> None:
    unlabelled = LoadedCase("u", np.zeros((4, 40, 40), np.float32), None, META, META)
    with pytest.raises(InputError, match="case u has no label map"):
        SliceDataset([unlabelled], CORE_ORGANS, PRE)
    case = _case("x")
    case.labels[0, 0, 0] = 9
    with pytest.raises(InputError, match="label id 9"):
        SliceDataset([case], CORE_ORGANS, PRE)
    with pytest.raises(InputError, match="empty slice rate"):
        SliceDataset([_case("a")], CORE_ORGANS, PRE, empty_slice_rate=1.5)
    nothing = _case("n", liver=range(0), spleen=range(0))
    with pytest.raises(InputError, match="no slice"):
        SliceDataset([nothing], CORE_ORGANS, PRE, empty_slice_rate=0.0)


def test_train_slices_never_come_from_val_or_test_cases(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(10):
        image = rng.integers(-1000, 1000, size=(4, 24, 24)).astype(np.int16)
        labels = np.zeros(image.shape, dtype=np.uint8)
        labels[:, 4:12, 4:12] = 1
        sitk.WriteImage(sitk.GetImageFromArray(image), str(root / f"imagesTr/c{i}_0000.nii.gz"))
        sitk.WriteImage(sitk.GetImageFromArray(labels), str(root / f"labelsTr/c{i}.nii.gz"))
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "liver": 1}}))
    dataset = open_dataset(root)
    splits = split_by_case(dataset.case_ids, seed=0)
    train = [load_case(dataset, dataset.case(c)) for c in splits["train"]]
    slices = SliceDataset(train, dataset.organs, PRE, empty_slice_rate=1.0)
    seen = set(slices.case_ids_per_slice)
    assert seen == set(splits["train"])
    assert not seen & (set(splits["val"]) | set(splits["test"]))
    assert len(slices) == 4 * len(splits["train"])
