"""Organ recipes shared by the species: body wall, bowel, kidneys, heart, lungs, spine, ribs.

Each ``paint_*`` function draws one structure with its inner texture (renal cortex and medulla,
heart chambers, lung vessels, bone cortex and marrow) on a :class:`Builder`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vetseg.data.phantoms.shapes import ORGAN_ID, Builder, smooth_noise


# --------------------------------------------------------------------------- shared parts
@dataclass
class Body:
    """Body outline and wall of one case, all arrays over the whole volume ([z] or [z, y, x])."""

    inside: np.ndarray  # bool [z, y, x]
    cavity: np.ndarray  # bool [z, y, x]: inside the muscle wall, spine and back muscles excluded
    cavity_a: np.ndarray  # float [z]: half width of the cavity (mm)
    cavity_b_ant: np.ndarray  # float [z]
    cavity_b_post: np.ndarray  # float [z]


def interp(
    z: np.ndarray, knots: list[tuple[float, float]], jitter: float, rng: np.random.Generator
) -> np.ndarray:
    """Piecewise-linear profile along z through (z, value) knots, each value jittered."""
    zs = np.array([k[0] for k in knots])
    vs = np.array([k[1] for k in knots]) * (1.0 + jitter * rng.standard_normal(len(knots)))
    return np.interp(z, zs, vs).astype(np.float32)


def superellipse(
    x: np.ndarray, y: np.ndarray, a: np.ndarray, b_ant: np.ndarray, b_post: np.ndarray, p: float
) -> np.ndarray:
    """Normalised radius of a superellipse with a flatter or rounder back (``< 1`` inside)."""
    b = np.where(y < 0, b_ant, b_post)
    return (np.abs(x / a) ** p + np.abs(y / b) ** p) ** (1.0 / p)


def paint_body(
    bld: Builder,
    a: np.ndarray,
    b_ant: np.ndarray,
    b_post: np.ndarray,
    fat_mm: float,
    muscle_mm: float,
    back_muscle: tuple[float, float],
    power: float,
) -> Body:
    """Skin, subcutaneous fat, muscle wall and back muscles; returns the cavity inside them.

    ``a``, ``b_ant``, ``b_post`` are per-slice half width and anterior / posterior half depth;
    ``back_muscle`` is (half width, anterior edge y) of the back muscles beside the spine.
    """
    a3, ba3, bp3 = a[:, None, None], b_ant[:, None, None], b_post[:, None, None]
    r_skin = superellipse(bld.x, bld.y, a3, ba3, bp3, power)
    inside = r_skin < 1.0
    bld.paint((), inside, "skin", None)
    # Fat is thicker at the back and sides, as in a supine patient.
    fat = fat_mm * (1.0 + 0.35 * np.clip(bld.y / bp3, 0, 1))
    r_fat = superellipse(bld.x, bld.y, a3 - fat, ba3 - fat, bp3 - fat, power)
    bld.paint((), r_fat < 1.0, "fat", None)
    inner = fat + muscle_mm
    ca, cba, cbp = a3 - inner, ba3 - inner, bp3 - inner
    r_muscle = superellipse(bld.x, bld.y, ca, cba, cbp, power)
    bld.paint((), (r_muscle >= 1.0) & (r_fat < 1.0), "muscle", None)
    back = (np.abs(bld.x) < back_muscle[0]) & (bld.y > back_muscle[1]) & (r_fat < 1.0)
    bld.paint((), back, "muscle", None)
    cavity = (r_muscle < 1.0) & ~back
    return Body(inside, cavity, ca[:, 0, 0], cba[:, 0, 0], cbp[:, 0, 0])


def paint_viscera(
    bld: Builder,
    region: np.ndarray,
    loop_mm: float,
    gas_share: float,
    content: str,
    bowel_share: float = 1.0,
) -> None:
    """Bowel loops in mesenteric fat inside ``region``: enhancing walls, content, gas bubbles.

    Loops are the voxels near the zero level of two smooth random fields: in 3D thin curved
    slabs, in a slice winding bands about ``loop_mm`` wide, which is what bowel looks like.
    ``bowel_share`` below 1 makes the loops thinner and leaves more mesenteric fat between
    them (visceral fat), above 1 the reverse.
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
    bld.paint(sl, sub & (near < 0.3 * bowel_share), "bowel_wall", 0)
    lumen = sub & (near < 0.2 * bowel_share)
    texture = smooth_noise(bld.rng, sub.shape, cell * 0.4)
    bld.paint(sl, lumen, bld.value(content) + 12.0 * texture[lumen], 0)
    gas = smooth_noise(bld.rng, sub.shape, cell * 0.5)
    cut = float(np.quantile(gas[lumen], 1.0 - gas_share)) if lumen.any() else np.inf
    bld.paint(sl, lumen & (gas > cut), "gas", 0)


def paint_gut_sac(
    bld: Builder,
    centre: tuple[float, float, float],
    semi: tuple[float, float, float],
    rotation_deg: float,
    content: str,
    gas_depth: float,
    wall_mm: float,
    folds: float,
    bubble_cut: float = 1.6,
    bubble_mm: float = 4.0,
    label: int = 0,
    mottle_hu: float = 35.0,
    content_hu: float | None = None,
) -> None:
    """A stomach or caecum: muscular wall, mottled content, a gas cap on the anterior side.

    Args:
        label: label id of wall, content and gas (0: unlabelled).
        mottle_hu: amplitude of the content's texture (food; small for water).
        content_hu: the content's mean HU instead of ``content``'s tissue value (food).
        gas_depth: fraction of the depth (from the anterior side, non-dependent when supine)
            that holds gas.
        folds: amplitude of spiral folds of the wall through the content (0: none).
    """
    sl, r = bld.ellipsoid(centre, semi, rotation_deg, lumpiness=0.1)
    bld.paint(sl, r < 1.0, "bowel_wall", label)
    inner = r < 1.0 - wall_mm / min(semi)
    x, y, z = bld.local(sl, centre, rotation_deg)
    texture = smooth_noise(bld.rng, r.shape, 2.5 / bld.spacing[0] + 1.0)
    mean_hu = bld.value(content) if content_hu is None else content_hu
    bld.paint(sl, inner, mean_hu + mottle_hu * texture[inner], label)
    bubbles = smooth_noise(bld.rng, r.shape, bubble_mm / bld.spacing[0] + 1.0)
    gas = inner & ((y < -semi[1] * (1.0 - 2.0 * gas_depth)) | (bubbles > bubble_cut))
    bld.paint(sl, gas, "gas", label)
    if folds:
        # Spiral folds: thin walls along a helix through the sac (the rabbit caecum's spiral).
        angle = np.arctan2(y, x)
        spiral = np.sin(angle + z * (2 * np.pi / (semi[2] * 0.6)))
        bld.paint(sl, inner & (np.abs(spiral) < folds) & ~gas, "bowel_wall", label)


def paint_kidney(
    bld: Builder,
    centre: tuple[float, float, float],
    semi: tuple[float, float, float],
    medial_sign: float,
    label: int,
    tilt_deg: float,
    collecting_system: bool = False,
    nephrogram: float = 0.0,
    renal_sinus: float = 0.0,
    perirenal_fat: float = 1.3,
) -> None:
    """Kidney: perirenal fat, cortex, medulla, and a fatty sinus at the medial hilum.

    With ``collecting_system`` the renal pelvis is drawn in the sinus (tissue
    ``"collecting_system"``: urine, or excreted contrast in a delayed phase), unlabelled.
    ``nephrogram`` (0..1) brings the medulla's HU towards the cortex's (a homogeneous
    nephrogram at 1); ``renal_sinus`` (0..1) draws a larger, deeper sinus and a wider hilum
    (0: the original shape); ``perirenal_fat`` is the fat's extent
    in kidney semi-axes (lumpier when larger).
    """
    rotation = medial_sign * tilt_deg
    fat = (semi[0] * perirenal_fat, semi[1] * perirenal_fat, semi[2] * (perirenal_fat - 0.18))
    fat_lumps = 0.1 if perirenal_fat <= 1.3 else 0.2
    sl, r = bld.ellipsoid(centre, fat, rotation, fat_lumps)
    bld.paint(sl, r < 1.0, "fat", 0)
    sl, r = bld.ellipsoid(centre, semi, rotation, lumpiness=0.05)
    x, y, z = bld.local(sl, centre, rotation)
    # The hilum opens towards the spine: a notch of sinus fat on the medial side.
    medial = -medial_sign * x / semi[0]
    depth, width = 0.35 - 0.15 * renal_sinus, 0.45 + 0.1 * renal_sinus
    hilum = 0.35 + 0.1 * renal_sinus
    sinus = (medial > depth) & (np.abs(y) < width * semi[1]) & (r < 0.8)
    kidney = (r < 1.0) & ~((medial > 0.7) & (np.abs(y) < hilum * semi[1]))
    bld.paint(sl, kidney, "kidney_cortex", label)
    # Medullary pyramids: darker wedges around the sinus, under a rim of cortex.
    angle = np.arctan2(z / semi[2], -medial_sign * x / semi[0])
    pyramids = (r < 0.72) & (r > 0.3) & (np.cos(7.0 * angle) > -0.2)
    cortex, medulla = bld.value("kidney_cortex"), bld.value("kidney_medulla")
    medulla_hu = medulla + float(np.clip(nephrogram, 0.0, 1.0)) * (cortex - medulla)
    bld.paint(sl, kidney & pyramids & ~sinus, medulla_hu, label)
    bld.paint(sl, kidney & sinus, "renal_sinus", 0)  # hilar fat and vessels: not parenchyma
    if collecting_system:
        pelvis = sinus & (np.abs(y) < 0.22 * semi[1]) & (np.abs(z) < 0.45 * semi[2])
        bld.paint(sl, kidney & pelvis, "collecting_system", 0)


def paint_heart(
    bld: Builder,
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
    bld.paint(sl, heart, "myocardium", ORGAN_ID["heart"])
    x, y, z = bld.local(sl, centre, rotation_deg)
    # Four chambers: blood inside, split by a septum (along the long axis) and the AV plane.
    septum = np.abs(y + 0.1 * x) < 0.09 * semi[1]
    av_plane = np.abs(x - 0.15 * semi[0]) < 0.06 * semi[0]
    chambers = heart & (r < 0.78) & ~septum & ~av_plane
    bld.paint(sl, chambers, "artery", ORGAN_ID["heart"])


def paint_lungs(
    bld: Builder, body: Body, floor: np.ndarray, mediastinum: np.ndarray, vessel_cell_mm: float
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
    bld.paint(sl, sub, bld.value("lung") + gradient[sub], ORGAN_ID["lungs"])
    # Vessels: where two smooth random fields both cross zero, a network of curved tubes.
    cell = vessel_cell_mm / bld.spacing[0]
    g1 = smooth_noise(bld.rng, sub.shape, cell)
    g2 = smooth_noise(bld.rng, sub.shape, cell)
    width = 0.3
    vessels = sub & (np.abs(g1) < width) & (np.abs(g2) < width * 1.4)
    bld.paint(sl, vessels, "lung_vessel", ORGAN_ID["lungs"])
    return lungs


def paint_spine(
    bld: Builder,
    body_y: float,
    body_r: tuple[float, float],
    canal_r: float,
    period: float,
    process_len: float,
    transverse_len: float,
    widen: np.ndarray,
    z_range: tuple[float, float] | None = None,
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
        z_range: lowest and highest z (mm) of the column (default: the whole volume from z = 0).
    """
    bone = ORGAN_ID["bone"]
    canal_y = body_y + body_r[1] + canal_r * 1.1
    half_x = max(transverse_len, body_r[0] * float(widen.max()))
    half_y = (canal_y + canal_r + process_len - body_y + body_r[1]) / 2
    centre_y = body_y - body_r[1] + half_y
    if z_range is None:
        sl = bld.box((0.0, centre_y, bld.z1[-1] / 2), (half_x, half_y, bld.z1[-1] / 2))
    else:
        z_mid, z_half = (z_range[0] + z_range[1]) / 2, (z_range[1] - z_range[0]) / 2
        sl = bld.box((0.0, centre_y, z_mid), (half_x, half_y, z_half))
    x, y, z = bld.x[sl], bld.y[sl], bld.z[sl]
    phase = np.mod((z - bld.rng.uniform(0, period)) / period, 1.0)
    vertebra = phase < 0.8
    if z_range is not None:
        # Outside the column's z range nothing counts as vertebra, disc, arch or canal.
        phase = np.where((z > z_range[0]) & (z < z_range[1]), phase, 2.0)
        vertebra &= phase < 1.0
    column = phase < 1.5  # everywhere without a z range
    rx = body_r[0] * widen[sl[0], None, None]
    rb = np.sqrt((x / rx) ** 2 + ((y - body_y) / body_r[1]) ** 2)
    cortex_mm = 0.12 * body_r[1]
    bld.paint(sl, (rb < 1.0) & ~vertebra & column, "disc", 0)
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
    bld.paint(sl, (rc < canal_r) & column, "csf", 0)


def paint_ribs(
    bld: Builder,
    body: Body,
    z_range: tuple[float, float],
    period: float,
    thickness: float,
    drop: float,
    reach: tuple[float, float],
    sternum: tuple[float, float] | None,
    ribs: RibShape | None = None,
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
        ribs: ribs as real CT shows them (a thin cortex around marrow, thinner towards the
            front, costal cartilage to the sternum); None: solid ribs of ``thickness`` to
            their ends and no cartilage (what the ``"wide"`` phantoms draw).
    """
    if ribs is not None:
        _paint_real_ribs(bld, body, z_range, period, drop, reach, sternum, ribs)
        return
    bone = ORGAN_ID["bone"]
    sl, x, y, z, a, rho, theta = _ring_frame(bld, body, z_range[0] - drop)
    # Distance (mm) outwards from the middle of the rib's ring, just outside the cavity.
    out = (rho - 1.0) * a - 0.5 * thickness
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


def _ring_frame(bld: Builder, body: Body, z_low: float) -> tuple[Any, ...]:
    """Coordinates of the ribs' ring from ``z_low`` (mm) up: the slices ``sl``, ``x, y, z``,
    the cavity's half width ``a``, the elliptic radius ``rho`` (1 on the cavity's wall) and
    ``theta``, the angle around the body (0 at the back, 1 at the front)."""
    lo = max(0, int(np.searchsorted(bld.z1, z_low)))
    sl = (slice(lo, bld.shape[0]), slice(None), slice(None))
    x, y, z = bld.x[sl], bld.y[sl], bld.z[sl]
    a = body.cavity_a[sl[0], None, None]
    b = np.where(y < 0, body.cavity_b_ant[sl[0], None, None], body.cavity_b_post[sl[0], None, None])
    rho = np.sqrt((x / a) ** 2 + (y / b) ** 2)
    theta = np.arctan2(np.abs(x) / a, y / b) / np.pi
    return sl, x, y, z, a, rho, theta


@dataclass(frozen=True)
class RibShape:
    """Ribs as real CT shows them (see :func:`paint_ribs`).

    Attributes:
        thickness_mm: rib thickness (radial, mm) where it leaves the spine; its height along z
            is 1.3 times that.
        taper: thickness at the rib's front end over that at the spine (real anterior ribs
            are thinner, and thin slices cut them obliquely).
        cortex_mm: cortical shell around the marrow (real ribs: ~0.5-1.5 mm, so that their median
            is a few hundred HU, not the cortex's ~900).
        cartilage: whether costal cartilage (~120 HU, labelled bone as TotalSegmentator's
            ``costal_cartilages`` is in vetseg's mapping) joins the upper ribs' front ends to
            the sternum, rising towards it.
        cartilage_rise_mm: how far a cartilage rises from its rib's end to the midline.
    """

    thickness_mm: float = 8.0
    taper: float = 0.65
    cortex_mm: float = 1.0
    cartilage: bool = True
    cartilage_rise_mm: float = 40.0


def _paint_real_ribs(
    bld: Builder,
    body: Body,
    z_range: tuple[float, float],
    period: float,
    drop: float,
    reach: tuple[float, float],
    sternum: tuple[float, float] | None,
    ribs: RibShape,
) -> None:
    """:func:`paint_ribs` with ``ribs``: shell and marrow, tapering, costal cartilage."""
    bone = ORGAN_ID["bone"]
    t0 = ribs.thickness_mm
    sl, x, y, z, a, rho, theta = _ring_frame(bld, body, z_range[0] - drop)
    # Which rib a voxel would belong to: on the rib, z falls by `drop` from the spine to the
    # front end; on its cartilage (beyond the end) z rises again towards the sternum.
    end = np.interp(z + drop * theta, z_range, reach)  # first guess of this rib's end
    along = np.minimum(theta, end)
    past = np.maximum(theta - end, 0.0) / np.maximum(1.0 - end, 1e-3)
    z_spine = z + drop * along - ribs.cartilage_rise_mm * past
    end = np.interp(z_spine, z_range, reach)
    thick = t0 * (1.0 - (1.0 - ribs.taper) * np.clip(theta / end, 0.0, 1.0))
    out = (rho - 1.0) * a - 0.5 * thick  # mm outwards from the middle of the rib's ring
    along_z = np.mod(z_spine - z_range[0], period)  # mm into this rib's height
    height = 1.3 * thick
    section = (np.abs(out) < 0.5 * thick) & (along_z < height)
    section &= (z_spine > z_range[0] - 0.5 * period) & (z_spine < z_range[1]) & (theta > 0.08)
    rib = section & (theta < end)
    bld.paint(sl, rib, "bone_cortex", bone)
    depth = np.minimum(0.5 * thick - np.abs(out), np.minimum(along_z, height - along_z))
    bld.paint(sl, rib & (depth > ribs.cortex_mm), "bone_marrow", bone)
    if ribs.cartilage:
        # The two lowest (floating) ribs end free; the others' cartilage runs to the sternum.
        true_rib = z_spine > z_range[0] + 1.5 * period
        cart = section & (theta >= end) & (theta < 0.96) & true_rib
        bld.paint(sl, cart, "cartilage", bone)
    if sternum is not None:
        out = (rho - 1.0) * a - 0.5 * t0
        front = (np.abs(x) < sternum[1]) & (y < 0) & (np.abs(out) < 0.6 * t0)
        front &= (z > sternum[0]) & (np.mod((z - z_range[0]) / period, 1.0) < 0.7)
        bld.paint(sl, front, "bone_cortex", bone)
        core = front & (np.abs(x) < 0.7 * sternum[1]) & (np.abs(out) < 0.4 * t0)
        bld.paint(sl, core, "bone_marrow", bone)


def diaphragm(bld: Builder, domes: list[tuple[float, float, float, float, float]]) -> np.ndarray:
    """Diaphragm height z (mm) over the axial plane, [y, x]: the highest of paraboloid domes.

    Each dome is (x, y, top z, radius mm, depth mm): ``depth`` below the top at ``radius``.
    """
    x, y = bld.x1[None, :], bld.y1[:, None]
    floor = np.full((bld.shape[1], bld.shape[2]), -1e4, dtype=np.float32)
    for dx, dy, top, radius, depth in domes:
        floor = np.maximum(floor, top - depth * ((x - dx) ** 2 + (y - dy) ** 2) / radius**2)
    return floor


def clip(
    bld: Builder,
    sl: tuple[slice, slice, slice],
    mask: np.ndarray,
    body: Body,
    below: np.ndarray | None,
) -> np.ndarray:
    """Keep ``mask`` inside the body cavity and, when ``below`` is given, under the diaphragm."""
    mask = mask & body.cavity[sl]
    if below is not None:
        mask &= bld.z[sl] < below[sl[1], sl[2]][None] - 2.0
    return mask


def liver_vessels(bld: Builder, sl: tuple[slice, slice, slice], cell_mm: float) -> None:
    """Portal and hepatic vein branches inside the liver label within ``sl``."""
    liver = bld.labels[sl] == ORGAN_ID["liver"]
    g1 = smooth_noise(bld.rng, liver.shape, cell_mm / bld.spacing[0])
    g2 = smooth_noise(bld.rng, liver.shape, cell_mm / bld.spacing[0])
    vessels = liver & (np.abs(g1) < 0.15) & (np.abs(g2) < 0.25)
    bld.paint(sl, vessels, "liver_vessel", ORGAN_ID["liver"])


def paint_ilium(
    bld: Builder,
    spine_y: float,
    z_crest: float,
    half_span: float,
    thickness: float,
    z_bottom: float | None = None,
) -> None:
    """Human iliac wings: curved plates from the sacroiliac joints around to the front, from
    ``z_bottom`` (default: the volume's bottom) up to the crest at ``z_crest``."""
    sl = bld.box((0.0, spine_y, z_crest / 2), (200.0, 200.0, z_crest / 2 + 10))
    x, y, z = bld.local(sl, (0.0, 0.0, 0.0))
    rx, ry = 0.9 * half_span, 45.0
    u = (np.abs(x) - half_span) / rx
    v = (y - spine_y + 15.0) / ry
    rho = np.sqrt(u**2 + v**2)
    phi = np.arctan2(v, u)
    crest = z_crest + 12.0 * np.cos(phi)
    wing = (np.abs(rho - 1.0) * rx < thickness / 2) & (phi > -1.1) & (phi < 1.8) & (z < crest)
    if z_bottom is not None:
        wing &= z > z_bottom
    bld.paint(sl, wing, "bone_cortex", ORGAN_ID["bone"])
    bld.paint(sl, wing & (np.abs(rho - 1.0) * rx < thickness / 4), "bone_marrow", ORGAN_ID["bone"])
