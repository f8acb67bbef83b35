"""One phantom case: :func:`make_phantom` draws the anatomy, the tissue values and the scan."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from vetseg.data.phantoms.human import paint_human
from vetseg.data.phantoms.human_wide import paint_human_wide
from vetseg.data.phantoms.rabbit import paint_rabbit
from vetseg.data.phantoms.render import noise_gain, render_scan
from vetseg.data.phantoms.shapes import Builder
from vetseg.data.phantoms.tissue import draw_phase_tissue_hu, draw_tissue_hu
from vetseg.data.phantoms.variety import MAX_SLICES, WideSetup, draw_wide_setup
from vetseg.errors import InputError
from vetseg.labels import CORE_ORGANS, HUMAN_ORGANS

#: Species a phantom can be drawn for.
SPECIES: tuple[str, ...] = ("human", "rabbit")
#: How much a phantom varies: ``"default"`` (the demo's phantoms, unchanged since they were
#: first drawn) or ``"wide"`` (human only: contrast phases, scanners, habitus, arms, table,
#: metal, fields of view and 12 organs; see :mod:`.variety`) or ``"wide-kidneys"`` (wide, and
#: kidneys as real contrast scans show them: nephrogram, renal sinus, perirenal fat, position;
#: see :class:`.variety.WideSetup`) or ``"wide-ribs"`` (wide-kidneys, and ribs as real CT
#: shows them: thinner, tapering, a thin cortex around marrow, costal cartilage labelled bone)
#: or ``"wide-stomach"`` (wide-ribs, and half the stomachs collapsed around food, with a thick
#: rugal wall). ``"wide"`` still draws what the first human model was trained on.
VARIETIES: tuple[str, ...] = ("default", "wide", "wide-kidneys", "wide-ribs", "wide-stomach")


def is_wide(variety: str) -> bool:
    """Whether ``variety`` draws wide-variety (12-organ) human cases."""
    return variety in VARIETIES[1:]


def wide_level(variety: str) -> int:
    """How far along the wide varieties ``variety`` is: each adds to the one before it
    (0 wide, 1 wide-kidneys, 2 wide-ribs, 3 wide-stomach); -1 for ``"default"``."""
    return VARIETIES.index(variety) - 1


@dataclass(frozen=True)
class Phantom:
    """One synthetic CT case.

    Attributes:
        ct: int16 HU image, ``[z, y, x]`` in canonical orientation.
        labels: uint8 label map on the same grid, ids ``i + 1`` of ``organs[i]`` (0 background).
        spacing: voxel size (x, y, z) in mm.
        origin: physical position (x, y, z) in mm of voxel (0, 0, 0), LPS, identity direction.
        species: ``"human"`` or ``"rabbit"``.
        contrast: whether tissue values are those of contrast-enhanced CT.
        organs: the label vocabulary (:data:`CORE_ORGANS`; ``HUMAN_ORGANS`` for wide variety).
        phase: contrast phase (``"portal_venous"``, ``"non_contrast"``, ``"arterial"``,
            ``"delayed"``).
        setup: what a wide-variety case drew (:meth:`WideSetup.to_json`); empty by default.
    """

    ct: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    species: str
    contrast: bool
    organs: tuple[str, ...] = CORE_ORGANS
    phase: str = "portal_venous"
    setup: Mapping[str, object] = field(default_factory=dict)


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


def check_variety(species: str, variety: str) -> None:
    """Raise InputError for an unknown variety, or one not drawn for ``species``."""
    if variety not in VARIETIES:
        raise InputError(
            f"unknown phantom variety {variety!r}: choose one of {', '.join(VARIETIES)}."
        )
    if is_wide(variety) and species != "human":
        raise InputError(f"{variety} variety is drawn for human phantoms only, not {species!r}.")


def make_phantom(
    species: str, rng: np.random.Generator, contrast: bool = True, variety: str = "default"
) -> Phantom:
    """Draw one synthetic CT case of ``species``.

    Args:
        species: ``"human"`` or ``"rabbit"``.
        rng: random generator; the same generator state gives the same case.
        contrast: contrast-enhanced (portal venous) tissue values, else non-contrast ones. With
            wide variety True draws the phase among all four (non-contrast included) and False
            keeps every case non-contrast.
        variety: ``"default"``, ``"wide"``, ``"wide-kidneys"``, ``"wide-ribs"`` or
            ``"wide-stomach"`` (human only; see
            :func:`make_wide_phantom` and :data:`VARIETIES`).

    Returns:
        The phantom: int16 CT and uint8 labels, ``[z, y, x]`` canonical (see the module notes).

    Raises:
        InputError: for an unknown species or variety.
    """
    check_species(species)
    check_variety(species, variety)
    if is_wide(variety):
        setup = draw_wide_setup(
            rng,
            kidney_variety=wide_level(variety) >= 1,
            rib_variety=wide_level(variety) >= 2,
            stomach_variety=wide_level(variety) >= 3,
        )
        if not contrast:
            setup = dataclasses.replace(setup, phase="non_contrast")
        return make_wide_phantom(setup, rng)
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
    phase = "portal_venous" if contrast else "non_contrast"
    return Phantom(ct, bld.labels, spacing, origin, species, contrast, CORE_ORGANS, phase)


def make_wide_phantom(setup: WideSetup, rng: np.random.Generator) -> Phantom:
    """Draw one wide-variety human case for ``setup`` (usually from :func:`draw_wide_setup`).

    The anatomy is drawn on a z grid of the slice interval (half of it for slices of 3 mm and
    more, so the slice profile has something to average), then :func:`render_scan` applies the
    scanner. Labels are :data:`~vetseg.labels.HUMAN_ORGANS` ids.

    Args:
        setup: patient, exam and scanner; tests may shrink the grid with a larger
            ``pixel_mm``, ``interval_mm`` or a shorter ``z_range``.
        rng: random generator for the anatomy, the tissue values and the noise.

    Returns:
        The phantom; ``spacing`` is (pixel, pixel, interval) in real mm.
    """
    size = setup.size
    n = max(16, int(round(setup.fov_mm / setup.pixel_mm)))
    length_mm = (setup.z_range[1] - setup.z_range[0]) * size
    n_slices = max(4, int(length_mm // setup.interval_mm) + 1)
    # Thick slices average what a finer drawing holds (partial volume along z), within budget.
    step = 2 if setup.slice_mm >= 3.0 and 2 * n_slices <= MAX_SLICES else 1
    shape = (n_slices * step - (step - 1), n, n)
    pixel = setup.pixel_mm
    centre_yx = (
        (n - 1) / 2 + setup.off_centre_mm[0] / pixel,
        (n - 1) / 2 + setup.off_centre_mm[1] / pixel,
    )
    # The recipe draws in adult mm: the builder's spacing is the real one divided by the size.
    recipe_spacing = (pixel / size, pixel / size, setup.interval_mm / step / size)
    bld = Builder(
        rng,
        shape,
        recipe_spacing,
        centre_yx,
        5.0,
        140.0,
        lambda r: draw_phase_tissue_hu(r, setup.phase, setup.bolus),
        z0=setup.z_range[0],
    )
    paint_human_wide(bld, setup)
    ct, labels = render_scan(bld.hu, bld.labels, step, setup, rng)
    spacing = (pixel, pixel, setup.interval_mm)
    origin = (
        float(-(n - 1) / 2 * pixel),
        float(-(n - 1) / 2 * pixel),
        float(-rng.uniform(100, 1200)),
    )
    contrast = setup.phase != "non_contrast"
    return Phantom(
        ct, labels, spacing, origin, "human", contrast, HUMAN_ORGANS, setup.phase, setup.to_json()
    )
