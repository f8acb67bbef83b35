"""Physical scale: slices resampled to the model's pixel spacing, tiles, and the way back."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from vetseg.config import PreprocessConfig
from vetseg.data.preprocess import (
    BACKGROUND_LOGIT,
    BODY_HU,
    body_level,
    foreground_intensity,
    labels_to_model_grid,
    logits_to_native,
    model_grid,
    normalize_intensity,
    pad_value,
    plan_tiles,
    tile_starts,
    tiled_logits,
    to_model_grid,
)
from vetseg.errors import InputError

PHYSICAL = PreprocessConfig(size=32, spacing=1.5, intensity=(50.0, 200.0))


def test_model_grid_follows_millimetres_not_pixels() -> None:
    # 300 mm of field of view at 0.75 mm and at 1.5 mm: the same 200 model pixels.
    assert model_grid((400, 400), (0.75, 0.75), PHYSICAL).shape == (200, 200)
    assert model_grid((200, 200), (1.5, 1.5), PHYSICAL).shape == (200, 200)
    anisotropic = model_grid((100, 60), (0.6, 3.0), PHYSICAL)
    assert anisotropic.shape == (40, 120) and anisotropic.scale == pytest.approx((0.4, 2.0))
    legacy = model_grid((400, 300), (0.75, 0.75), PreprocessConfig(size=32))
    assert legacy.shape == (32, 32) and legacy.scale is None


def test_model_grid_refuses_absurd_spacing_before_allocating() -> None:
    with pytest.raises(InputError, match="check the scan's spacing"):
        model_grid((512, 512), (500.0, 500.0), PHYSICAL)
    with pytest.raises(InputError, match="positive"):
        model_grid((8, 8), (0.0, 1.0), PHYSICAL)


def test_fixed_intensity_does_not_depend_on_the_field_of_view() -> None:
    rng = np.random.default_rng(0)
    body = rng.normal(40, 60, (2, 20, 20)).astype(np.float32)
    padded = np.full((2, 50, 60), -1000.0, dtype=np.float32)
    padded[:, 10:30, 25:45] = body
    inside = normalize_intensity(padded, PHYSICAL)[:, 10:30, 25:45]
    np.testing.assert_allclose(inside, normalize_intensity(body, PHYSICAL), atol=1e-6)
    # The legacy per-slice statistics do change with the air around the body.
    legacy = PreprocessConfig(size=32)
    assert (
        np.abs(
            normalize_intensity(padded, legacy)[:, 10:30, 25:45] - normalize_intensity(body, legacy)
        ).max()
        > 0.1
    )
    assert pad_value(PHYSICAL) == pytest.approx((-1000 - 50) / 200)


def test_padding_with_air_lands_on_the_same_model_pixels() -> None:
    rng = np.random.default_rng(1)
    body = rng.normal(40, 60, (3, 30, 40)).astype(np.float32)
    padded = np.full((3, 30 + 16, 40 + 24), -1000.0, dtype=np.float32)
    padded[:, :30, :40] = body  # air added after the body: model pixels coincide exactly
    a, grid_a = to_model_grid(body, (0.75, 0.75), PHYSICAL)
    b, _ = to_model_grid(padded, (0.75, 0.75), PHYSICAL)
    assert grid_a.shape == (15, 20)
    # Antialiasing reaches one model pixel into the air: compare the interior.
    np.testing.assert_allclose(a[:, :-1, :-1], b[:, :14, :19], atol=1e-5)


@pytest.mark.parametrize("offset", [(0.0, 0.0), (3.7, -11.2)])
def test_logits_go_back_with_the_exact_inverse_scale(offset: tuple[float, float]) -> None:
    # A linear ramp survives model grid and back (linear weights are exact on linear functions).
    identity = PreprocessConfig(size=32, spacing=1.5, window=(-1e6, 1e6), intensity=(0.0, 1.0))
    yy, xx = np.mgrid[0:60, 0:90].astype(np.float32)
    ramp = (0.3 * yy + 0.7 * xx)[None]
    image, grid = to_model_grid(ramp, (0.5, 0.5), identity, offset)
    assert grid.shape == (20, 30)  # 3 native pixels per model pixel
    back = logits_to_native(torch.from_numpy(image)[:, None], grid)[0, 0].numpy()
    assert back.shape == (60, 90)
    interior = (slice(6, -6), slice(6, -6))
    np.testing.assert_allclose(back[interior], ramp[0][interior], atol=1e-3)


def test_model_pixels_sit_on_the_scanner_lattice() -> None:
    """The same anatomy cut at another place gives the very same model pixels."""
    identity = PreprocessConfig(size=32, spacing=1.5, window=(-1e6, 1e6), intensity=(0.0, 1.0))
    scene = np.random.default_rng(4).normal(0, 1, (1, 90, 90)).astype(np.float32)
    full, _ = to_model_grid(scene, (0.5, 0.5), identity, (0.0, 0.0))
    # Drop the first 7 rows and 11 columns: the origin moves by 3.5 mm and 5.5 mm.
    cut, _ = to_model_grid(scene[:, 7:, 11:], (0.5, 0.5), identity, (3.5, 5.5))
    # Model pixel centres lie at multiples of 1.5 mm in both: 3.5 mm is not one, yet the
    # interior pixels agree exactly (4 model rows = 6 mm, 4 columns = 6 mm apart).
    np.testing.assert_allclose(
        cut[0, 2:-2, 2:-2], full[0, 4 : 4 + cut.shape[1] - 4, 5 : 5 + cut.shape[2] - 4], atol=1e-5
    )


def test_labels_keep_their_ids_on_the_model_grid() -> None:
    labels = np.zeros((2, 40, 40), dtype=np.uint8)
    labels[:, 10:30, 5:15] = 3
    labels[:, 10:30, 25:35] = 7
    grid = model_grid((40, 40), (0.75, 0.75), PHYSICAL)
    out = labels_to_model_grid(labels, grid)
    assert out.shape == (2, 20, 20) and out.dtype == np.uint8
    assert set(np.unique(out)) == {0, 3, 7}
    assert (out == 3).sum() == 2 * 10 * 5  # half the size along each axis


@pytest.mark.parametrize("length", [1, 31, 32, 33, 64, 100, 257])
def test_tiles_cover_every_pixel_with_overlap(length: int) -> None:
    size = 32
    starts = tile_starts(length, size)
    covered = np.zeros(length, dtype=bool)
    for s in starts:
        covered[max(s, 0) : s + size] = True
    assert covered.all()
    if length > size:
        assert starts[0] == 0 and starts[-1] == length - size
        assert all(b - a <= size * 0.75 + 1 for a, b in zip(starts, starts[1:], strict=False))
    else:
        assert len(starts) == 1


@pytest.mark.parametrize("shape", [(20, 20), (32, 32), (45, 70), (100, 33)])
def test_tiled_identity_gives_the_image_back(shape: tuple[int, int]) -> None:
    """A network that returns its input: blending overlapping tiles must reproduce the image."""
    image = np.random.default_rng(2).normal(0, 1, (3, *shape)).astype(np.float32)
    calls = []

    def identity(batch: np.ndarray) -> np.ndarray:
        assert batch.shape[1:] == (1, 32, 32)
        calls.append(batch.shape[0])
        return batch.copy()

    out = tiled_logits(identity, image, 32, fill=-5.0, batch_size=4)
    assert out.shape == (3, 1, *shape)
    np.testing.assert_allclose(out[:, 0].numpy(), image, atol=1e-5)
    assert max(calls) <= 4


def _body_slices(shape: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """Two slices of air (-4) with a body (+1, a hollow ring: lungs inside) in ``box``."""
    image = np.full((2, *shape), -4.0, dtype=np.float32)
    y0, y1, x0, x1 = box
    image[:, y0:y1, x0:x1] = 1.0
    image[:, y0 + 3 : y1 - 3, x0 + 3 : x1 - 3] = -3.0  # "lungs": below the body level
    return image


def test_tiles_cover_the_body_box_only() -> None:
    image = _body_slices((200, 300), (50, 90, 100, 170))  # a 40 x 70 body in a wide field
    every = plan_tiles(image, 32, body=None)
    boxed = plan_tiles(image, 32, body=0.0)
    assert len(every) == 2 * len(tile_starts(200, 32)) * len(tile_starts(300, 32))
    assert len(boxed) == 2 * len(tile_starts(40, 32)) * len(tile_starts(70, 32)) < len(every)
    covered = np.zeros((2, 200, 300), dtype=bool)
    for k, y, x in boxed:
        covered[k, max(y, 0) : y + 32, max(x, 0) : x + 32] = True
    assert covered[:, 50:90, 100:170].all()  # the body, its hollow inside included
    # A slice with no body pixel gets one centred tile; an axis that fits a tile is not boxed.
    air = np.full((1, 200, 300), -4.0, dtype=np.float32)
    assert plan_tiles(air, 32, body=0.0) == [(0, (200 - 32) // 2, (300 - 32) // 2)]
    narrow = _body_slices((30, 300), (5, 25, 100, 120))
    assert {y for _, y, _ in plan_tiles(narrow, 32, body=0.0)} == set(tile_starts(30, 32))


def test_air_outside_the_body_box_is_background_and_the_box_is_the_image() -> None:
    image = _body_slices((200, 300), (50, 90, 100, 170))
    calls = []

    def identity(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape[0])
        return batch.copy()

    out = tiled_logits(identity, image, 32, fill=-4.0, batch_size=4, body=0.0)[:, 0].numpy()
    np.testing.assert_allclose(out[:, 50:90, 100:170], image[:, 50:90, 100:170], atol=1e-5)
    assert (out[:, :20] == BACKGROUND_LOGIT).all() and (out[:, :, :60] == BACKGROUND_LOGIT).all()
    assert sum(calls) == len(plan_tiles(image, 32, body=0.0))


@pytest.mark.parametrize("tilings", [1, 3, 5])
def test_boxed_tiles_do_not_move_with_the_field_of_view(tilings: int) -> None:
    """A network whose output depends on where a pixel sits in its tile (as a real one does, a
    little): padding the field with air must not change a single logit on the shared pixels,
    because the tiles follow the body, not the field's edges; so do the moved grids of
    ``tilings`` 3 and 5, whose average differs from the first grid's answer."""
    image = _body_slices((120, 150), (30, 100, 20, 90))
    ramp = np.linspace(0.0, 1.0, 32, dtype=np.float32)

    def positional(batch: np.ndarray) -> np.ndarray:
        return batch + ramp[None, None, :, None] * ramp[None, None, None, :]

    padded = np.full((2, 120 + 70, 150 + 45), -4.0, dtype=np.float32)
    padded[:, 50:170, 15:165] = image
    own = tiled_logits(positional, image, 32, -4.0, 8, body=0.0, tilings=tilings)
    wide = tiled_logits(positional, padded, 32, -4.0, 8, body=0.0, tilings=tilings)
    np.testing.assert_array_equal(wide[:, :, 50:170, 15:165].numpy(), own.numpy())
    if tilings > 1:
        one = tiled_logits(positional, image, 32, -4.0, 8, body=0.0)
        assert not torch.allclose(own[:, :, 30:100, 20:90], one[:, :, 30:100, 20:90])
    # Tiling the whole field (the old way) does move them: the check above can fail.
    own_all = tiled_logits(positional, image, 32, -4.0, 8, tilings=tilings)
    wide_all = tiled_logits(positional, padded, 32, -4.0, 8, tilings=tilings)
    assert not torch.equal(wide_all[:, :, 50:170, 15:165], own_all)


@pytest.mark.parametrize("tilings", [3, 5])
def test_shifted_tilings_move_the_first_grid_by_quarter_tiles(tilings: int) -> None:
    image = _body_slices((200, 300), (50, 90, 100, 170))
    first = plan_tiles(image, 32, body=0.0)
    tiles = plan_tiles(image, 32, body=0.0, tilings=tilings)
    assert tiles[: len(first)] == first and len(tiles) == tilings * len(first)
    moves = {
        (y - y0, x - x0)
        for i, (k, y, x) in enumerate(tiles[len(first) :])
        for k0, y0, x0 in [first[i % len(first)]]
        if k == k0
    }
    expected = {3: {(8, 8), (-8, -8)}, 5: {(8, 0), (-8, 0), (0, 8), (0, -8)}}[tilings]
    assert moves == expected  # a quarter of the 32 px tile
    with pytest.raises(ValueError, match="tilings must be one of"):
        plan_tiles(image, 32, body=0.0, tilings=2)


@pytest.mark.parametrize("tilings", [1, 3, 5])
@pytest.mark.parametrize("shape", [(20, 20), (32, 32), (45, 70)])
def test_every_tiling_of_an_identity_gives_the_image_back(
    shape: tuple[int, int], tilings: int
) -> None:
    """The grids' logits are averaged with weights that sum to one, each moved tile put back
    where it was cut: an identity network gives the image back, whole-field or boxed."""
    image = np.random.default_rng(4).normal(0, 1, (2, *shape)).astype(np.float32)
    calls = []

    def identity(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape[0])
        return batch.copy()

    out = tiled_logits(identity, image, 32, fill=-5.0, batch_size=4, tilings=tilings)
    np.testing.assert_allclose(out[:, 0].numpy(), image, atol=1e-5)
    assert sum(calls) == tilings * len(plan_tiles(image, 32))
    body = _body_slices((60, 80), (10, 50, 15, 70))
    boxed = tiled_logits(identity, body, 32, -4.0, 4, body=0.0, tilings=tilings)[:, 0].numpy()
    np.testing.assert_allclose(boxed[:, 10:50, 15:70], body[:, 10:50, 15:70], atol=1e-5)


def test_body_level_is_minus_500_hu_in_model_intensity() -> None:
    assert body_level(PHYSICAL) == pytest.approx((BODY_HU - 50.0) / 200.0)
    narrow = dataclasses.replace(PHYSICAL, window=(-200.0, 300.0))
    assert body_level(narrow) == pytest.approx((-200.0 + 5.0 - 50.0) / 200.0)
    assert body_level(PreprocessConfig(size=32)) is None  # per-slice statistics: no fixed air


def test_foreground_intensity_uses_organ_voxels_only() -> None:
    image = np.full((2, 10, 10), -1000.0, dtype=np.float32)
    labels = np.zeros((2, 10, 10), dtype=np.uint8)
    image[:, :5] = 100.0
    image[:, :5, :5] = 300.0
    labels[:, :5] = 1
    mean, std = foreground_intensity([(image, labels)], (-1000.0, 1000.0))
    assert mean == pytest.approx(200.0) and std == pytest.approx(100.0)
    with pytest.raises(InputError, match="no labelled voxel"):
        foreground_intensity([(image, np.zeros_like(labels))], (-1000.0, 1000.0))


def test_spacing_must_be_positive() -> None:
    with pytest.raises(InputError, match="spacing"):
        dataclasses.replace(PHYSICAL, spacing=-1.0)
