"""The human torso recipe (adult, iliac crests to mid thorax)."""

from __future__ import annotations

import numpy as np

from vetseg.data.phantoms.anatomy import (
    clip,
    diaphragm,
    interp,
    liver_vessels,
    paint_body,
    paint_gut_sac,
    paint_heart,
    paint_ilium,
    paint_kidney,
    paint_lungs,
    paint_ribs,
    paint_spine,
    paint_viscera,
)
from vetseg.data.phantoms.shapes import ORGAN_ID, Builder


def paint_human(bld: Builder) -> None:
    """A human torso from the iliac crests to the mid thorax (numbers in mm, adult size)."""
    rng = bld.rng
    z = bld.z1
    size = 1.0 + 0.05 * rng.standard_normal()
    a = interp(z, [(0, 165), (60, 158), (130, 150), (230, 158), (340, 162)], 0.03, rng) * size
    b_ant = interp(z, [(0, 98), (130, 102), (230, 98), (340, 92)], 0.05, rng) * size
    b_post = interp(z, [(0, 92), (340, 98)], 0.03, rng) * size
    # The table under the patient's back: two carbon shells around foam, curved up at the sides.
    table_y = float(b_post.max()) + 2.0
    tx, ty = bld.x1[None, None, :], bld.y1[None, :, None]
    surface = table_y - tx**2 / 1200.0
    depth = ty - surface
    table = np.broadcast_to((depth > 0) & (depth < 22.0), bld.shape)
    bld.paint((), table, "foam", 0)
    bld.paint((), table & np.broadcast_to((depth < 2.5) | (depth > 19.5), bld.shape), "table", 0)

    body = paint_body(
        bld, a, b_ant, b_post, rng.uniform(10, 30), rng.uniform(9, 14), (55.0, 45.0), 2.3
    )
    z_right = 218.0 + rng.normal(0, 10)
    z_left = z_right - 12.0 + rng.normal(0, 4)
    floor = diaphragm(bld, [(-70.0, 5.0, z_right, 120.0, 70.0), (75.0, 5.0, z_left, 110.0, 70.0)])
    abdomen = body.cavity & (bld.z < floor[None])
    thorax = body.cavity & (bld.z >= floor[None])
    paint_viscera(bld, abdomen, loop_mm=24.0, gas_share=0.12, content="fluid")
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

    paint_gut_sac(
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
        bld.paint(sl, clip(bld, sl, r < 1.0, body, floor), "liver", ORGAN_ID["liver"])
    liver_box = bld.box((-20.0, -10.0, z_right - 68), (130.0, 100.0, 90.0))
    liver_vessels(bld, liver_box, cell_mm=45.0)
    sl, inside = bld.tube((-24.0, spine_y - 25.0), (13.0, 10.0), (0.0, z_right - 40))
    bld.paint(sl, inside, "vein", 0)

    spleen = 1.0 + 0.1 * rng.standard_normal()
    centre = (0.62 * float(body.cavity_a.mean()) + rng.normal(0, 4), 30.0, z_left - 50)
    sl, r = bld.ellipsoid(centre, (25 * spleen, 55 * spleen, 50 * spleen), -45.0, 0.12)
    bld.paint(sl, clip(bld, sl, r < 1.0, body, floor), "spleen", ORGAN_ID["spleen"])

    kidney = 1.0 + 0.06 * rng.standard_normal()
    semi = (28 * kidney, 23 * kidney, 55 * kidney)
    right = (-62.0 + rng.normal(0, 4), spine_y + 14, z_right - 125 + rng.normal(0, 6))
    left = (62.0 + rng.normal(0, 4), spine_y + 14, z_left - 105 + rng.normal(0, 6))
    paint_kidney(bld, right, semi, medial_sign=-1.0, label=ORGAN_ID["kidney_right"], tilt_deg=35)
    paint_kidney(bld, left, semi, medial_sign=1.0, label=ORGAN_ID["kidney_left"], tilt_deg=35)

    dia = body.cavity & (np.abs(bld.z - floor[None]) < 0.6 * bld.spacing[2])
    bld.paint((), dia, "muscle", 0)
    mediastinum = (np.abs(bld.x - 8.0) < 30.0) & (bld.y < spine_y + 5)
    paint_lungs(bld, body, floor, mediastinum, vessel_cell_mm=28.0)
    sl, inside = bld.tube((14.0, spine_y - 28.0), (12.0, 12.0), (0.0, z_left + 80))
    bld.paint(sl, inside & thorax[sl], "artery", 0)
    heart = 1.0 + 0.06 * rng.standard_normal()
    centre = (22.0 + rng.normal(0, 5), -22.0, z_left + 48 + rng.normal(0, 5))
    paint_heart(bld, centre, (62 * heart, 48 * heart, 55 * heart), -35.0, floor)

    widen = np.interp(z, [0, 25, 55], [2.3, 1.7, 1.0]).astype(np.float32)
    paint_spine(bld, spine_y, (22.0, 16.0), 9.0, 36.0, 30.0, 45.0, widen)
    paint_ribs(bld, body, (z_right - 70, 420.0), 30.0, 9.0, 75.0, (0.45, 0.85), (z_right + 5, 16.0))
    paint_ilium(bld, spine_y, z_crest=55.0 + rng.normal(0, 8), half_span=70.0, thickness=6.0)
