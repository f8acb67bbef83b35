"""to_canonical / from_canonical: permutations and flips only, every voxel keeps its place."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tests.io.helpers import make_meta, rotation
from vetseg.io.image import ImageMeta, from_canonical, orientation_matrix, to_canonical


def signed_permutations() -> list[np.ndarray]:
    """All 48 axis-aligned directions (6 permutations x 8 sign patterns)."""
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            matrix = np.zeros((3, 3))
            for i, (p, s) in enumerate(zip(perm, signs, strict=True)):
                matrix[p, i] = s
            out.append(matrix)
    return out


def assert_voxels_keep_position(
    array: np.ndarray, meta: ImageMeta, moved: np.ndarray, moved_meta: ImageMeta
) -> None:
    """Each voxel of ``array`` is found with the same value at its physical place in ``moved``."""
    index = np.indices(array.shape).reshape(3, -1).T
    points = meta.index_to_physical(index)
    moved_index = np.rint(moved_meta.physical_to_index(points)).astype(int)
    np.testing.assert_allclose(moved_meta.physical_to_index(points), moved_index, atol=1e-6)
    np.testing.assert_array_equal(moved[tuple(moved_index.T)], array[tuple(index.T)])


@pytest.mark.parametrize("direction", signed_permutations(), ids=lambda m: str(m.ravel()))
def test_canonical_round_trip_for_every_axis_order(direction: np.ndarray) -> None:
    rng = np.random.default_rng(7)
    array = rng.integers(0, 1000, size=(3, 4, 5)).astype(np.int16)
    meta = ImageMeta(
        spacing=tuple(rng.uniform(0.3, 3.0, 3)),
        origin=tuple(rng.uniform(-100, 100, 3)),
        direction=tuple(direction.ravel()),
    )
    canonical, canonical_meta = to_canonical(array, meta)
    np.testing.assert_array_equal(canonical_meta.direction_matrix, np.eye(3))
    assert canonical_meta.orientation == "LPS"
    assert canonical.flags.c_contiguous
    assert_voxels_keep_position(array, meta, canonical, canonical_meta)
    back = from_canonical(canonical, meta, array.shape)
    np.testing.assert_array_equal(back, array)


def test_ras_target_and_leading_channel_axes() -> None:
    """Any target code works, and channels in front ([C, z, y, x]) are carried along."""
    meta = make_meta((0.0, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0))
    volume = np.arange(3 * 4 * 5).reshape(3, 4, 5)
    channels = np.stack([volume, -volume])
    canonical, canonical_meta = to_canonical(channels, meta, "RAS")
    np.testing.assert_array_equal(canonical_meta.direction_matrix, orientation_matrix("RAS"))
    assert canonical_meta.orientation == "RAS"
    np.testing.assert_array_equal(canonical[1], -canonical[0])
    assert_voxels_keep_position(volume, meta, canonical[0], canonical_meta)
    np.testing.assert_array_equal(from_canonical(canonical, meta, volume.shape, "RAS"), channels)


@pytest.mark.parametrize("angles", [(12.0, 0.0, 0.0), (0.0, -20.0, 15.0), (25.0, 25.0, -25.0)])
def test_oblique_goes_to_the_nearest_axes(angles: tuple[float, float, float]) -> None:
    """A tilted scan stored as L/I/P goes to LPS axes, keeping its true (tilted) direction."""
    # Columns are the index axes: x->L, y->I, z->P (det +1), like the Digimouse atlas.
    stored = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])
    direction = rotation(angles) @ stored
    meta = make_meta(tuple(direction.ravel()))
    array = np.random.default_rng(3).random((6, 7, 8))
    canonical, canonical_meta = to_canonical(array, meta)
    # Axis 0 (S) came from the stored y axis (I, flipped), axis 1 (P) from z, axis 2 (L) from x.
    assert canonical.shape == (7, 6, 8)
    np.testing.assert_array_equal(canonical, np.ascontiguousarray(array.transpose(1, 0, 2)[::-1]))
    tilt = np.abs(canonical_meta.direction_matrix - np.eye(3)).max()
    assert 0.05 < tilt < 0.6  # near identity, but honestly still oblique
    assert canonical_meta.orientation == "LPS"
    for canonical_index, index in (((6, 0, 0), (0, 0, 0)), ((0, 0, 0), (0, 6, 0))):
        np.testing.assert_allclose(
            canonical_meta.index_to_physical(canonical_index), meta.index_to_physical(index)
        )
    np.testing.assert_array_equal(from_canonical(canonical, meta, array.shape), array)


def test_bad_codes_and_shapes() -> None:
    with pytest.raises(ValueError, match="orientation"):
        orientation_matrix("LPX")
    with pytest.raises(ValueError, match="orientation"):
        orientation_matrix("LLS")
    meta = make_meta((1.0, 0, 0, 0, 0, 1.0, 0, 1.0, 0))
    with pytest.raises(ValueError, match="canonical shape"):
        from_canonical(np.zeros((3, 4, 5)), meta, (3, 4, 5))
