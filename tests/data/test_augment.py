"""Seeded per-sample augmentation (vetseg.data.augment)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from vetseg.config import AugmentConfig
from vetseg.data.augment import DISTORTION_NAMES, NOISE_STD_RANGE, build_augment
from vetseg.errors import InputError
from vetseg.labels import CORE_ORGANS

S = 32
KL = CORE_ORGANS.index("kidney_left")
KR = CORE_ORGANS.index("kidney_right")
NONE = dict(
    motion_blur=0.0,
    horizontal_flip=0.0,
    vertical_flip=0.0,
    shift_scale_rotate=0.0,
    distortion=0.0,
    gauss_noise=0.0,
)


def _only(**probabilities: float) -> AugmentConfig:
    return AugmentConfig(**{**NONE, **probabilities})


def _slice(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A normalised-looking slice and CORE_ORGANS masks: kidney_left on the patient's left.

    Canonical orientation: column 0 is the patient's right, so the left kidney lies at high
    column indices.
    """
    rng = np.random.default_rng(seed)
    image = rng.normal(0.0, 1.0, (S, S)).astype(np.float32)
    masks = np.zeros((len(CORE_ORGANS), S, S), dtype=np.uint8)
    masks[KL, 10:18, 22:28] = 1
    masks[CORE_ORGANS.index("liver"), 8:20, 4:12] = 1
    return image, masks


def test_each_transform_fires_at_its_probability() -> None:
    config = AugmentConfig()
    augment = build_augment(config, CORE_ORGANS)
    image, masks = _slice()
    n = 2000
    counts: Counter[str] = Counter()
    for i in range(n):
        out_image, out_masks = augment(image, masks, np.random.default_rng([7, i]))
        counts.update(augment.last_applied)
        assert out_image.shape == (S, S) and out_masks.shape == masks.shape
    counts["Distortion"] = sum(counts[name] for name in DISTORTION_NAMES)
    expected = {
        "MotionBlur": config.motion_blur,
        "HorizontalFlip": config.horizontal_flip,
        "VerticalFlip": config.vertical_flip,
        "Affine": config.shift_scale_rotate,
        "Distortion": config.distortion,
        "GaussNoise": config.gauss_noise,
    }
    for name, p in expected.items():
        sigma = np.sqrt(n * p * (1 - p))
        assert abs(counts[name] - n * p) < 4 * sigma, (name, counts[name], n * p)
    # The one-of step picks each distortion about equally often.
    for name in DISTORTION_NAMES:
        share = counts["Distortion"] / 3
        assert abs(counts[name] - share) < 4 * np.sqrt(share), (name, counts[name])


def test_horizontal_flip_swaps_left_and_right_organs() -> None:
    augment = build_augment(_only(horizontal_flip=1.0), CORE_ORGANS)
    image, masks = _slice()
    out_image, out_masks = augment(image, masks, np.random.default_rng(0))
    assert augment.last_applied == ("HorizontalFlip",)
    np.testing.assert_array_equal(out_image, image[:, ::-1])
    # The left kidney, mirrored to the other side of the image, is now labelled right kidney.
    assert out_masks[KL].sum() == 0
    np.testing.assert_array_equal(out_masks[KR], masks[KL][:, ::-1])
    assert out_masks[KR][:, : S // 2].sum() == masks[KL].sum()
    liver = CORE_ORGANS.index("liver")
    np.testing.assert_array_equal(out_masks[liver], masks[liver][:, ::-1])


def test_vertical_flip_does_not_swap() -> None:
    augment = build_augment(_only(vertical_flip=1.0), CORE_ORGANS)
    image, masks = _slice()
    out_image, out_masks = augment(image, masks, np.random.default_rng(0))
    assert augment.last_applied == ("VerticalFlip",)
    np.testing.assert_array_equal(out_image, image[::-1])
    np.testing.assert_array_equal(out_masks, masks[:, ::-1])
    assert out_masks[KR].sum() == 0


def test_same_seed_same_output_other_seed_other_output() -> None:
    everything = AugmentConfig(
        motion_blur=1.0,
        horizontal_flip=0.5,
        vertical_flip=0.5,
        shift_scale_rotate=1.0,
        distortion=1.0,
        gauss_noise=1.0,
    )
    image, masks = _slice()
    first = build_augment(everything, CORE_ORGANS)(image, masks, np.random.default_rng(42))
    second = build_augment(everything, CORE_ORGANS)(image, masks, np.random.default_rng(42))
    other = build_augment(everything, CORE_ORGANS)(image, masks, np.random.default_rng(43))
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.allclose(first[0], other[0])


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_masks_stay_binary_under_geometric_transforms(dtype: type) -> None:
    augment = build_augment(_only(shift_scale_rotate=1.0, distortion=1.0), CORE_ORGANS)
    image, masks = _slice()
    for i in range(10):
        _, out = augment(image, masks.astype(dtype), np.random.default_rng(i))
        assert out.dtype == dtype
        assert set(np.unique(out)) <= {0, 1}
        assert out[KL].sum() > 0  # the organ moved, it did not vanish


def test_exposed_borders_are_filled_with_air_not_the_mean() -> None:
    image = np.full((S, S), -2.0, dtype=np.float32)  # air, the slice minimum
    image[8:24, 8:24] = 3.0
    masks = np.zeros((len(CORE_ORGANS), S, S), dtype=np.uint8)
    augment = build_augment(_only(shift_scale_rotate=1.0), CORE_ORGANS)
    for i in range(20):
        out, _ = augment(image, masks, np.random.default_rng(i))
        corners = out[[0, 0, -1, -1], [0, -1, 0, -1]]
        np.testing.assert_allclose(corners, -2.0, atol=1e-5)


def test_pixel_transforms_are_not_clipped_to_unit_range() -> None:
    image, masks = _slice()
    noise = build_augment(_only(gauss_noise=1.0), CORE_ORGANS)
    out, _ = noise(image, masks, np.random.default_rng(0))
    residual = out - image
    assert NOISE_STD_RANGE[0] * 0.8 < residual.std() < NOISE_STD_RANGE[1] * 1.2
    assert out.min() < -1.0  # a [0, 1] clip would have destroyed the negative half
    blur = build_augment(_only(motion_blur=1.0), CORE_ORGANS)
    out, _ = blur(image, masks, np.random.default_rng(0))
    assert out.min() < -1.0
    assert abs(out.mean() - image.mean()) < 0.1
    assert out.std() < image.std()  # blurring white noise lowers its spread


def test_disabled_config_is_identity() -> None:
    image, masks = _slice()
    augment = build_augment(AugmentConfig(enabled=False, horizontal_flip=1.0), CORE_ORGANS)
    out_image, out_masks = augment(image, masks, np.random.default_rng(0))
    assert augment.last_applied == ()
    np.testing.assert_array_equal(out_image, image)
    np.testing.assert_array_equal(out_masks, masks)


def test_bad_arguments_raise() -> None:
    with pytest.raises(InputError, match="probability"):
        build_augment(_only(gauss_noise=1.5), CORE_ORGANS)
    augment = build_augment(AugmentConfig(), CORE_ORGANS)
    with pytest.raises(InputError, match="mask channels"):
        augment(
            np.zeros((S, S), np.float32), np.zeros((2, S, S), np.uint8), np.random.default_rng()
        )
