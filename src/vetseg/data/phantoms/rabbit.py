"""The rabbit torso recipe (a ~2 kg rabbit, pelvis to thoracic inlet)."""

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
    paint_kidney,
    paint_lungs,
    paint_ribs,
    paint_spine,
    paint_viscera,
)
from vetseg.data.phantoms.shapes import ORGAN_ID, Builder


def paint_rabbit(bld: Builder) -> None:
    """A rabbit torso from the pelvis to the thoracic inlet (numbers in mm, a ~2 kg rabbit)."""
    rng = bld.rng
    z = bld.z1
    size = 1.0 + 0.05 * rng.standard_normal()
    a = interp(
        z, [(0, 28), (30, 33), (80, 38), (140, 38), (175, 32), (205, 27), (235, 24)], 0.03, rng
    )
    b_ant = interp(z, [(0, 28), (60, 36), (140, 36), (180, 33), (235, 28)], 0.04, rng)
    b_post = interp(z, [(0, 24), (120, 26), (235, 25)], 0.03, rng)
    a, b_ant, b_post = a * size, b_ant * size, b_post * size
    body = paint_body(
        bld, a, b_ant, b_post, rng.uniform(1.5, 4.0), rng.uniform(3.0, 4.5), (13.0, 7.0), 2.0
    )
    z_dia = 172.0 + rng.normal(0, 5)
    floor = diaphragm(bld, [(0.0, -5.0, z_dia, 40.0, 24.0)])
    abdomen = body.cavity & (bld.z < floor[None])
    thorax = body.cavity & (bld.z >= floor[None])
    paint_viscera(bld, abdomen, loop_mm=7.0, gas_share=0.15, content="digesta")
    bld.paint((), thorax, "fat", 0)

    spine_y = 5.0 + rng.normal(0, 0.8)
    for side in (-1.0, 1.0):
        sl, inside = bld.tube((side * 9.0, spine_y - 7.0), (6.0, 5.0), (15.0, 150.0))
        bld.paint(sl, inside, "muscle", 0)
    sl, inside = bld.tube((3.0, spine_y - 8.0), (2.2, 2.2), (0.0, z_dia + 25))
    bld.paint(sl, inside, "artery", 0)

    # Bladder, then the large caecum with its spiral fold, gas and digesta.
    sl, r = bld.ellipsoid((0.0, -14.0, 14.0), (11, 10, 14), 0.0, 0.1)
    bld.paint(sl, clip(bld, sl, r < 1.0, body, None), "fluid", 0)
    caecum = 1.0 + 0.06 * rng.standard_normal()
    centre = (rng.normal(-3, 3), -9.0, 82.0 + rng.normal(0, 6))
    paint_gut_sac(
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
        bld.paint(sl, clip(bld, sl, r < 1.0, body, floor), "liver", ORGAN_ID["liver"])
    liver_vessels(bld, bld.box((-8.0, -4.0, z_dia - 25), (45.0, 35.0, 30.0)), cell_mm=14.0)
    # The stomach after the liver: it presses into the liver's caudal surface on the left.
    paint_gut_sac(bld, (13.0, 0.0, z_dia - 36), (18, 16, 18), 20.0, "digesta", 0.15, 1.0, folds=0.0)

    spleen = 1.0 + 0.08 * rng.standard_normal()
    centre = (26.0 + rng.normal(0, 1.5), 4.0, z_dia - 52 + rng.normal(0, 3))
    sl, r = bld.ellipsoid(centre, (4.0 * spleen, 8.0 * spleen, 23.0 * spleen), 30.0, 0.08)
    bld.paint(sl, clip(bld, sl, r < 1.0, body, floor), "spleen", ORGAN_ID["spleen"])

    kidney = 1.0 + 0.06 * rng.standard_normal()
    semi = (9.0 * kidney, 8.0 * kidney, 19.5 * kidney)
    # The rabbit's right kidney lies cranial to the left (by about half a kidney length).
    right = (-15.0 + rng.normal(0, 1), spine_y + 4, z_dia - 40 + rng.normal(0, 3))
    left = (15.0 + rng.normal(0, 1), spine_y + 4, right[2] - 26 + rng.normal(0, 3))
    paint_kidney(bld, right, semi, medial_sign=-1.0, label=ORGAN_ID["kidney_right"], tilt_deg=20)
    paint_kidney(bld, left, semi, medial_sign=1.0, label=ORGAN_ID["kidney_left"], tilt_deg=20)

    dia = body.cavity & (np.abs(bld.z - floor[None]) < 0.6 * bld.spacing[2])
    bld.paint((), dia, "muscle", 0)
    mediastinum = (np.abs(bld.x - 2.0) < 6.0) & (bld.y < spine_y + 2)
    paint_lungs(bld, body, floor, mediastinum, vessel_cell_mm=8.0)
    # Thymus: rabbits keep a large one in the cranial mediastinum.
    sl, r = bld.ellipsoid((0.0, -12.0, z_dia + 48), (9.0, 7.0, 13.0), 0.0, 0.1)
    bld.paint(sl, (r < 1.0) & thorax[sl], "muscle", 0)
    heart = 1.0 + 0.06 * rng.standard_normal()
    centre = (4.0 + rng.normal(0, 1), -8.0, z_dia + 22 + rng.normal(0, 2))
    paint_heart(bld, centre, (12.5 * heart, 11.5 * heart, 15.0 * heart), -25.0, floor)

    widen = np.interp(z, [0, 20, 40], [1.5, 1.2, 1.0]).astype(np.float32)
    paint_spine(bld, spine_y, (5.0, 4.0), 2.6, 15.0, 7.0, 11.0, widen)
    paint_ribs(bld, body, (z_dia - 28, 300.0), 9.0, 2.6, 22.0, (0.5, 0.9), (z_dia - 6, 3.5))
    # Ilium: narrow bars beside the sacrum that part caudally.
    for side in (-1.0, 1.0):
        sl = bld.box((side * 14.0, spine_y, 22.0), (12.0, 10.0, 24.0))
        x, y, zz = bld.local(sl, (0.0, 0.0, 0.0))
        cx = side * (8.0 + 0.25 * np.clip(45.0 - zz, 0, None))
        cy = spine_y - 1.0 - 0.12 * np.clip(45.0 - zz, 0, None)
        r = np.sqrt(((x - cx) / 2.6) ** 2 + ((y - cy) / 4.2) ** 2)
        bone = (r < 1.0) & (zz < 45.0)
        bld.paint(sl, bone, "bone_cortex", ORGAN_ID["bone"])
        bld.paint(sl, bone & (r < 0.55), "bone_marrow", ORGAN_ID["bone"])
