"""Shapes on bent millimetre coordinates: the drawing board every phantom recipe paints on.

A phantom is drawn from simple shapes (ellipsoids, tubes, shells) placed in millimetres, on
coordinates that a smooth random field bends, so that no two cases share one anatomy.
Structures are painted one after another and a later one wins where two overlap.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from scipy import ndimage

from vetseg.data.phantoms.tissue import TISSUE_HU
from vetseg.labels import HUMAN_ORGANS, organ_ids

#: Label ids of the phantoms: :data:`vetseg.labels.HUMAN_ORGANS` (its first 7 are the core
#: organs, so the default phantoms' label maps read the same under ``CORE_ORGANS``).
ORGAN_ID = organ_ids(HUMAN_ORGANS)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], cell: float) -> np.ndarray:
    """A smooth random field of about unit standard deviation.

    White noise on a grid ``cell`` times coarser, smoothed a little and resized to ``shape``
    with cubic splines, one axis at a time (a few matrix products: much faster than
    ``ndimage.zoom`` on the full grid); ``cell`` is roughly the size of one bump in voxels.

    Args:
        rng: random generator.
        shape: output shape.
        cell: coarseness in voxels (the same on every axis).

    Returns:
        float32 array of ``shape``.
    """
    coarse = tuple(max(4, math.ceil(n / cell) + 3) for n in shape)
    field = ndimage.gaussian_filter(rng.standard_normal(coarse).astype(np.float32), 0.6)
    field /= max(float(field.std()), 1e-6)
    for axis, n in enumerate(shape):
        # (before, coarse, after) -> (before, n, after): a batched matrix product that keeps
        # the array contiguous, so BLAS does the work without transposed copies.
        before = int(np.prod(field.shape[:axis], dtype=np.int64))
        grid = field.reshape(before, coarse[axis], -1)
        field = np.matmul(_upsampler(n, coarse[axis]), grid).reshape(
            *field.shape[:axis], n, *field.shape[axis + 1 :]
        )
    return field


@lru_cache(maxsize=64)
def _upsampler(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) matrix that resizes a 1D signal with cubic splines (end points kept)."""
    eye = np.eye(n_in, dtype=np.float64)
    positions = np.linspace(0, n_in - 1, n_out)
    columns = [ndimage.map_coordinates(eye[:, j], [positions], order=3) for j in range(n_in)]
    return np.stack(columns, axis=1).astype(np.float32)


class Builder:
    """Bent millimetre coordinates of one case, and the HU and label arrays painted on them.

    Coordinates are relative to the body's axis: x to the patient's left, y posterior, z superior
    (z = ``z0`` at the lowest slice). A smooth random displacement (a few mm) bends them, which
    gives every shape drawn on them a case-specific, smoothly varying form.

    The coordinates are in the recipe's millimetres: a recipe drawn for a smaller or larger body
    passes ``spacing`` divided by the body's scale, so that every number in the recipe scales.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        shape: tuple[int, int, int],
        spacing: tuple[float, float, float],
        centre_yx: tuple[float, float],
        bend_mm: float,
        bend_cell_mm: float,
        draw_tissue: Callable[[np.random.Generator], dict[str, float]],
        z0: float = 0.0,
    ) -> None:
        """Set up the coordinates and empty (air) HU and label arrays.

        Args:
            rng: the case's random generator.
            shape: (z, y, x) voxels.
            spacing: (x, y, z) voxel size in the recipe's mm.
            centre_yx: voxel position (y, x) of the body's axis.
            bend_mm: amplitude of the random bend.
            bend_cell_mm: its wavelength.
            draw_tissue: draws this case's HU per tissue name (called once, after the bend).
            z0: z (mm) of the lowest slice.
        """
        self.rng = rng
        self.shape = shape
        self.spacing = spacing
        dx, dy, dz = spacing
        nz, ny, nx = shape
        self.centre_yx = centre_yx
        self.x1 = ((np.arange(nx) - centre_yx[1]) * dx).astype(np.float32)
        self.y1 = ((np.arange(ny) - centre_yx[0]) * dy).astype(np.float32)
        self.z1 = (np.arange(nz) * dz).astype(np.float32)
        if z0:
            self.z1 += np.float32(z0)
        # Each coordinate is displaced by a smooth field of the two others: cheap (2D fields) and
        # still a non-rigid bend of every organ and of the body outline.
        cell_xy = bend_cell_mm / dx
        cell_z = bend_cell_mm / dz
        bend_x = bend_mm * smooth_noise(rng, (nz, ny), min(cell_z, cell_xy))
        bend_y = bend_mm * smooth_noise(rng, (nz, nx), min(cell_z, cell_xy))
        bend_z = bend_mm * smooth_noise(rng, (ny, nx), cell_xy)
        self.x = self.x1[None, None, :] + bend_x[:, :, None]
        self.y = self.y1[None, :, None] + bend_y[:, None, :]
        self.z = self.z1[:, None, None] + bend_z[None, :, :]
        self.margin = 3.0 * bend_mm + 2.0 * max(spacing)
        self.hu = np.full(shape, TISSUE_HU["air"][0], dtype=np.float32)
        self.labels = np.zeros(shape, dtype=np.uint8)
        self.tissue = draw_tissue(rng)

    # ---------------------------------------------------------------- geometry
    def box(
        self, centre: tuple[float, float, float], radius: tuple[float, float, float]
    ) -> tuple[slice, slice, slice]:
        """Index slices (z, y, x) that hold a box of ``radius`` mm around ``centre`` (x, y, z)."""
        out = []
        for axis, coords in ((2, self.z1), (1, self.y1), (0, self.x1)):
            lo = centre[axis] - radius[axis] - self.margin
            hi = centre[axis] + radius[axis] + self.margin
            i0 = int(np.searchsorted(coords, lo))
            i1 = int(np.searchsorted(coords, hi))
            out.append(slice(max(0, i0 - 1), min(len(coords), i1 + 1)))
        return out[0], out[1], out[2]

    def local(
        self,
        sl: tuple[slice, slice, slice],
        centre: tuple[float, float, float],
        rotation_deg: float = 0.0,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Bent coordinates in ``sl`` relative to ``centre``, turned about z by ``rotation_deg``."""
        x = self.x[sl] - centre[0]
        y = self.y[sl] - centre[1]
        z = self.z[sl] - centre[2]
        if rotation_deg:
            c, s = math.cos(math.radians(rotation_deg)), math.sin(math.radians(rotation_deg))
            x, y = c * x + s * y, -s * x + c * y
        return x, y, z

    def ellipsoid(
        self,
        centre: tuple[float, float, float],
        semi: tuple[float, float, float],
        rotation_deg: float = 0.0,
        lumpiness: float = 0.08,
        scale: float = 1.0,
    ) -> tuple[tuple[slice, slice, slice], np.ndarray]:
        """An ellipsoid with a lumpy surface.

        Args:
            centre: (x, y, z) mm.
            semi: semi-axes (x, y, z) mm, before rotation about z.
            rotation_deg: rotation about the z axis (positive turns +x towards +y).
            lumpiness: relative amplitude of the random surface bumps.
            scale: shrink or grow the ellipsoid (e.g. 0.7 for an inner layer).

        Returns:
            The box slices and the normalised radius ``r`` in the box (``r < 1`` inside; the
            bumps are already folded in, so ``r < 0.6`` is an inner core of similar shape).
        """
        radius = max(semi) * scale * (1.0 + lumpiness)
        sl = self.box(centre, (radius, radius, semi[2] * scale * (1.0 + lumpiness)))
        x, y, z = self.local(sl, centre, rotation_deg)
        u, v, w = x / (semi[0] * scale), y / (semi[1] * scale), z / (semi[2] * scale)
        r = np.sqrt(u * u + v * v + w * w)
        if lumpiness:
            # Two random low-frequency waves on the surface: the same organ, a different shape.
            bumps = np.zeros_like(r)
            for _ in range(2):
                k = self.rng.normal(0.0, 2.0, size=3)
                bumps += np.sin(k[0] * u + k[1] * v + k[2] * w + self.rng.uniform(0, 2 * np.pi))
            r = r * (1.0 - 0.5 * lumpiness * bumps)
        return sl, r

    def tube(
        self,
        centre_xy: tuple[float, float],
        radius_xy: tuple[float, float],
        z_range: tuple[float, float],
    ) -> tuple[tuple[slice, slice, slice], np.ndarray]:
        """A vertical elliptic cylinder: box slices and the mask inside it."""
        z_mid, z_half = (z_range[0] + z_range[1]) / 2, (z_range[1] - z_range[0]) / 2
        sl = self.box((centre_xy[0], centre_xy[1], z_mid), (*radius_xy, z_half))
        x, y, z = self.local(sl, (centre_xy[0], centre_xy[1], z_mid))
        inside = ((x / radius_xy[0]) ** 2 + (y / radius_xy[1]) ** 2 < 1.0) & (np.abs(z) < z_half)
        return sl, inside

    # ---------------------------------------------------------------- painting
    def paint(
        self,
        sl: tuple[slice, slice, slice] | tuple[()],
        mask: np.ndarray,
        tissue: str | np.ndarray,
        label: int | None,
    ) -> None:
        """Set HU (a tissue name or an array of HU over ``mask``) and optionally the label."""
        hu = self.hu[sl]
        hu[mask] = self.tissue[tissue] if isinstance(tissue, str) else tissue
        if label is not None:
            self.labels[sl][mask] = label

    def value(self, tissue: str) -> float:
        """This case's HU for ``tissue``."""
        return self.tissue[tissue]
