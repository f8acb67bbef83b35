"""Soft-tissue HU shift augmentation (AugmentConfig.hu_shift, train-human --hu-shift)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vetseg.cli import _stage_config, app
from vetseg.config import AugmentConfig, PreprocessConfig
from vetseg.data.augment import shift_soft_tissue
from vetseg.data.datasets import LoadedCase
from vetseg.data.slices import SliceDataset
from vetseg.errors import InputError
from vetseg.io.image import ImageMeta
from vetseg.labels import CORE_ORGANS, organ_ids

IDS = organ_ids(CORE_ORGANS)
META = ImageMeta((1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
#: A model in physical scale with intensity statistics: slices are kept in HU until the end.
PHYSICAL = PreprocessConfig(size=32, spacing=1.0, intensity=(0.0, 100.0))


def _tissues() -> tuple[np.ndarray, np.ndarray]:
    """A 4 x 4 slice: lung (-800), fat (-250), soft background (40), liver (60), spleen (50),
    bone (700); labels 1 liver, 2 spleen."""
    image = np.array(
        [[-800, -800, -250, -250], [40, 40, 60, 60], [40, 50, 50, 60], [700, 700, 700, 40]],
        dtype=np.float32,
    )
    labels = np.zeros((4, 4), dtype=np.uint8)
    labels[image == 60] = IDS["liver"]
    labels[image == 50] = IDS["spleen"]
    return image, labels


def test_soft_tissue_moves_by_the_case_offset_plus_its_organs() -> None:
    image, labels = _tissues()
    shifted, case, organ = shift_soft_tissue(
        image, labels, np.random.default_rng(3), len(CORE_ORGANS), 40.0, 20.0
    )
    assert -40.0 <= case <= 40.0 and case != 0.0
    assert organ.shape == (len(CORE_ORGANS),) and np.all(np.abs(organ) <= 20.0)
    delta = shifted - image
    untouched = (image <= -200) | (image >= 300)  # lung, fat, bone keep their HU
    assert np.all(delta[untouched] == 0.0)
    assert np.allclose(delta[(image == 40)], case)
    assert np.allclose(delta[labels == IDS["liver"]], case + organ[IDS["liver"] - 1])
    assert np.allclose(delta[labels == IDS["spleen"]], case + organ[IDS["spleen"] - 1])
    assert np.array_equal(image, _tissues()[0])  # the input is not modified


def test_the_draw_count_does_not_depend_on_the_labels() -> None:
    image, labels = _tissues()
    after = []
    for lab in (labels, np.zeros_like(labels)):
        rng = np.random.default_rng(5)
        shift_soft_tissue(image, lab, rng, len(CORE_ORGANS), 40.0, 20.0)
        after.append(rng.random())
    assert after[0] == after[1]


def test_a_stack_of_slices_moves_alike() -> None:
    image, labels = _tissues()
    stack = np.stack([image, image, image])
    shifted, _, _ = shift_soft_tissue(
        stack, labels, np.random.default_rng(1), len(CORE_ORGANS), 40.0, 20.0
    )
    assert shifted.shape == stack.shape
    assert np.array_equal(shifted[0], shifted[1]) and np.array_equal(shifted[1], shifted[2])


def _case() -> LoadedCase:
    """A [12, 40, 40] case in HU: soft background, a liver (60 HU), air around it."""
    rng = np.random.default_rng(0)
    image = np.full((12, 40, 40), -1000.0, dtype=np.float32)
    image[:, 4:36, 4:36] = 40.0 + rng.normal(0.0, 5.0, size=(12, 32, 32))
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[:, 8:24, 8:24] = IDS["liver"]
    image[labels == IDS["liver"]] = 60.0
    return LoadedCase("a", image, labels, META, META)


def _samples(augment: AugmentConfig) -> list[tuple[torch.Tensor, torch.Tensor]]:
    dataset = SliceDataset([_case()], CORE_ORGANS, PHYSICAL, augment=augment, seed=2)
    dataset.set_epoch(1)
    return [dataset[i] for i in range(len(dataset))]


def test_dataset_shifts_only_soft_tissue_and_keeps_crops_and_masks() -> None:
    # Flips only: the shift's own generator must leave the crop and the flips as they were.
    flips = {"motion_blur": 0.0, "shift_scale_rotate": 0.0, "distortion": 0.0, "gauss_noise": 0.0}
    plain = _samples(AugmentConfig(**flips, horizontal_flip=0.5, vertical_flip=0.5))
    always = _samples(AugmentConfig(**flips, horizontal_flip=0.5, vertical_flip=0.5, hu_shift=1.0))
    moved = 0
    for (image_0, mask_0), (image_1, mask_1) in zip(plain, always, strict=True):
        assert torch.equal(mask_0, mask_1)
        air = image_0 <= (-200.0 - 0.0) / 100.0
        assert torch.equal(image_0[air], image_1[air])  # air stays air
        delta = (image_1 - image_0) * 100.0  # back to HU
        liver = mask_0[CORE_ORGANS.index("liver")].bool()[None]
        soft = ~air & ~liver
        if soft.any():
            assert float(delta[soft].std()) < 1e-3  # one offset for the whole background
            assert float(delta[soft].abs().max()) <= 40.0 + 1e-3
        if liver.any():
            assert float(delta[liver].abs().max()) <= 60.0 + 1e-3
        moved += bool(float(delta.abs().max()) > 0.5)
    assert moved == len(plain)  # hu_shift 1.0: every sample moved


def test_chance_half_moves_about_half_and_zero_moves_none() -> None:
    no_aug = {"motion_blur": 0.0, "horizontal_flip": 0.0, "vertical_flip": 0.0}
    no_aug |= {"shift_scale_rotate": 0.0, "distortion": 0.0, "gauss_noise": 0.0}
    plain = _samples(AugmentConfig(**no_aug))
    for chance, low, high in ((0.0, 0, 0), (0.5, 0.2, 0.8)):
        other = _samples(AugmentConfig(**no_aug, hu_shift=chance))
        moved = sum(not torch.equal(a[0], b[0]) for a, b in zip(plain, other, strict=True))
        assert low * len(plain) <= moved <= high * len(plain), (chance, moved, len(plain))


def test_scans_on_another_intensity_scale_are_refused() -> None:
    case = _case()
    rescaled = LoadedCase("micro", (case.image + 1000.0) / 8.0, case.labels, META, META)  # 0..133
    with pytest.raises(InputError, match="assumes Hounsfield units.*lowest value 0 "):
        SliceDataset([rescaled], CORE_ORGANS, PHYSICAL, augment=AugmentConfig(hu_shift=0.5))
    # Without the shift the same scans train as before; with HU scans beside them it is allowed.
    assert len(SliceDataset([rescaled], CORE_ORGANS, PHYSICAL, augment=AugmentConfig())) > 0
    both = SliceDataset(
        [rescaled, case], CORE_ORGANS, PHYSICAL, augment=AugmentConfig(hu_shift=0.5)
    )
    assert len(both) > 0


def test_a_model_without_hu_until_the_end_is_refused() -> None:
    legacy = PreprocessConfig(size=32)  # no spacing: slices are stored as model input
    with pytest.raises(InputError, match="hu_shift needs a model with a pixel spacing"):
        SliceDataset([_case()], CORE_ORGANS, legacy, augment=AugmentConfig(hu_shift=0.5))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"hu_shift": 1.5}, "hu_shift is a probability"),
        ({"hu_shift": -0.1}, "hu_shift is a probability"),
        ({"hu_shift_case": -5.0}, "hu_shift_case must lie in"),
        ({"hu_shift_organ": 500.0}, "hu_shift_organ must lie in"),
    ],
)
def test_bad_settings_are_refused(settings: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        AugmentConfig(**settings)


def test_cli_option_sets_the_chance_and_keeps_the_other_augmentations() -> None:
    cfg = _stage_config("human", None, hu_shift=0.5)
    assert cfg.augment.hu_shift == 0.5
    assert cfg.augment.motion_blur == AugmentConfig().motion_blur and cfg.augment.enabled
    assert _stage_config("human", None).augment.hu_shift == 0.0
    transfer = _stage_config("transfer", None, hu_shift=0.25)
    assert transfer.augment.hu_shift == 0.25 and transfer.tversky_beta == 0.7  # transfer's own
    with pytest.raises(InputError, match="leave out --no-augment"):
        _stage_config("human", None, hu_shift=0.5, no_augment=True)


def test_cli_rejects_a_bad_chance_with_exit_2(tmp_path) -> None:
    result = CliRunner().invoke(
        app, ["train-human", str(tmp_path), "--out", str(tmp_path / "m"), "--hu-shift", "2"]
    )
    assert result.exit_code == 2
    assert "hu_shift is a probability" in result.output
    assert not (tmp_path / "m" / "model.json").exists()


def test_config_file_sets_the_ranges(tmp_path) -> None:
    settings = tmp_path / "settings.json"
    settings.write_text('{"augment": {"hu_shift": 0.25, "hu_shift_case": 10, "hu_shift_organ": 5}}')
    augment = _stage_config("human", settings).augment
    assert (augment.hu_shift, augment.hu_shift_case, augment.hu_shift_organ) == (0.25, 10, 5)
    assert augment.gauss_noise == AugmentConfig().gauss_noise
    settings.write_text('{"augment": {"hu_shift": 3}}')
    with pytest.raises(InputError, match="hu_shift is a probability"):
        _stage_config("human", settings)
