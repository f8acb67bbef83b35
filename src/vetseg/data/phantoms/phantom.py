"""One phantom case: :func:`make_phantom` draws the anatomy, the tissue values and the scan."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from vetseg.data.phantoms.human import paint_human
from vetseg.data.phantoms.rabbit import paint_rabbit
from vetseg.data.phantoms.render import noise_gain
from vetseg.data.phantoms.shapes import Builder
from vetseg.data.phantoms.tissue import draw_tissue_hu
from vetseg.errors import InputError

#: Species a phantom can be drawn for.
SPECIES: tuple[str, ...] = ("human", "rabbit")


@dataclass(frozen=True)
class Phantom:
    """One synthetic CT case.

    Attributes:
        ct: int16 HU image, ``[z, y, x]`` in canonical orientation.
        labels: uint8 label map on the same grid, ids of :data:`CORE_ORGANS` (0 background).
        spacing: voxel size (x, y, z) in mm.
        origin: physical position (x, y, z) in mm of voxel (0, 0, 0), LPS, identity direction.
        species: ``"human"`` or ``"rabbit"``.
        contrast: whether tissue values are those of contrast-enhanced CT.
    """

    ct: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    species: str
    contrast: bool


@dataclass(frozen=True)
class _Grid:
    """Array size and voxel size of a species' phantom."""

    shape: tuple[int, int, int]  # (z, y, x) voxels
    spacing: tuple[float, float, float]  # (x, y, z) mm, before per-case jitter


_GRIDS: dict[str, _Grid] = {
    "human": _Grid(shape=(112, 160, 160), spacing=(2.4, 2.4, 3.0)),
    "rabbit": _Grid(shape=(128, 160, 160), spacing=(0.6, 0.6, 1.8)),
}


_RECIPES = {"human": paint_human, "rabbit": paint_rabbit}
_BEND = {"human": (5.0, 140.0), "rabbit": (1.5, 45.0)}  # amplitude, wavelength in mm


def check_species(species: str) -> None:
    """Raise InputError for a species vetseg draws no phantom of."""
    if species not in SPECIES:
        raise InputError(
            f"unknown phantom species {species!r}: choose one of {', '.join(SPECIES)}."
        )


def make_phantom(species: str, rng: np.random.Generator, contrast: bool = True) -> Phantom:
    """Draw one synthetic CT case of ``species``.

    Args:
        species: ``"human"`` or ``"rabbit"``.
        rng: random generator; the same generator state gives the same case.
        contrast: contrast-enhanced (portal venous) tissue values, else non-contrast ones.

    Returns:
        The phantom: int16 CT and uint8 labels, ``[z, y, x]`` canonical (see the module notes).

    Raises:
        InputError: for an unknown species.
    """
    check_species(species)
    grid = _GRIDS[species]
    in_plane = grid.spacing[0] * float(rng.uniform(0.96, 1.04))
    spacing = (in_plane, in_plane, grid.spacing[2])
    nz, ny, nx = grid.shape
    # The body sits above the table (human) and a little off centre, as on a real scanner.
    centre_y = ny * (0.45 if species == "human" else 0.55) + rng.normal(0, 2)
    centre_yx = (centre_y, (nx - 1) / 2 + rng.normal(0, 2))
    bend, cell = _BEND[species]
    bld = Builder(
        rng, grid.shape, spacing, centre_yx, bend, cell, lambda r: draw_tissue_hu(r, contrast)
    )
    _RECIPES[species](bld)
    bld.hu[~np.isfinite(bld.hu)] = bld.value("air")

    # Noise first, then blur: the blur gives the noise CT's grainy texture and the edges partial
    # volume; the noise is scaled so that its standard deviation after the blur is ``sigma``.
    sigma = float(rng.uniform(10.0, 20.0))
    blur = (0.45, 0.7, 0.7)
    bld.hu += rng.standard_normal(bld.shape, dtype=np.float32) * (sigma / noise_gain(blur))
    ct = ndimage.gaussian_filter(bld.hu, blur)
    ct = np.clip(np.rint(ct), -1024, 3071).astype(np.int16)
    origin = (
        float(-centre_yx[1] * in_plane + rng.normal(0, 10)),
        float(-centre_yx[0] * in_plane + rng.normal(0, 10)),
        float(-rng.uniform(200, 600) if species == "human" else -rng.uniform(50, 150)),
    )
    return Phantom(ct, bld.labels, spacing, origin, species, contrast)
