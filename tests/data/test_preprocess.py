"""The model input definition (vetseg.data.preprocess)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vetseg.config import PreprocessConfig
from vetseg.data.preprocess import (
    normalize_slices,
    prepare_volume,
    resize_probabilities_back,
    resize_slices,
)
from vetseg.errors import InputError


def _ct(shape: tuple[int, int, int] = (4, 40, 48), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Slices with different brightness and spread, and HU far outside the window.
    base = rng.normal(0.0, 300.0, size=shape)
    base += np.arange(shape[0])[:, None, None] * 200.0
    base[:, :5, :5] = -3000.0
    base[:, -5:, -5:] = 4000.0
    return base.astype(np.int16)


def test_normalize_gives_zero_mean_unit_std_per_slice() -> None:
    out = normalize_slices(_ct())
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=(1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(1, 2)), 1.0, atol=1e-4)


def test_normalize_clips_to_the_window_before_standardising() -> None:
    volume = _ct().astype(np.float32)
    window = (-1000.0, 1000.0)
    out = normalize_slices(volume, window)
    clipped = np.clip(volume, *window)
    expected = (clipped - clipped.mean(axis=(1, 2), keepdims=True)) / clipped.std(
        axis=(1, 2), keepdims=True
    )
    np.testing.assert_allclose(out, expected, atol=1e-4)
    # -3000 and -1000 HU end up equal: the clip happened.
    slice0 = volume[0]
    assert out[0][slice0 == -3000].max() == pytest.approx(out[0][0, 0])
    narrow = normalize_slices(volume, (-100.0, 100.0))
    assert not np.allclose(narrow, out)


def test_normalize_constant_slice_is_zero_not_nan() -> None:
    volume = _ct()
    volume[1] = -1024
    out = normalize_slices(volume)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[1], 0.0)


def test_normalize_rejects_bad_input() -> None:
    with pytest.raises(InputError, match="3D"):
        normalize_slices(np.zeros((8, 8)))
    with pytest.raises(InputError, match="window"):
        normalize_slices(np.zeros((1, 8, 8)), (100.0, -100.0))


def test_resize_image_shape_and_values() -> None:
    image = normalize_slices(_ct((3, 50, 70)))
    out = resize_slices(image, 32, order=1)
    assert out.shape == (3, 32, 32) and out.dtype == np.float32
    # Bilinear (antialiased) resizing keeps the per-slice mean close.
    np.testing.assert_allclose(out.mean(axis=(1, 2)), image.mean(axis=(1, 2)), atol=0.1)


def test_resize_labels_keeps_ids_and_dtype() -> None:
    labels = np.zeros((2, 40, 60), dtype=np.uint8)
    labels[:, 5:20, 10:30] = 3
    labels[:, 22:35, 35:55] = 7
    labels[1, 0:4, 0:4] = 200
    out = resize_slices(labels, 64, order=0)
    assert out.shape == (2, 64, 64) and out.dtype == np.uint8
    assert set(np.unique(out)) == {0, 3, 7, 200}  # no blended in-between ids
    # Areas scale with the in-plane zoom (64*64 / (40*60)) up to edge effects.
    zoom = 64 * 64 / (40 * 60)
    assert (out[0] == 3).sum() == pytest.approx((labels[0] == 3).sum() * zoom, rel=0.1)


def test_resize_label_downsampling_keeps_centred_objects() -> None:
    labels = np.zeros((1, 128, 128), dtype=np.uint8)
    labels[0, 40:88, 40:88] = 1
    out = resize_slices(labels, 32, order=0)
    ys, xs = np.nonzero(out[0])
    # The square stays centred (nearest-exact, no half-pixel shift).
    assert ys.min() == 10 and ys.max() == 21 and xs.min() == 10 and xs.max() == 21


def test_prepare_volume_shape_and_normalisation() -> None:
    cfg = PreprocessConfig(size=32)
    out = prepare_volume(_ct((5, 64, 64)), cfg)
    assert out.shape == (5, 1, 32, 32) and out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), 0.0, atol=0.05)


def test_resize_probabilities_back_to_the_scan_grid() -> None:
    probs = np.random.default_rng(0).random((3, 2, 32, 32)).astype(np.float32)
    out = resize_probabilities_back(probs, (50, 70))
    assert isinstance(out, np.ndarray) and out.shape == (3, 2, 50, 70)
    assert out.min() >= 0.0 and out.max() <= 1.0
    tensor_out = resize_probabilities_back(torch.from_numpy(probs), (50, 70))
    assert isinstance(tensor_out, torch.Tensor)
    np.testing.assert_allclose(tensor_out.numpy(), out)
