"""The wide-variety human recipe: pelvis to lung apices, 12 organs, habitus, arms, table, metal.

Numbers are adult mm on the recipe's frame (the Builder's spacing carries the body's scale):
z = 0 lies below the femoral heads, the iliac crest near z = 200, the right diaphragm dome near
363, the lung apices near 610, the frame ends at 660 (base of the neck). x runs to the
patient's left, y posterior, both from the body's axis. Positions of the abdominal organs are
those of the default human recipe (:mod:`.human`) moved up by 145 mm, so both share one anatomy.

Labels: :data:`vetseg.labels.HUMAN_ORGANS` (the 7 core organs, then stomach, pancreas,
gallbladder, urinary bladder, aorta). Metal (prostheses, screws, clips, a port) is unlabelled;
arm bones are ``bone``.
"""

from __future__ import annotations

import dataclasses

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
from vetseg.data.phantoms.shapes import ORGAN_ID, Builder, smooth_noise
from vetseg.data.phantoms.tubes import capsule_chain, tube_along_z
from vetseg.data.phantoms.variety import WideSetup

_BONE = ORGAN_ID["bone"]


def _bone(bld: Builder, sl: tuple[slice, slice, slice], r: np.ndarray, cortex: float) -> None:
    """A long bone from a normalised radius: cortex outside ``1 - cortex``, fatty marrow inside."""
    bld.paint(sl, r < 1.0, "bone_cortex", _BONE)
    bld.paint(sl, r < 1.0 - cortex, "yellow_marrow", _BONE)


def _paint_table(bld: Builder, setup: WideSetup, y_top: float, outside: np.ndarray) -> None:
    """A curved carbon table (two shells around foam) under a foam pad, below the back."""
    rng, s = bld.rng, setup.size
    pad = rng.uniform(0.0, 25.0) / s
    thick = rng.uniform(15.0, 35.0) / s
    shell = rng.uniform(1.5, 3.5) / s
    half_w = rng.uniform(200.0, 260.0) / s
    curve = rng.uniform(900.0, 2500.0) / s
    tx, ty = bld.x1[None, :], bld.y1[:, None]
    surface = y_top + pad - tx**2 / curve
    depth = ty - surface
    on_table = np.abs(tx) < half_w
    table = (depth > 0) & (depth < thick) & on_table
    pad_mask = (depth <= 0) & (depth > -pad) & (np.abs(tx) < half_w - 15.0 / s)
    for mask, tissue in (
        (pad_mask, "pad"),
        (table, "foam"),
        (table & ((depth < shell) | (depth > thick - shell)), "table"),
    ):
        full = np.broadcast_to(mask[None], bld.shape)
        bld.paint((), full, tissue, 0)
        outside |= full


def _paint_arms(bld: Builder, setup: WideSetup, a_max: float, outside: np.ndarray) -> None:
    """Arms beside the body: skin, fat, muscle, humerus above the elbow, radius and ulna below."""
    rng = bld.rng
    fat = 3.0 + 0.3 * setup.fat_mm
    gap = rng.uniform(3.0, 25.0)
    for side in (-1.0, 1.0):
        radius = 45.0 + 0.4 * setup.fat_mm
        cx = side * (a_max + gap + radius + rng.normal(0, 4))
        cy = rng.uniform(-15.0, 35.0)
        knots = [
            (0.0, cx, cy, radius * 0.8),
            (270.0, cx, cy, radius * 0.9),
            (620.0, cx, cy, radius),
        ]
        sl, rho = tube_along_z(bld, knots)
        scale = np.interp(bld.z1[sl[0]], [0.0, 270.0, 620.0], [0.8, 0.9, 1.0])
        radius_here = (scale * radius)[:, None, None]
        arm = rho < 1.0
        bld.paint(sl, arm, "skin", 0)
        bld.paint(sl, rho < 1.0 - 2.0 / radius_here, "fat", 0)
        bld.paint(sl, rho < 1.0 - (2.0 + fat) / radius_here, "muscle", 0)
        outside[sl] |= arm
        z_elbow = 270.0 + rng.normal(0, 10)
        sl, r = tube_along_z(bld, [(z_elbow, cx, cy, 11.0), (630.0, cx, cy, 12.0)])
        _bone(bld, sl, r, 0.4)
        for dx, dy in ((-10.0, -5.0), (10.0, 5.0)):
            sl, r = tube_along_z(
                bld, [(20.0, cx + dx, cy + dy, 6.5), (z_elbow - 8, cx + dx, cy + dy, 7.5)]
            )
            _bone(bld, sl, r, 0.5)


def _paint_pelvis_bones(bld: Builder, spine_y: float) -> list[tuple[float, float, float]]:
    """Femoral heads and necks, trochanters, femoral shafts, acetabula, pubic and ischial rami.

    Returns:
        The femoral head centres (x, y, z), right then left (for a hip prosthesis).
    """
    rng = bld.rng
    heads = []
    for side in (-1.0, 1.0):
        head = (side * (88.0 + rng.normal(0, 3)), 2.0 + rng.normal(0, 3), 55.0 + rng.normal(0, 5))
        heads.append(head)
        # Acetabulum: a shell around the head, open downwards and outwards.
        sl, r = bld.ellipsoid(head, (31.0, 31.0, 31.0), 0.0, lumpiness=0.0)
        x, _, z = bld.local(sl, head)
        cup = (r < 1.0) & (r > 0.8) & ((side * x < 8.0) | (z > 5.0))
        bld.paint(sl, cup, "bone_cortex", _BONE)
        sl, r = bld.ellipsoid(head, (23.0, 23.0, 23.0), 0.0, lumpiness=0.0)
        bld.paint(sl, r < 1.0, "bone_cortex", _BONE)
        bld.paint(sl, r < 0.85, "bone_marrow", _BONE)
        trochanter = (side * 130.0, head[1] + 12.0, head[2] - 18.0)
        sl, r = capsule_chain(bld, [head, trochanter], [15.0, 17.0])
        bld.paint(sl, r < 1.0, "bone_cortex", _BONE)
        bld.paint(sl, r < 0.75, "bone_marrow", _BONE)
        shaft_top = (side * 126.0, head[1] + 10.0, head[2] - 25.0)
        sl, r = capsule_chain(bld, [shaft_top, (side * 118.0, head[1] + 5.0, -60.0)], [15.0, 14.0])
        _bone(bld, sl, r, 0.35)
        # Pubic ramus to the symphysis, ischium down and back.
        pubis = [head, (side * 45.0, -45.0, head[2] - 10.0), (side * 6.0, -62.0, head[2] - 18.0)]
        sl, r = capsule_chain(bld, pubis, [14.0, 9.0, 10.0])
        bld.paint(sl, r < 1.0, "bone_cortex", _BONE)
        bld.paint(sl, r < 0.6, "bone_marrow", _BONE)
        ischium = [head, (side * 60.0, head[1] + 28.0, head[2] - 35.0), (side * 52.0, 30.0, 0.0)]
        sl, r = capsule_chain(bld, ischium, [16.0, 13.0, 12.0])
        bld.paint(sl, r < 1.0, "bone_cortex", _BONE)
        bld.paint(sl, r < 0.6, "bone_marrow", _BONE)
        # The ilium's lower body joins the acetabulum to the wing above.
        ilium = [head, (side * 75.0, spine_y + 5.0, 120.0)]
        sl, r = capsule_chain(bld, ilium, [20.0, 15.0])
        bld.paint(sl, r < 1.0, "bone_cortex", _BONE)
        bld.paint(sl, r < 0.7, "bone_marrow", _BONE)
    return heads


def _paint_shoulder_girdle(bld: Builder, b_ant_top: float, b_post_top: float) -> None:
    """Clavicles in front at the thoracic inlet and scapulae on the back of the upper chest."""
    rng = bld.rng
    for side in (-1.0, 1.0):
        clavicle = [
            (side * 18.0, -b_ant_top + 22.0, 625.0),
            (side * 80.0, -b_ant_top + 18.0, 632.0),
            (side * 145.0, -20.0, 645.0),
        ]
        sl, r = capsule_chain(bld, clavicle, [8.0, 7.0, 8.0])
        bld.paint(sl, r < 1.0, "bone_cortex", _BONE)
        bld.paint(sl, r < 0.55, "bone_marrow", _BONE)
        centre = (side * (95.0 + rng.normal(0, 5)), b_post_top - 32.0, 555.0 + rng.normal(0, 8))
        sl, r = bld.ellipsoid(centre, (55.0, 5.0, 75.0), side * 28.0, lumpiness=0.05)
        bld.paint(sl, r < 1.0, "bone_cortex", _BONE)


def _paint_metal(
    bld: Builder,
    setup: WideSetup,
    spine_y: float,
    heads: list[tuple[float, float, float]],
    gb_fossa: tuple[float, float, float],
) -> None:
    """The setup's metal: hip prosthesis (one or both), pedicle screws and rods, clips, a port.

    Args:
        bld: the case being drawn.
        setup: its setup (``setup.metal`` says which).
        spine_y: y of the vertebral bodies (screws).
        heads: femoral head centres, right then left (prostheses).
        gb_fossa: the gallbladder fossa (clips after a cholecystectomy).
    """
    rng = bld.rng
    if setup.metal in ("hip", "hips"):
        chosen = heads if setup.metal == "hips" else [heads[int(rng.integers(2))]]
        for head in chosen:
            side = float(np.sign(head[0]))
            sl, r = bld.ellipsoid(head, (27.0, 27.0, 27.0), 0.0, lumpiness=0.0)
            x, _, z = bld.local(sl, head)
            bld.paint(sl, (r < 1.0) & (r > 0.82) & ((side * x < 8.0) | (z > 5.0)), "metal", 0)
            sl, r = bld.ellipsoid(head, (15.0, 15.0, 15.0), 0.0, lumpiness=0.0)
            bld.paint(sl, r < 1.0, "metal", 0)
            stem = [
                head,
                (side * 122.0, head[1] + 10.0, head[2] - 25.0),
                (side * 118.0, head[1] + 5, -40.0),
            ]
            sl, r = capsule_chain(bld, stem, [7.0, 7.5, 4.5])
            bld.paint(sl, r < 1.0, "metal", 0)
    elif setup.metal == "spine":
        canal_y = spine_y + 16.0 + 9.0 * 1.1
        levels = int(rng.integers(2, 5))
        z_low = rng.uniform(200.0, 260.0)
        zs = [z_low + 36.0 * k for k in range(levels)]
        for side in (-1.0, 1.0):
            for z in zs:
                screw = [(side * 24.0, canal_y + 14.0, z), (side * 6.0, spine_y - 6.0, z)]
                sl, r = capsule_chain(bld, screw, [3.2, 2.8])
                bld.paint(sl, r < 1.0, "metal", 0)
            knots = [
                (zs[0] - 8, side * 25.0, canal_y + 16.0, 3.0),
                (zs[-1] + 8, side * 25.0, canal_y + 16.0, 3.0),
            ]
            sl, r = tube_along_z(bld, knots)
            bld.paint(sl, r < 1.0, "metal", 0)
    elif setup.metal == "clips":
        for _ in range(int(rng.integers(2, 7))):
            centre = tuple(c + rng.normal(0, 12) for c in gb_fossa)
            sl, r = bld.ellipsoid(centre, (1.6, 1.6, 4.0), rng.uniform(0, 180), lumpiness=0.0)
            bld.paint(sl, r < 1.0, "metal", 0)
    elif setup.metal == "port":
        side = float(rng.choice([-1.0, 1.0]))
        centre = (side * 70.0, -70.0, 585.0 + rng.normal(0, 10))
        sl, r = bld.ellipsoid(centre, (14.0, 5.0, 14.0), 0.0, lumpiness=0.0)
        bld.paint(sl, r < 1.0, "metal", 0)


def paint_human_wide(bld: Builder, setup: WideSetup) -> None:
    """Draw the wide-variety human on ``bld`` (see the module notes for the frame).

    Args:
        bld: the case's drawing board, its spacing already divided by ``setup.size``.
        setup: the case's patient, exam and scanner.
    """
    rng = bld.rng
    z = bld.z1
    jit = setup.jitter_mm

    def j(scale: float = 1.0) -> float:
        return float(rng.normal(0.0, jit * scale))

    fat_extra = setup.fat_mm - 20.0
    a_knots = [(0, 172), (60, 170), (145, 165), (205, 158), (275, 150), (375, 158), (485, 162)]
    a_knots += [(560, 165), (620, 150), (660, 140)]
    a = interp(z, a_knots, 0.03, rng) + fat_extra
    b_ant = interp(
        z, [(0, 85), (80, 95), (145, 98), (275, 102), (375, 98), (485, 92), (600, 85), (660, 75)],
        0.05, rng,
    )  # fmt: skip
    b_post = interp(z, [(0, 100), (145, 92), (485, 98), (660, 90)], 0.03, rng)
    b_ant = ((b_ant + 1.3 * fat_extra) * setup.ap_ratio).astype(np.float32)
    b_post = ((b_post + 0.8 * fat_extra) * setup.ap_ratio).astype(np.float32)

    # Things outside the skin that are not air: the table and its pad, the arms.
    outside = np.zeros(bld.shape, dtype=bool)
    if setup.table:
        # The back sinks a little into the pad.
        _paint_table(bld, setup, float(b_post.max()) - 2.0, outside)
    if setup.arms == "down":
        # Arms hang straight and rest against the chest; the waist leaves a gap.
        _paint_arms(bld, setup, 160.0 + fat_extra, outside)

    body = paint_body(
        bld, a, b_ant, b_post, setup.fat_mm, rng.uniform(8, 15), (55.0, 45.0), rng.uniform(2.1, 2.6)
    )
    z_right = 363.0 + rng.normal(0, 10)
    z_left = z_right - 12.0 + rng.normal(0, 4)
    floor = diaphragm(bld, [(-70.0, 5.0, z_right, 120.0, 70.0), (75.0, 5.0, z_left, 110.0, 70.0)])
    abdomen = body.cavity & (bld.z < floor[None])
    thorax = body.cavity & (bld.z >= floor[None])
    content = "oral_contrast" if setup.oral_contrast == "positive" else "fluid"
    paint_viscera(bld, abdomen, 24.0, rng.uniform(0.04, 0.2), content, setup.bowel_share)
    bld.paint((), thorax, "fat", 0)

    spine_y = 30.0 + rng.normal(0, 3)
    # Pelvic side walls: obturator, iliopsoas and gluteal muscle outside the true pelvis.
    sl = bld.box((0.0, 0.0, 90.0), (250.0, 250.0, 90.0))
    x, y, zz = bld.x[sl], bld.y[sl], bld.z[sl]
    half_x = np.interp(bld.z1[sl[0]], [0.0, 100.0, 170.0], [62.0, 72.0, 400.0])[:, None, None]
    walls = ((x / half_x) ** 2 + ((y - 5.0) / 62.0) ** 2 > 1.0) & (zz < 170.0)
    bld.paint(sl, walls & abdomen[sl], "muscle", 0)
    sl, r = tube_along_z(bld, [(5.0, 0.0, spine_y - 15, 14.0), (120.0, 0.0, spine_y - 20, 16.0)])
    bld.paint(sl, (r < 1.0) & abdomen[sl], "bowel_wall", 0)  # rectum
    bld.paint(sl, (r < 0.75) & abdomen[sl], "digesta", 0)
    for side in (-1.0, 1.0):
        knots = [(40.0, side * 75, spine_y - 15, 24.0), (145.0, side * 45, spine_y - 5, 22.0)]
        knots += [(245.0, side * 38, spine_y - 5, 14.0), (345.0, side * 34, spine_y - 5, 6.0)]
        sl, r = tube_along_z(bld, knots)
        bld.paint(sl, r < 1.0, "muscle", 0)  # psoas

    z_bif = 195.0 + rng.normal(0, 8)
    ivc = [(180.0, -24.0, spine_y - 25, 11.5), (z_right - 40, -24.0, spine_y - 25, 12.0)]
    sl, r = tube_along_z(bld, ivc)
    bld.paint(sl, r < 1.0, "vein", 0)
    for side in (-1.0, 1.0):
        iliac = [(8.0, spine_y - 26, z_bif), (side * 45, spine_y - 18, 130.0)]
        iliac += [(side * 68, 0.0, 70.0), (side * 80, -22.0, 5.0)]
        sl, r = capsule_chain(bld, iliac, [7.0, 6.0, 5.5, 5.0])
        bld.paint(sl, r < 1.0, "artery", 0)

    z_pan = z_right - 110.0 + j()
    sl, r = capsule_chain(
        bld,
        [
            (10.0, spine_y - 40, z_pan - 5),
            (12.0, spine_y - 60, z_pan - 25),
            (15.0, -45.0, z_pan - 120),
        ],
        [4.5, 4.0, 3.5],
    )
    bld.paint(sl, (r < 1.0) & abdomen[sl], "artery", 0)  # superior mesenteric artery
    duodenum = [
        (-20.0, spine_y - 60, z_pan + 28),
        (-60.0, spine_y - 40, z_pan + 18),
        (-62.0, spine_y - 38, z_pan - 35),
        (-25.0, spine_y - 42, z_pan - 52),
        (12.0, spine_y - 45, z_pan - 45),
    ]
    sl, r = capsule_chain(bld, duodenum, [14.0, 13.0, 13.0, 12.0, 11.0])
    bld.paint(sl, (r < 1.0) & abdomen[sl], "bowel_wall", 0)
    bld.paint(sl, (r < 0.72) & abdomen[sl], content, 0)

    # Stomach: wall, mottled content (or oral contrast, or water) and a gas cap.
    gas = setup.stomach_gas * (0.5 if setup.oral_contrast == "water" else 1.0)
    stomach_content = {"positive": "oral_contrast", "water": "fluid"}.get(
        setup.oral_contrast, "fluid"
    )
    ss = setup.stomach_scale
    centre = (70.0 + j(), -40.0 + j(), z_left - 55.0 + j())
    # A collapsed stomach (stomach_collapse > 0): narrower, a thick enhancing wall with rugal
    # folds, little gas, food as dense as soft tissue; 0 draws the distended sac of before.
    c = setup.stomach_collapse
    food = c > 0 and setup.oral_contrast == "none"
    paint_gut_sac(
        bld, centre, (45 * ss * (1 - 0.4 * c), 38 * ss * (1 - 0.45 * c), 55 * ss), 30.0,
        stomach_content, gas * (1 - 0.7 * c), 4.0 + 8.0 * c, folds=0.25 * c,
        label=ORGAN_ID["stomach"],
        mottle_hu=8.0 if setup.oral_contrast == "water" else 35.0,
        content_hu=setup.stomach_content_hu if food else None,
    )  # fmt: skip

    ls = setup.liver_scale
    pieces = [
        ((-58.0, -2.0, z_right - 62 - 60 * (ls - 1)), (80.0, 76.0, 76.0), 10.0),
        ((28.0, -45.0, z_right - 40 - 40 * (ls - 1)), (55.0, 30.0, 36.0), -10.0),
    ]
    for centre, semi, rot in pieces:
        semi = tuple(s * ls for s in semi)
        centre = (centre[0] + j(0.8), centre[1] + j(0.6), centre[2])
        sl, r = bld.ellipsoid(centre, semi, rot, lumpiness=0.1)
        bld.paint(sl, clip(bld, sl, r < 1.0, body, floor), "liver", ORGAN_ID["liver"])
    liver_box = bld.box((-20.0, -10.0, z_right - 68), (150.0, 110.0, 110.0))
    liver_vessels(bld, liver_box, cell_mm=45.0)
    sl, r = tube_along_z(
        bld, [(z_right - 120, -24.0, spine_y - 25, 12.0), (z_right + 10, -20.0, spine_y - 22, 13.0)]
    )
    bld.paint(sl, r < 1.0, "vein", 0)  # the IVC through the liver, into the right atrium
    portal = [
        (-5.0, spine_y - 55, z_pan + 5),
        (-30.0, spine_y - 45, z_pan + 30),
        (-48.0, -5.0, z_pan + 45),
    ]
    sl, r = capsule_chain(bld, portal, [7.0, 7.0, 6.0])
    bld.paint(sl, (r < 1.0) & abdomen[sl], "liver_vessel", 0)

    gb_fossa = (-42.0 + j(0.6), -48.0 + j(0.6), z_right - 120.0 - 60 * (ls - 1) + j(0.6))
    if setup.gallbladder_scale > 0:
        g = setup.gallbladder_scale
        sl, r = bld.ellipsoid(gb_fossa, (14.0 * g, 16.0 * g, 35.0 * g), 25.0, lumpiness=0.08)
        inside = clip(bld, sl, r < 1.0, body, floor)
        bld.paint(sl, inside, "gallbladder_wall", ORGAN_ID["gallbladder"])
        bld.paint(sl, inside & (r < 1.0 - 2.0 / (14.0 * g)), "bile", ORGAN_ID["gallbladder"])

    # Pancreas: head in the duodenal loop, neck and body in front of the aorta, tail to the
    # splenic hilum; lobulated (fat between the lobules grows with age).
    p = float(rng.uniform(0.9, 1.25))
    pancreas_id = ORGAN_ID["pancreas"]
    sl, r = bld.ellipsoid((-35.0, spine_y - 45, z_pan - 8), (17 * p, 14 * p, 24 * p), 0.0, 0.1)
    head = clip(bld, sl, r < 1.0, body, floor)
    lobules = smooth_noise(rng, head.shape, 6.0 / bld.spacing[0] + 1.0)
    bld.paint(sl, head, bld.value("pancreas") + 12.0 * lobules[head], pancreas_id)
    chain = [
        (-30.0, spine_y - 47, z_pan),
        (0.0, spine_y - 56, z_pan + 8),
        (35.0, spine_y - 52, z_pan + 14),
        (65.0, spine_y - 32, z_pan + 22),
        (85.0, spine_y - 10, z_pan + 28),
    ]
    sl, r = capsule_chain(bld, chain, [12 * p, 10 * p, 10 * p, 9 * p, 7 * p])
    body_tail = clip(bld, sl, r < 1.0, body, floor)
    lobules = smooth_noise(rng, body_tail.shape, 6.0 / bld.spacing[0] + 1.0)
    bld.paint(sl, body_tail, bld.value("pancreas") + 12.0 * lobules[body_tail], pancreas_id)

    sp = setup.spleen_scale
    centre = (
        0.62 * float(body.cavity_a.mean()) + j(0.5),
        30.0,
        z_left - 50 - 40 * (sp - 1) + j(0.5),
    )
    sl, r = bld.ellipsoid(centre, (25 * sp, 55 * sp, 50 * sp), -45.0, 0.12)
    spleen = clip(bld, sl, r < 1.0, body, floor)
    # Arterial phase: the red and white pulp enhance unevenly (arciform, "zebra" spleen).
    zebra = 35.0 if setup.phase == "arterial" else 4.0
    texture = smooth_noise(rng, spleen.shape, 10.0 / bld.spacing[0] + 1.0)
    bld.paint(sl, spleen, bld.value("spleen") + zebra * texture[spleen], ORGAN_ID["spleen"])

    ks = setup.kidney_scale
    semi = (28 * ks, 23 * ks, 55 * ks)
    out = 62.0 + setup.kidney_lateral_mm
    right = (-out + j(0.6), spine_y + 14, z_right - 125 + j())
    left = (out + j(0.6), spine_y + 14, z_left - 105 + j())
    for centre, sign, organ in ((right, -1.0, "kidney_right"), (left, 1.0, "kidney_left")):
        paint_kidney(
            bld,
            centre,
            semi,
            sign,
            ORGAN_ID[organ],
            35.0,
            collecting_system=True,
            nephrogram=setup.nephrogram,
            renal_sinus=setup.renal_sinus,
            perirenal_fat=setup.perirenal_fat,
        )

    # Urinary bladder behind the symphysis; in a delayed phase excreted contrast layers at the
    # back (dependent when supine) under plain urine.
    radius = (setup.bladder_ml * 1000.0 * 3.0 / (4.0 * np.pi * 1.15 * 0.95)) ** (1.0 / 3.0)
    centre = (j(0.4), -38.0 + j(0.4), 38.0 + radius)
    sl, r = bld.ellipsoid(centre, (1.15 * radius, 0.95 * radius, radius), 0.0, lumpiness=0.06)
    bladder = clip(bld, sl, r < 1.0, body, None)
    bld.paint(sl, bladder, "bowel_wall", ORGAN_ID["urinary_bladder"])
    lumen = bladder & (r < 1.0 - 3.0 / radius)
    bld.paint(sl, lumen, "urine", ORGAN_ID["urinary_bladder"])
    layer_share = rng.uniform(0.0, 0.4)  # drawn in every phase: one anatomy for all phases
    if setup.phase == "delayed":
        _, y, _ = bld.local(sl, centre)
        layer = lumen & (y > 0.95 * radius * (1.0 - 2.0 * layer_share))
        bld.paint(sl, layer, "urine_contrast", ORGAN_ID["urinary_bladder"])

    dia = body.cavity & (np.abs(bld.z - floor[None]) < 0.6 * bld.spacing[2] + 1.0)
    bld.paint((), dia, "muscle", 0)
    apex = 610.0 + rng.normal(0, 10)
    chest = dataclasses.replace(body, cavity=body.cavity & (bld.z < apex))
    mediastinum = (np.abs(bld.x - 8.0) < 30.0) & (bld.y < spine_y + 5)
    paint_lungs(bld, chest, floor, mediastinum, vessel_cell_mm=28.0)
    z_carina = z_left + 115.0 + j(0.5)
    sl, r = tube_along_z(bld, [(z_carina, 0.0, spine_y - 38, 9.0), (670.0, 0.0, spine_y - 45, 9.5)])
    bld.paint(sl, r < 1.0, "muscle", 0)
    bld.paint(sl, r < 0.8, "air", 0)  # trachea
    for side in (-1.0, 1.0):
        sl, r = capsule_chain(
            bld,
            [(0.0, spine_y - 38, z_carina), (side * 42.0, spine_y - 30, z_carina - 28)],
            [7.5, 6.0],
        )
        bld.paint(sl, (r < 1.0) & thorax[sl], "muscle", 0)
        bld.paint(sl, (r < 0.75) & thorax[sl], "air", 0)  # main bronchi
    sl, r = tube_along_z(
        bld, [(z_left - 40, 15.0, spine_y - 20, 7.0), (670.0, 5.0, spine_y - 25, 7.0)]
    )
    bld.paint(sl, r < 1.0, "muscle", 0)  # oesophagus
    heart = float(np.clip(rng.normal(1.0, 0.06), 0.88, 1.2))
    centre = (22.0 + j(0.6), -22.0, z_left + 48 + j(0.6))
    paint_heart(bld, centre, (62 * heart, 48 * heart, 55 * heart), -35.0, floor)

    # Aorta: root, ascending, arch, descending beside the spine, abdominal to the bifurcation.
    aorta = ORGAN_ID["aorta"]
    r_abd = rng.uniform(8.5, 11.5)
    r_thor = r_abd + rng.uniform(1.5, 3.0)
    r_asc = min(r_thor + rng.uniform(1.5, 3.0), 15.0)
    z_arch = z_right + 135.0 + j(0.5)
    descending = [
        (z_bif, 8.0, spine_y - 26, r_abd),
        (z_right - 40, 12.0, spine_y - 26, r_abd * 1.05),
        (z_right + 20, 20.0, spine_y - 14, r_thor),
        (z_arch, 24.0, spine_y - 8, r_thor),
    ]
    sl, r = tube_along_z(bld, descending)
    bld.paint(sl, r < 1.0, "artery", aorta)
    arch = [
        (24.0, spine_y - 8, z_arch),
        (18.0, spine_y - 30, z_arch + 22),
        (6.0, -28.0, z_arch + 14),
        (4.0, -30.0, z_arch - 15),
        (14.0, -28.0, z_left + 95),
    ]
    sl, r = capsule_chain(bld, arch, [r_thor, r_thor, r_asc, r_asc, r_asc])
    bld.paint(sl, r < 1.0, "artery", aorta)
    if rng.random() < 0.35:  # atherosclerotic calcifications in the wall
        for _ in range(int(rng.integers(3, 10))):
            zc = rng.uniform(z_bif, z_right)
            angle = rng.uniform(0, 2 * np.pi)
            centre = (10.0 + r_abd * np.cos(angle), spine_y - 26 + r_abd * np.sin(angle), zc)
            sl, r = bld.ellipsoid(centre, (1.8, 1.8, 3.0), 0.0, lumpiness=0.0)
            bld.paint(sl, r < 1.0, "calcification", aorta)

    widen = np.interp(z, [70, 110, 200], [2.3, 1.7, 1.0]).astype(np.float32)
    paint_spine(bld, spine_y, (22.0, 16.0), 9.0, 36.0, 30.0, 45.0, widen, z_range=(80.0, 670.0))
    paint_ribs(
        bld,
        body,
        (z_right - 70, 640.0),
        30.0,
        9.0,
        75.0,
        (0.45, 0.85),
        (z_right + 5, 16.0),
        setup.rib_shape(),
    )
    paint_ilium(bld, spine_y, 200.0 + rng.normal(0, 8), 70.0, 6.0, z_bottom=100.0)
    heads = _paint_pelvis_bones(bld, spine_y)
    top = min(len(z) - 1, int(np.searchsorted(z, 620.0)))
    _paint_shoulder_girdle(bld, float(b_ant[top]), float(b_post[top]))
    _paint_metal(bld, setup, spine_y, heads, gb_fossa)

    # Whatever a box reached past the skin (a large stomach, a femur) is air again.
    beyond = ~body.inside & ~outside
    bld.hu[beyond] = bld.value("air")
    bld.labels[beyond] = 0
