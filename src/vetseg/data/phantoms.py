"""Synthetic CT phantoms of a human and a rabbit torso with organ labels (demo and test data).

A phantom is drawn from simple shapes (ellipsoids, tubes, shells) placed in millimetres, on
coordinates that a smooth random field bends, so that no two cases share one anatomy. Tissue
values follow contrast-enhanced abdominal CT in the portal venous phase (liver ~100 HU, spleen
~110, renal cortex ~170 with a darker medulla, muscle ~55, fat ~-100, lung ~-850 with vessels,
bone cortex ~900 around ~230 marrow, air -1000) or non-contrast CT (``contrast=False``: liver
~55, spleen ~45, kidney ~30). The image is blurred a little (partial volume) and carries
correlated Gaussian noise (10-20 HU).

Arrays are ``[z, y, x]`` in vetseg's canonical orientation: axis 0 runs inferior -> superior
(caudal -> cranial for the rabbit), axis 1 anterior -> posterior (ventral -> dorsal), axis 2 the
patient's right -> left. With an identity direction that is ITK's LPS, so an axial slice shown
as an image is in radiological convention (the patient's right on the image's left) and
``kidney_left`` lies at high x indices.

Label ids follow :data:`vetseg.labels.CORE_ORGANS` (1 liver, 2 spleen, 3 kidney_left,
4 kidney_right, 5 lungs, 6 heart, 7 bone). Structures are painted one after another and a later
one wins where two overlap; the order is: body wall, unlabelled viscera (bowel, stomach, caecum,
vessels), liver, spleen, kidneys, lungs, heart, bone last. Unlabelled structures painted after
an organ clear its label (the stomach indents the liver, pericardial fat separates heart and lungs).

Human and rabbit differ as real ones do: the rabbit's body is long and narrow with a small
thorax (small lungs and heart), a large caecum full of gas and digesta, its right kidney cranial
to the left, and finer voxels (0.6 mm in-plane against 2.4 mm). The human phantom's voxels are
those of a 512 x 512 scan at 0.75 mm resized to 160 x 160, so its organs have their real size
in millilitres. These phantoms make the demo and the tests self-contained; they prove nothing
about real animals.
"""

from __future__ import annotations

import math
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage

from vetseg.errors import InputError
from vetseg.fileutil import atomic_write_json
from vetseg.io.image import ImageMeta, write_image
from vetseg.labels import CORE_ORGANS, organ_ids

#: Species a phantom can be drawn for.
SPECIES: tuple[str, ...] = ("human", "rabbit")

_ID = organ_ids(CORE_ORGANS)

#: Tissue values in HU: (contrast-enhanced portal venous phase, non-contrast), and the standard
#: deviation of their case-to-case variation.
TISSUE_HU: dict[str, tuple[float, float, float]] = {
    "air": (-1000.0, -1000.0, 0.0),
    "gas": (-950.0, -950.0, 20.0),
    "fat": (-100.0, -100.0, 8.0),
    "skin": (40.0, 40.0, 5.0),
    "muscle": (55.0, 50.0, 5.0),
    "bowel": (35.0, 25.0, 6.0),
    "bowel_wall": (85.0, 35.0, 8.0),
    "digesta": (45.0, 40.0, 8.0),
    "fluid": (15.0, 12.0, 4.0),
    "artery": (185.0, 42.0, 15.0),
    "vein": (150.0, 40.0, 12.0),
    "myocardium": (110.0, 45.0, 8.0),
    "liver": (100.0, 55.0, 8.0),
    "liver_vessel": (165.0, 38.0, 12.0),
    "spleen": (112.0, 46.0, 8.0),
    "kidney_cortex": (175.0, 33.0, 12.0),
    "kidney_medulla": (95.0, 28.0, 10.0),
    "renal_sinus": (-50.0, -50.0, 10.0),
    "lung": (-850.0, -850.0, 15.0),
    "lung_vessel": (120.0, 40.0, 10.0),
    "bone_cortex": (900.0, 900.0, 80.0),
    "bone_marrow": (230.0, 230.0, 30.0),
    "disc": (85.0, 85.0, 8.0),
    "csf": (15.0, 15.0, 3.0),
    "cartilage": (120.0, 120.0, 10.0),
    "table": (400.0, 400.0, 0.0),
    "foam": (-700.0, -700.0, 0.0),
}

#: Where the median HU inside each organ's label falls, (low, high), with and without contrast.
#: The tests check the phantoms against these ranges; they also document what to expect.
ORGAN_HU_RANGES: dict[bool, dict[str, tuple[float, float]]] = {
    True: {
        "liver": (80.0, 125.0),
        "spleen": (80.0, 135.0),
        "kidney_left": (110.0, 220.0),
        "kidney_right": (110.0, 220.0),
        "lungs": (-900.0, -700.0),
        "heart": (100.0, 200.0),
        "bone": (150.0, 1200.0),
    },
    False: {
        "liver": (40.0, 70.0),
        "spleen": (25.0, 60.0),
        "kidney_left": (15.0, 45.0),
        "kidney_right": (15.0, 45.0),
        "lungs": (-900.0, -700.0),
        "heart": (25.0, 60.0),
        "bone": (150.0, 1200.0),
    },
}


def draw_tissue_hu(
    rng: np.random.Generator,
    contrast: bool,
    table: Mapping[str, tuple[float, float, float]] = TISSUE_HU,
) -> dict[str, float]:
    """One case's HU for every tissue of ``table`` (see :data:`TISSUE_HU`).

    Without contrast the spread shrinks in proportion to the value: a kidney varies by ~12 HU
    with contrast and by ~3 HU without.
    """
    values = {}
    for name, (enhanced, plain, spread) in table.items():
        if not contrast and enhanced != plain:
            spread = max(2.0, spread * abs(plain) / max(abs(enhanced), 1.0))
        values[name] = float((enhanced if contrast else plain) + spread * rng.standard_normal())
    return values


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


class _Builder:
    """Bent millimetre coordinates of one case, and the HU and label arrays painted on them.

    Coordinates are relative to the body's axis: x to the patient's left, y posterior, z superior
    (z = 0 at the lowest slice). A smooth random displacement (a few mm) bends them, which gives
    every shape drawn on them a case-specific, smoothly varying form.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        shape: tuple[int, int, int],
        spacing: tuple[float, float, float],
        centre_yx: tuple[float, float],
        bend_mm: float,
        bend_cell_mm: float,
        contrast: bool,
    ) -> None:
        self.rng = rng
        self.shape = shape
        self.spacing = spacing
        dx, dy, dz = spacing
        nz, ny, nx = shape
        self.centre_yx = centre_yx
        self.x1 = ((np.arange(nx) - centre_yx[1]) * dx).astype(np.float32)
        self.y1 = ((np.arange(ny) - centre_yx[0]) * dy).astype(np.float32)
        self.z1 = (np.arange(nz) * dz).astype(np.float32)
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
        self.tissue = draw_tissue_hu(rng, contrast)

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


# --------------------------------------------------------------------------- shared parts
@dataclass
class _Body:
    """Body outline and wall of one case, all arrays over the whole volume ([z] or [z, y, x])."""

    inside: np.ndarray  # bool [z, y, x]
    cavity: np.ndarray  # bool [z, y, x]: inside the muscle wall, spine and back muscles excluded
    cavity_a: np.ndarray  # float [z]: half width of the cavity (mm)
    cavity_b_ant: np.ndarray  # float [z]
    cavity_b_post: np.ndarray  # float [z]


def _interp(
    z: np.ndarray, knots: list[tuple[float, float]], jitter: float, rng: np.random.Generator
) -> np.ndarray:
    """Piecewise-linear profile along z through (z, value) knots, each value jittered."""
    zs = np.array([k[0] for k in knots])
    vs = np.array([k[1] for k in knots]) * (1.0 + jitter * rng.standard_normal(len(knots)))
    return np.interp(z, zs, vs).astype(np.float32)


def _superellipse(
    x: np.ndarray, y: np.ndarray, a: np.ndarray, b_ant: np.ndarray, b_post: np.ndarray, p: float
) -> np.ndarray:
    """Normalised radius of a superellipse with a flatter or rounder back (``< 1`` inside)."""
    b = np.where(y < 0, b_ant, b_post)
    return (np.abs(x / a) ** p + np.abs(y / b) ** p) ** (1.0 / p)


def _paint_body(
    bld: _Builder,
    a: np.ndarray,
    b_ant: np.ndarray,
    b_post: np.ndarray,
    fat_mm: float,
    muscle_mm: float,
    back_muscle: tuple[float, float],
    power: float,
) -> _Body:
    """Skin, subcutaneous fat, muscle wall and back muscles; returns the cavity inside them.

    ``a``, ``b_ant``, ``b_post`` are per-slice half width and anterior / posterior half depth;
    ``back_muscle`` is (half width, anterior edge y) of the back muscles beside the spine.
    """
    a3, ba3, bp3 = a[:, None, None], b_ant[:, None, None], b_post[:, None, None]
    r_skin = _superellipse(bld.x, bld.y, a3, ba3, bp3, power)
    inside = r_skin < 1.0
    bld.paint((), inside, "skin", None)
    # Fat is thicker at the back and sides, as in a supine patient.
    fat = fat_mm * (1.0 + 0.35 * np.clip(bld.y / bp3, 0, 1))
    r_fat = _superellipse(bld.x, bld.y, a3 - fat, ba3 - fat, bp3 - fat, power)
    bld.paint((), r_fat < 1.0, "fat", None)
    inner = fat + muscle_mm
    ca, cba, cbp = a3 - inner, ba3 - inner, bp3 - inner
    r_muscle = _superellipse(bld.x, bld.y, ca, cba, cbp, power)
    bld.paint((), (r_muscle >= 1.0) & (r_fat < 1.0), "muscle", None)
    back = (np.abs(bld.x) < back_muscle[0]) & (bld.y > back_muscle[1]) & (r_fat < 1.0)
    bld.paint((), back, "muscle", None)
    cavity = (r_muscle < 1.0) & ~back
    return _Body(inside, cavity, ca[:, 0, 0], cba[:, 0, 0], cbp[:, 0, 0])


def _paint_viscera(
    bld: _Builder, region: np.ndarray, loop_mm: float, gas_share: float, content: str
) -> None:
    """Bowel loops in mesenteric fat inside ``region``: enhancing walls, content, gas bubbles.

    Loops are the voxels near the zero level of two smooth random fields: in 3D thin curved
    slabs, in a slice winding bands about ``loop_mm`` wide, which is what bowel looks like.
    """
    z_any = np.flatnonzero(region.any(axis=(1, 2)))
    if z_any.size == 0:
        return
    sl = (slice(z_any[0], z_any[-1] + 1), slice(None), slice(None))
    sub = region[sl]
    cell = 2.2 * loop_mm / bld.spacing[0]
    g1 = smooth_noise(bld.rng, sub.shape, cell)
    g2 = smooth_noise(bld.rng, sub.shape, cell * 1.3)
    near = np.minimum(np.abs(g1), np.abs(g2))
    bld.paint(sl, sub, "fat", 0)
    bld.paint(sl, sub & (near < 0.3), "bowel_wall", 0)
    lumen = sub & (near < 0.2)
    texture = smooth_noise(bld.rng, sub.shape, cell * 0.4)
    bld.paint(sl, lumen, bld.value(content) + 12.0 * texture[lumen], 0)
    gas = smooth_noise(bld.rng, sub.shape, cell * 0.5)
    cut = float(np.quantile(gas[lumen], 1.0 - gas_share)) if lumen.any() else np.inf
    bld.paint(sl, lumen & (gas > cut), "gas", 0)


def _paint_gut_sac(
    bld: _Builder,
    centre: tuple[float, float, float],
    semi: tuple[float, float, float],
    rotation_deg: float,
    content: str,
    gas_depth: float,
    wall_mm: float,
    folds: float,
    bubble_cut: float = 1.6,
    bubble_mm: float = 4.0,
) -> None:
    """A stomach or caecum: muscular wall, mottled content, a gas cap on the anterior side.

    Args:
        gas_depth: fraction of the depth (from the anterior side, non-dependent when supine)
            that holds gas.
        folds: amplitude of spiral folds of the wall through the content (0: none).
    """
    sl, r = bld.ellipsoid(centre, semi, rotation_deg, lumpiness=0.1)
    bld.paint(sl, r < 1.0, "bowel_wall", 0)
    inner = r < 1.0 - wall_mm / min(semi)
    x, y, z = bld.local(sl, centre, rotation_deg)
    texture = smooth_noise(bld.rng, r.shape, 2.5 / bld.spacing[0] + 1.0)
    content_hu = bld.value(content) + 35.0 * texture[inner]
    bld.paint(sl, inner, content_hu, 0)
    bubbles = smooth_noise(bld.rng, r.shape, bubble_mm / bld.spacing[0] + 1.0)
    gas = inner & ((y < -semi[1] * (1.0 - 2.0 * gas_depth)) | (bubbles > bubble_cut))
    bld.paint(sl, gas, "gas", 0)
    if folds:
        # Spiral folds: thin walls along a helix through the sac (the rabbit caecum's spiral).
        angle = np.arctan2(y, x)
        spiral = np.sin(angle + z * (2 * np.pi / (semi[2] * 0.6)))
        bld.paint(sl, inner & (np.abs(spiral) < folds) & ~gas, "bowel_wall", 0)


def _paint_kidney(
    bld: _Builder,
    centre: tuple[float, float, float],
    semi: tuple[float, float, float],
    medial_sign: float,
    label: int,
    tilt_deg: float,
) -> None:
    """Kidney: perirenal fat, cortex, medulla, and a fatty sinus at the medial hilum."""
    rotation = medial_sign * tilt_deg
    sl, r = bld.ellipsoid(centre, (semi[0] * 1.3, semi[1] * 1.3, semi[2] * 1.12), rotation, 0.1)
    bld.paint(sl, r < 1.0, "fat", 0)
    sl, r = bld.ellipsoid(centre, semi, rotation, lumpiness=0.05)
    x, y, z = bld.local(sl, centre, rotation)
    # The hilum opens towards the spine: a notch of sinus fat on the medial side.
    medial = -medial_sign * x / semi[0]
    sinus = (medial > 0.35) & (np.abs(y) < 0.45 * semi[1]) & (r < 0.8)
    kidney = (r < 1.0) & ~((medial > 0.7) & (np.abs(y) < 0.35 * semi[1]))
    bld.paint(sl, kidney, "kidney_cortex", label)
    # Medullary pyramids: darker wedges around the sinus, under a rim of cortex.
    angle = np.arctan2(z / semi[2], -medial_sign * x / semi[0])
    pyramids = (r < 0.72) & (r > 0.3) & (np.cos(7.0 * angle) > -0.2)
    bld.paint(sl, kidney & pyramids & ~sinus, "kidney_medulla", label)
    bld.paint(sl, kidney & sinus, "renal_sinus", 0)  # hilar fat and vessels: not parenchyma


def _paint_heart(
    bld: _Builder,
    centre: tuple[float, float, float],
    semi: tuple[float, float, float],
    rotation_deg: float,
    floor: np.ndarray,
) -> None:
    """Heart above the diaphragm ``floor`` ([y, x] mm): pericardial fat, muscle, blood pools."""
    sl, r = bld.ellipsoid(centre, semi, rotation_deg, lumpiness=0.05, scale=1.12)
    above = bld.z[sl] > floor[sl[1], sl[2]][None] + 2.0
    bld.paint(sl, (r < 1.0) & above, "fat", 0)
    sl, r = bld.ellipsoid(centre, semi, rotation_deg, lumpiness=0.05)
    above = bld.z[sl] > floor[sl[1], sl[2]][None] + 4.0
    heart = (r < 1.0) & above
    bld.paint(sl, heart, "myocardium", _ID["heart"])
    x, y, z = bld.local(sl, centre, rotation_deg)
    # Four chambers: blood inside, split by a septum (along the long axis) and the AV plane.
    septum = np.abs(y + 0.1 * x) < 0.09 * semi[1]
    av_plane = np.abs(x - 0.15 * semi[0]) < 0.06 * semi[0]
    chambers = heart & (r < 0.78) & ~septum & ~av_plane
    bld.paint(sl, chambers, "artery", _ID["heart"])


def _paint_lungs(
    bld: _Builder, body: _Body, floor: np.ndarray, mediastinum: np.ndarray, vessel_cell_mm: float
) -> np.ndarray:
    """Lungs: the thoracic cavity above the diaphragm ``floor`` ([y, x] mm), outside the
    ``mediastinum`` ([z, y, x] bool); parenchyma denser at the back, with branching vessels."""
    lungs = body.cavity & (bld.z > floor[None] + 4.0) & ~mediastinum
    z_any = np.flatnonzero(lungs.any(axis=(1, 2)))
    if z_any.size == 0:
        return lungs
    sl = (slice(z_any[0], z_any[-1] + 1), slice(None), slice(None))
    sub = lungs[sl]
    # Dependent (posterior) lung is denser in a supine scan.
    gradient = 40.0 * np.clip(
        bld.y[sl] / np.maximum(body.cavity_b_post[sl[0], None, None], 1), -1, 1
    )
    bld.paint(sl, sub, bld.value("lung") + gradient[sub], _ID["lungs"])
    # Vessels: where two smooth random fields both cross zero, a network of curved tubes.
    cell = vessel_cell_mm / bld.spacing[0]
    g1 = smooth_noise(bld.rng, sub.shape, cell)
    g2 = smooth_noise(bld.rng, sub.shape, cell)
    width = 0.3
    vessels = sub & (np.abs(g1) < width) & (np.abs(g2) < width * 1.4)
    bld.paint(sl, vessels, "lung_vessel", _ID["lungs"])
    return lungs


def _paint_spine(
    bld: _Builder,
    body_y: float,
    body_r: tuple[float, float],
    canal_r: float,
    period: float,
    process_len: float,
    transverse_len: float,
    widen: np.ndarray,
) -> None:
    """Vertebral column along the whole volume: bodies with marrow, discs, canal, arch, processes.

    Args:
        bld: the case being drawn.
        body_y: y (mm) of the vertebral bodies' centre.
        body_r: their half width and half depth (mm).
        canal_r: spinal canal radius (mm).
        period: vertebra height including the disc (mm).
        process_len: length of the spinous process behind the canal (mm).
        transverse_len: reach of the transverse processes from the midline (mm).
        widen: per-slice factor on the body's width ([z]; > 1 towards the sacrum).
    """
    bone = _ID["bone"]
    canal_y = body_y + body_r[1] + canal_r * 1.1
    half_x = max(transverse_len, body_r[0] * float(widen.max()))
    half_y = (canal_y + canal_r + process_len - body_y + body_r[1]) / 2
    centre_y = body_y - body_r[1] + half_y
    sl = bld.box((0.0, centre_y, bld.z1[-1] / 2), (half_x, half_y, bld.z1[-1] / 2))
    x, y, z = bld.x[sl], bld.y[sl], bld.z[sl]
    phase = np.mod((z - bld.rng.uniform(0, period)) / period, 1.0)
    vertebra = phase < 0.8
    rx = body_r[0] * widen[sl[0], None, None]
    rb = np.sqrt((x / rx) ** 2 + ((y - body_y) / body_r[1]) ** 2)
    cortex_mm = 0.12 * body_r[1]
    bld.paint(sl, (rb < 1.0) & ~vertebra, "disc", 0)
    bld.paint(sl, (rb < 1.0) & vertebra, "bone_cortex", bone)
    bld.paint(sl, (rb < 1.0 - cortex_mm / body_r[1]) & vertebra, "bone_marrow", bone)
    rc = np.sqrt(x**2 + (y - canal_y) ** 2)
    arch = (rc < canal_r * 1.6) & (y > body_y) & (phase > 0.05) & (phase < 0.75)
    spinous = (np.abs(x) < 0.25 * canal_r) & (y > canal_y) & (y < canal_y + process_len)
    spinous &= (phase > 0.1) & (phase < 0.6)
    transverse = np.abs(x) < transverse_len
    transverse &= np.abs(y - canal_y + 0.3 * canal_r) < 0.22 * canal_r
    transverse &= (phase > 0.3) & (phase < 0.5)
    bld.paint(sl, arch | spinous | transverse, "bone_cortex", bone)
    bld.paint(sl, rc < canal_r, "csf", 0)


def _paint_ribs(
    bld: _Builder,
    body: _Body,
    z_range: tuple[float, float],
    period: float,
    thickness: float,
    drop: float,
    reach: tuple[float, float],
    sternum: tuple[float, float] | None,
) -> None:
    """Ribs along the inner body wall, sloping down towards the front, and the sternum.

    Args:
        bld: the case being drawn.
        body: its body wall.
        z_range: lowest and highest z (mm) where a rib leaves the spine.
        period: distance between ribs (mm, along z at the back).
        thickness: rib thickness (mm).
        drop: how far (mm) a rib descends from the spine to its front end.
        reach: the angle (fraction of pi, from the back) at which ribs end, for the lowest and
            the highest rib (the lower ribs are shorter).
        sternum: (lowest z, half width) of the sternum, or None.
    """
    bone = _ID["bone"]
    lo = max(0, int(np.searchsorted(bld.z1, z_range[0] - drop)))
    sl = (slice(lo, bld.shape[0]), slice(None), slice(None))
    x, y, z = bld.x[sl], bld.y[sl], bld.z[sl]
    a = body.cavity_a[sl[0], None, None]
    b = np.where(y < 0, body.cavity_b_ant[sl[0], None, None], body.cavity_b_post[sl[0], None, None])
    rho = np.sqrt((x / a) ** 2 + (y / b) ** 2)
    # Distance (mm) outwards from the middle of the rib's ring, just outside the cavity.
    out = (rho - 1.0) * a - 0.5 * thickness
    theta = np.arctan2(np.abs(x) / a, y / b) / np.pi  # 0 at the back, 1 at the front
    z_spine = z + drop * theta  # where this rib left the spine
    phase = np.mod((z_spine - z_range[0]) / period, 1.0)
    reach_here = np.interp(z_spine, z_range, reach)
    rib = (np.abs(out) < 0.5 * thickness) & (phase < 1.3 * thickness / period)
    rib &= (theta > 0.08) & (theta < reach_here)
    rib &= (z_spine > z_range[0] - 0.5 * period) & (z_spine < z_range[1])
    bld.paint(sl, rib, "bone_cortex", bone)
    bld.paint(sl, rib & (np.abs(out) < 0.2 * thickness), "bone_marrow", bone)
    if sternum is not None:
        # Sternebrae: segments in step with the ribs' front ends.
        front = (np.abs(x) < sternum[1]) & (y < 0) & (np.abs(out) < 0.6 * thickness)
        front &= (z > sternum[0]) & (np.mod((z - z_range[0]) / period, 1.0) < 0.7)
        bld.paint(sl, front, "bone_cortex", bone)
        core = front & (np.abs(x) < 0.7 * sternum[1]) & (np.abs(out) < 0.4 * thickness)
        bld.paint(sl, core, "bone_marrow", bone)


def _diaphragm(bld: _Builder, domes: list[tuple[float, float, float, float, float]]) -> np.ndarray:
    """Diaphragm height z (mm) over the axial plane, [y, x]: the highest of paraboloid domes.

    Each dome is (x, y, top z, radius mm, depth mm): ``depth`` below the top at ``radius``.
    """
    x, y = bld.x1[None, :], bld.y1[:, None]
    floor = np.full((bld.shape[1], bld.shape[2]), -1e4, dtype=np.float32)
    for dx, dy, top, radius, depth in domes:
        floor = np.maximum(floor, top - depth * ((x - dx) ** 2 + (y - dy) ** 2) / radius**2)
    return floor


def _clip(
    bld: _Builder,
    sl: tuple[slice, slice, slice],
    mask: np.ndarray,
    body: _Body,
    below: np.ndarray | None,
) -> np.ndarray:
    """Keep ``mask`` inside the body cavity and, when ``below`` is given, under the diaphragm."""
    mask = mask & body.cavity[sl]
    if below is not None:
        mask &= bld.z[sl] < below[sl[1], sl[2]][None] - 2.0
    return mask


def _liver_vessels(bld: _Builder, sl: tuple[slice, slice, slice], cell_mm: float) -> None:
    """Portal and hepatic vein branches inside the liver label within ``sl``."""
    liver = bld.labels[sl] == _ID["liver"]
    g1 = smooth_noise(bld.rng, liver.shape, cell_mm / bld.spacing[0])
    g2 = smooth_noise(bld.rng, liver.shape, cell_mm / bld.spacing[0])
    vessels = liver & (np.abs(g1) < 0.15) & (np.abs(g2) < 0.25)
    bld.paint(sl, vessels, "liver_vessel", _ID["liver"])


def _paint_human(bld: _Builder) -> None:
    """A human torso from the iliac crests to the mid thorax (numbers in mm, adult size)."""
    rng = bld.rng
    z = bld.z1
    size = 1.0 + 0.05 * rng.standard_normal()
    a = _interp(z, [(0, 165), (60, 158), (130, 150), (230, 158), (340, 162)], 0.03, rng) * size
    b_ant = _interp(z, [(0, 98), (130, 102), (230, 98), (340, 92)], 0.05, rng) * size
    b_post = _interp(z, [(0, 92), (340, 98)], 0.03, rng) * size
    # The table under the patient's back: two carbon shells around foam, curved up at the sides.
    table_y = float(b_post.max()) + 2.0
    tx, ty = bld.x1[None, None, :], bld.y1[None, :, None]
    surface = table_y - tx**2 / 1200.0
    depth = ty - surface
    table = np.broadcast_to((depth > 0) & (depth < 22.0), bld.shape)
    bld.paint((), table, "foam", 0)
    bld.paint((), table & np.broadcast_to((depth < 2.5) | (depth > 19.5), bld.shape), "table", 0)

    body = _paint_body(
        bld, a, b_ant, b_post, rng.uniform(10, 30), rng.uniform(9, 14), (55.0, 45.0), 2.3
    )
    z_right = 218.0 + rng.normal(0, 10)
    z_left = z_right - 12.0 + rng.normal(0, 4)
    floor = _diaphragm(bld, [(-70.0, 5.0, z_right, 120.0, 70.0), (75.0, 5.0, z_left, 110.0, 70.0)])
    abdomen = body.cavity & (bld.z < floor[None])
    thorax = body.cavity & (bld.z >= floor[None])
    _paint_viscera(bld, abdomen, loop_mm=24.0, gas_share=0.12, content="fluid")
    bld.paint((), thorax, "fat", 0)

    spine_y = 30.0 + rng.normal(0, 3)
    for side in (-1.0, 1.0):
        psoas_r = np.interp(z, [0, 100, 200], [22, 14, 6])
        sl = bld.box((side * 38, spine_y - 5, 100), (25, 25, 100))
        x, y, zz = bld.local(sl, (side * 38, spine_y - 5, 0))
        radius = psoas_r[sl[0], None, None]
        bld.paint(sl, (x**2 + y**2 < radius**2) & (zz < 200), "muscle", 0)
    sl, inside = bld.tube((14.0, spine_y - 28.0), (12.0, 12.0), (0.0, z_left + 60))
    bld.paint(sl, inside, "artery", 0)
    sl, inside = bld.tube((-24.0, spine_y - 25.0), (13.0, 10.0), (0.0, z_right - 40))
    bld.paint(sl, inside, "vein", 0)

    _paint_gut_sac(
        bld, (70.0, -40.0, z_left - 55), (45, 38, 55), 30.0, "fluid", 0.22, 4.0, folds=0.0
    )
    liver_scale = 1.0 + 0.07 * rng.standard_normal()
    pieces = [
        ((-58.0, -2.0, z_right - 62), (80.0, 76.0, 76.0), 10.0),
        ((28.0, -45.0, z_right - 40), (55.0, 30.0, 36.0), -10.0),
    ]
    for centre, semi, rot in pieces:
        semi = tuple(s * liver_scale for s in semi)
        centre = (centre[0] + rng.normal(0, 5), centre[1] + rng.normal(0, 4), centre[2])
        sl, r = bld.ellipsoid(centre, semi, rot, lumpiness=0.1)
        bld.paint(sl, _clip(bld, sl, r < 1.0, body, floor), "liver", _ID["liver"])
    liver_box = bld.box((-20.0, -10.0, z_right - 68), (130.0, 100.0, 90.0))
    _liver_vessels(bld, liver_box, cell_mm=45.0)
    sl, inside = bld.tube((-24.0, spine_y - 25.0), (13.0, 10.0), (0.0, z_right - 40))
    bld.paint(sl, inside, "vein", 0)

    spleen = 1.0 + 0.1 * rng.standard_normal()
    centre = (0.62 * float(body.cavity_a.mean()) + rng.normal(0, 4), 30.0, z_left - 50)
    sl, r = bld.ellipsoid(centre, (25 * spleen, 55 * spleen, 50 * spleen), -45.0, 0.12)
    bld.paint(sl, _clip(bld, sl, r < 1.0, body, floor), "spleen", _ID["spleen"])

    kidney = 1.0 + 0.06 * rng.standard_normal()
    semi = (28 * kidney, 23 * kidney, 55 * kidney)
    right = (-62.0 + rng.normal(0, 4), spine_y + 14, z_right - 125 + rng.normal(0, 6))
    left = (62.0 + rng.normal(0, 4), spine_y + 14, z_left - 105 + rng.normal(0, 6))
    _paint_kidney(bld, right, semi, medial_sign=-1.0, label=_ID["kidney_right"], tilt_deg=35)
    _paint_kidney(bld, left, semi, medial_sign=1.0, label=_ID["kidney_left"], tilt_deg=35)

    dia = body.cavity & (np.abs(bld.z - floor[None]) < 0.6 * bld.spacing[2])
    bld.paint((), dia, "muscle", 0)
    mediastinum = (np.abs(bld.x - 8.0) < 30.0) & (bld.y < spine_y + 5)
    _paint_lungs(bld, body, floor, mediastinum, vessel_cell_mm=28.0)
    sl, inside = bld.tube((14.0, spine_y - 28.0), (12.0, 12.0), (0.0, z_left + 80))
    bld.paint(sl, inside & thorax[sl], "artery", 0)
    heart = 1.0 + 0.06 * rng.standard_normal()
    centre = (22.0 + rng.normal(0, 5), -22.0, z_left + 48 + rng.normal(0, 5))
    _paint_heart(bld, centre, (62 * heart, 48 * heart, 55 * heart), -35.0, floor)

    widen = np.interp(z, [0, 25, 55], [2.3, 1.7, 1.0]).astype(np.float32)
    _paint_spine(bld, spine_y, (22.0, 16.0), 9.0, 36.0, 30.0, 45.0, widen)
    _paint_ribs(
        bld, body, (z_right - 70, 420.0), 30.0, 9.0, 75.0, (0.45, 0.85), (z_right + 5, 16.0)
    )
    _paint_ilium(bld, spine_y, z_crest=55.0 + rng.normal(0, 8), half_span=70.0, thickness=6.0)


def _paint_ilium(
    bld: _Builder, spine_y: float, z_crest: float, half_span: float, thickness: float
) -> None:
    """Human iliac wings: curved plates from the sacroiliac joints around to the front."""
    sl = bld.box((0.0, spine_y, z_crest / 2), (200.0, 200.0, z_crest / 2 + 10))
    x, y, z = bld.local(sl, (0.0, 0.0, 0.0))
    rx, ry = 0.9 * half_span, 45.0
    u = (np.abs(x) - half_span) / rx
    v = (y - spine_y + 15.0) / ry
    rho = np.sqrt(u**2 + v**2)
    phi = np.arctan2(v, u)
    crest = z_crest + 12.0 * np.cos(phi)
    wing = (np.abs(rho - 1.0) * rx < thickness / 2) & (phi > -1.1) & (phi < 1.8) & (z < crest)
    bld.paint(sl, wing, "bone_cortex", _ID["bone"])
    bld.paint(sl, wing & (np.abs(rho - 1.0) * rx < thickness / 4), "bone_marrow", _ID["bone"])


def _paint_rabbit(bld: _Builder) -> None:
    """A rabbit torso from the pelvis to the thoracic inlet (numbers in mm, a ~2 kg rabbit)."""
    rng = bld.rng
    z = bld.z1
    size = 1.0 + 0.05 * rng.standard_normal()
    a = _interp(
        z, [(0, 28), (30, 33), (80, 38), (140, 38), (175, 32), (205, 27), (235, 24)], 0.03, rng
    )
    b_ant = _interp(z, [(0, 28), (60, 36), (140, 36), (180, 33), (235, 28)], 0.04, rng)
    b_post = _interp(z, [(0, 24), (120, 26), (235, 25)], 0.03, rng)
    a, b_ant, b_post = a * size, b_ant * size, b_post * size
    body = _paint_body(
        bld, a, b_ant, b_post, rng.uniform(1.5, 4.0), rng.uniform(3.0, 4.5), (13.0, 7.0), 2.0
    )
    z_dia = 172.0 + rng.normal(0, 5)
    floor = _diaphragm(bld, [(0.0, -5.0, z_dia, 40.0, 24.0)])
    abdomen = body.cavity & (bld.z < floor[None])
    thorax = body.cavity & (bld.z >= floor[None])
    _paint_viscera(bld, abdomen, loop_mm=7.0, gas_share=0.15, content="digesta")
    bld.paint((), thorax, "fat", 0)

    spine_y = 5.0 + rng.normal(0, 0.8)
    for side in (-1.0, 1.0):
        sl, inside = bld.tube((side * 9.0, spine_y - 7.0), (6.0, 5.0), (15.0, 150.0))
        bld.paint(sl, inside, "muscle", 0)
    sl, inside = bld.tube((3.0, spine_y - 8.0), (2.2, 2.2), (0.0, z_dia + 25))
    bld.paint(sl, inside, "artery", 0)

    # Bladder, then the large caecum with its spiral fold, gas and digesta.
    sl, r = bld.ellipsoid((0.0, -14.0, 14.0), (11, 10, 14), 0.0, 0.1)
    bld.paint(sl, _clip(bld, sl, r < 1.0, body, None), "fluid", 0)
    caecum = 1.0 + 0.06 * rng.standard_normal()
    centre = (rng.normal(-3, 3), -9.0, 82.0 + rng.normal(0, 6))
    _paint_gut_sac(
        bld,
        centre,
        (31 * caecum, 25 * caecum, 52 * caecum),
        15.0,
        "digesta",
        0.12,
        1.2,
        folds=0.12,
        bubble_cut=0.9,
        bubble_mm=1.5,
    )
    bld.hu[~body.inside] = bld.value("air")  # the caecum's box may reach past the skin

    liver = 1.0 + 0.07 * rng.standard_normal()
    # Lobes: left lateral, right lateral, median (ventral) and caudate (beside the right kidney);
    # the stomach, drawn first, sits in their caudal hollow on the left.
    pieces = [
        ((13.0, -10.0, z_dia - 19), (19.0, 17.0, 19.0), 15.0),
        ((-14.0, -5.0, z_dia - 21), (19.0, 20.0, 21.0), -10.0),
        ((0.0, -18.0, z_dia - 13), (21.0, 11.0, 13.0), 0.0),
        ((-16.0, 7.0, z_dia - 30), (9.0, 9.0, 12.0), 0.0),
    ]
    for centre, semi, rot in pieces:
        semi = tuple(s * liver for s in semi)
        centre = (centre[0] + rng.normal(0, 2), centre[1] + rng.normal(0, 1.5), centre[2])
        sl, r = bld.ellipsoid(centre, semi, rot, lumpiness=0.12)
        bld.paint(sl, _clip(bld, sl, r < 1.0, body, floor), "liver", _ID["liver"])
    _liver_vessels(bld, bld.box((-8.0, -4.0, z_dia - 25), (45.0, 35.0, 30.0)), cell_mm=14.0)
    # The stomach after the liver: it presses into the liver's caudal surface on the left.
    _paint_gut_sac(
        bld, (13.0, 0.0, z_dia - 36), (18, 16, 18), 20.0, "digesta", 0.15, 1.0, folds=0.0
    )

    spleen = 1.0 + 0.08 * rng.standard_normal()
    centre = (26.0 + rng.normal(0, 1.5), 4.0, z_dia - 52 + rng.normal(0, 3))
    sl, r = bld.ellipsoid(centre, (4.0 * spleen, 8.0 * spleen, 23.0 * spleen), 30.0, 0.08)
    bld.paint(sl, _clip(bld, sl, r < 1.0, body, floor), "spleen", _ID["spleen"])

    kidney = 1.0 + 0.06 * rng.standard_normal()
    semi = (9.0 * kidney, 8.0 * kidney, 19.5 * kidney)
    # The rabbit's right kidney lies cranial to the left (by about half a kidney length).
    right = (-15.0 + rng.normal(0, 1), spine_y + 4, z_dia - 40 + rng.normal(0, 3))
    left = (15.0 + rng.normal(0, 1), spine_y + 4, right[2] - 26 + rng.normal(0, 3))
    _paint_kidney(bld, right, semi, medial_sign=-1.0, label=_ID["kidney_right"], tilt_deg=20)
    _paint_kidney(bld, left, semi, medial_sign=1.0, label=_ID["kidney_left"], tilt_deg=20)

    dia = body.cavity & (np.abs(bld.z - floor[None]) < 0.6 * bld.spacing[2])
    bld.paint((), dia, "muscle", 0)
    mediastinum = (np.abs(bld.x - 2.0) < 6.0) & (bld.y < spine_y + 2)
    _paint_lungs(bld, body, floor, mediastinum, vessel_cell_mm=8.0)
    # Thymus: rabbits keep a large one in the cranial mediastinum.
    sl, r = bld.ellipsoid((0.0, -12.0, z_dia + 48), (9.0, 7.0, 13.0), 0.0, 0.1)
    bld.paint(sl, (r < 1.0) & thorax[sl], "muscle", 0)
    heart = 1.0 + 0.06 * rng.standard_normal()
    centre = (4.0 + rng.normal(0, 1), -8.0, z_dia + 22 + rng.normal(0, 2))
    _paint_heart(bld, centre, (12.5 * heart, 11.5 * heart, 15.0 * heart), -25.0, floor)

    widen = np.interp(z, [0, 20, 40], [1.5, 1.2, 1.0]).astype(np.float32)
    _paint_spine(bld, spine_y, (5.0, 4.0), 2.6, 15.0, 7.0, 11.0, widen)
    _paint_ribs(bld, body, (z_dia - 28, 300.0), 9.0, 2.6, 22.0, (0.5, 0.9), (z_dia - 6, 3.5))
    # Ilium: narrow bars beside the sacrum that part caudally.
    for side in (-1.0, 1.0):
        sl = bld.box((side * 14.0, spine_y, 22.0), (12.0, 10.0, 24.0))
        x, y, zz = bld.local(sl, (0.0, 0.0, 0.0))
        cx = side * (8.0 + 0.25 * np.clip(45.0 - zz, 0, None))
        cy = spine_y - 1.0 - 0.12 * np.clip(45.0 - zz, 0, None)
        r = np.sqrt(((x - cx) / 2.6) ** 2 + ((y - cy) / 4.2) ** 2)
        bone = (r < 1.0) & (zz < 45.0)
        bld.paint(sl, bone, "bone_cortex", _ID["bone"])
        bld.paint(sl, bone & (r < 0.55), "bone_marrow", _ID["bone"])


_RECIPES = {"human": _paint_human, "rabbit": _paint_rabbit}
_BEND = {"human": (5.0, 140.0), "rabbit": (1.5, 45.0)}  # amplitude, wavelength in mm


def _check_species(species: str) -> None:
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
    _check_species(species)
    grid = _GRIDS[species]
    in_plane = grid.spacing[0] * float(rng.uniform(0.96, 1.04))
    spacing = (in_plane, in_plane, grid.spacing[2])
    nz, ny, nx = grid.shape
    # The body sits above the table (human) and a little off centre, as on a real scanner.
    centre_y = ny * (0.45 if species == "human" else 0.55) + rng.normal(0, 2)
    centre_yx = (centre_y, (nx - 1) / 2 + rng.normal(0, 2))
    bend, cell = _BEND[species]
    bld = _Builder(rng, grid.shape, spacing, centre_yx, bend, cell, contrast)
    _RECIPES[species](bld)
    bld.hu[~np.isfinite(bld.hu)] = bld.value("air")

    # Noise first, then blur: the blur gives the noise CT's grainy texture and the edges partial
    # volume; the noise is scaled so that its standard deviation after the blur is ``sigma``.
    sigma = float(rng.uniform(10.0, 20.0))
    blur = (0.45, 0.7, 0.7)
    bld.hu += rng.standard_normal(bld.shape, dtype=np.float32) * (sigma / _noise_gain(blur))
    ct = ndimage.gaussian_filter(bld.hu, blur)
    ct = np.clip(np.rint(ct), -1024, 3071).astype(np.int16)
    origin = (
        float(-centre_yx[1] * in_plane + rng.normal(0, 10)),
        float(-centre_yx[0] * in_plane + rng.normal(0, 10)),
        float(-rng.uniform(200, 600) if species == "human" else -rng.uniform(50, 150)),
    )
    return Phantom(ct, bld.labels, spacing, origin, species, contrast)


@lru_cache(maxsize=8)
def _noise_gain(sigma: tuple[float, ...]) -> float:
    """How much a Gaussian blur of ``sigma`` (voxels) shrinks white noise's standard deviation."""
    delta = np.zeros((15,) * len(sigma), dtype=np.float64)
    delta[(7,) * len(sigma)] = 1.0
    return float(np.sqrt((ndimage.gaussian_filter(delta, sigma) ** 2).sum()))


def phantom_meta(phantom: Phantom) -> ImageMeta:
    """The geometry of a phantom: its spacing and origin, identity direction (LPS)."""
    return ImageMeta(spacing=phantom.spacing, origin=phantom.origin)


def check_new_dataset_folder(out: Path) -> None:
    """Refuse an output folder that exists and is not empty (never mix or overwrite datasets).

    Raises:
        InputError: ``out`` is a file, or a folder that holds anything.
    """
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(
            f"Cannot write a dataset to {out}: it already exists and is not empty; choose a "
            "new folder."
        )


def write_msd_dataset(
    out: Path,
    cases: Iterable[tuple[str, np.ndarray, np.ndarray, ImageMeta]],
    organs: Sequence[str],
    info: Mapping[str, object],
) -> list[Path]:
    """Write cases in the MSD / nnU-Net v2 layout, all-or-nothing.

    Everything is written into a hidden staging folder beside ``out`` and moved into place at
    the end, so an interrupted run leaves no half dataset behind (``out`` must be new or empty).

    Args:
        out: dataset folder: ``imagesTr/<case>_0000.nii.gz``, ``labelsTr/<case>.nii.gz``,
            ``dataset.json``.
        cases: ``(case id, ct [z, y, x], labels [z, y, x], meta)`` per case.
        organs: label vocabulary (ids ``1..len(organs)``).
        info: extra ``dataset.json`` fields (``species``, ``synthetic``, ``description``...).

    Returns:
        The label files written, one per case, in order.
    """
    check_new_dataset_folder(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    names = {i + 1: name for i, name in enumerate(organs)}
    case_ids: list[str] = []
    try:
        for case_id, ct, labels, meta in cases:
            write_image(ct, meta, staging / "imagesTr" / f"{case_id}_0000.nii.gz")
            write_image(
                labels, meta, staging / "labelsTr" / f"{case_id}.nii.gz", segment_names=names
            )
            case_ids.append(case_id)
        dataset = {
            "name": out.name,
            **info,
            "channel_names": {"0": "CT"},
            "labels": {"background": 0, **{name: i for i, name in names.items()}},
            "numTraining": len(case_ids),
            "file_ending": ".nii.gz",
            "training": [
                {"image": f"./imagesTr/{c}_0000.nii.gz", "label": f"./labelsTr/{c}.nii.gz"}
                for c in case_ids
            ],
        }
        atomic_write_json(staging / "dataset.json", dataset)
        check_new_dataset_folder(out)
        if out.exists():
            out.rmdir()  # empty, checked just above
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out / "labelsTr" / f"{c}.nii.gz" for c in case_ids]


def write_phantom_dataset(
    out: Path, species: str, cases: int, seed: int, contrast: bool = True
) -> list[Path]:
    """Write ``cases`` synthetic CT phantoms of ``species`` as an MSD / nnU-Net v2 dataset.

    Case ``k`` is drawn from ``np.random.default_rng([seed, k])``: the same seed gives the same
    cases, and a larger ``cases`` only adds cases. ``dataset.json`` says ``"synthetic": true``.

    Args:
        out: the dataset folder (created; it must not exist or be empty).
        species: ``"human"`` or ``"rabbit"``.
        cases: number of cases (case ids ``<species>_000``, ``<species>_001``, ...).
        seed: random seed.
        contrast: contrast-enhanced tissue values, else non-contrast.

    Returns:
        The label files (``labelsTr/<case>.nii.gz``), one per case.

    Raises:
        InputError: unknown species, fewer than one case, or ``out`` exists and is not empty.
    """
    out = Path(out)
    _check_species(species)
    if cases < 1:
        raise InputError(f"Cannot write {out}: the number of cases must be at least 1.")
    check_new_dataset_folder(out)

    def generate() -> Iterator[tuple[str, np.ndarray, np.ndarray, ImageMeta]]:
        for k in range(cases):
            phantom = make_phantom(species, np.random.default_rng([seed, k]), contrast=contrast)
            yield f"{species}_{k:03d}", phantom.ct, phantom.labels, phantom_meta(phantom)

    phase = "contrast-enhanced (portal venous)" if contrast else "non-contrast"
    info = {
        "description": (
            f"SYNTHETIC {species} torso CT phantoms drawn by vetseg (not real scans; they prove "
            f"nothing about real animals), {phase} HU values, seed {seed}."
        ),
        "species": species,
        "synthetic": True,
        "contrast": contrast,
        "seed": seed,
        "generator": "vetseg.data.phantoms",
    }
    return write_msd_dataset(out, generate(), CORE_ORGANS, info)
