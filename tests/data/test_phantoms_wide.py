"""Wide-variety human phantoms: phases, organs, volumes, metal, scanner settings, determinism.

Cases are drawn on a coarse grid (3 mm pixels, 5 mm slices) to keep the tests fast; the
generator states every spacing exactly, so volumes in ml do not depend on it.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from vetseg.data.phantoms import (
    ORAL_CONTRAST_STOMACH_HU,
    PHASE_ORGAN_HU_RANGES,
    PHASES,
    REGIONS,
    Phantom,
    WideSetup,
    draw_wide_setup,
    make_phantom,
    make_wide_phantom,
    write_phantom_dataset,
)
from vetseg.errors import InputError
from vetseg.io.image import read_image, read_label
from vetseg.labels import HUMAN_EXTRA_ORGANS, HUMAN_ORGANS

ID = {name: i + 1 for i, name in enumerate(HUMAN_ORGANS)}
CAP = "chest_abdomen_pelvis"


def small(setup: WideSetup, **changes: object) -> WideSetup:
    """``setup`` on a coarse grid (3 mm pixels, 5 mm slices), with ``changes``."""
    coarse = {"pixel_mm": 3.0, "interval_mm": 5.0, "slice_mm": min(setup.slice_mm, 2.5)}
    return dataclasses.replace(setup, **{**coarse, **changes})


@cache
def case(seed: int, phase: str, metal: str = "none", region: str = CAP) -> Phantom:
    """A coarse wide case of ``seed`` with its phase, metal and region set (drawn once)."""
    rng = np.random.default_rng(seed)
    setup = small(
        draw_wide_setup(rng), phase=phase, metal=metal, region=region, z_range=REGIONS[region]
    )
    return make_wide_phantom(setup, rng)


def interior(mask: np.ndarray) -> np.ndarray:
    """``mask`` less one voxel at its in-plane edges: where a radiologist puts an ROI, away
    from the partial volume that the coarse test grid exaggerates (thin organs keep all)."""
    core = ndimage.binary_erosion(mask, structure=np.ones((1, 3, 3), dtype=bool))
    return core if core.sum() > 0.2 * mask.sum() else mask


def volume_ml(p: Phantom, organ: str) -> float:
    """The organ's volume in ml, at the size of an adult (divided by the body scale cubed)."""
    voxel_ml = float(np.prod(p.spacing)) / 1000.0
    return np.count_nonzero(p.labels == ID[organ]) * voxel_ml / float(p.setup["size"]) ** 3


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_every_organ_median_hu_lies_in_its_phase_range(seed: int, phase: str) -> None:
    p = case(seed, phase)
    assert p.organs == HUMAN_ORGANS and p.phase == phase
    for organ, (low, high) in PHASE_ORGAN_HU_RANGES[phase].items():
        if organ == "gallbladder" and p.setup["gallbladder_scale"] == 0:
            assert not np.any(p.labels == ID[organ])  # removed (cholecystectomy)
            continue
        if organ == "stomach" and p.setup["oral_contrast"] == "positive":
            low, high = ORAL_CONTRAST_STOMACH_HU
        values = p.ct[interior(p.labels == ID[organ])]
        assert values.size > 0, organ
        assert low <= float(np.median(values)) <= high, (organ, float(np.median(values)))


def test_phases_differ_where_contrast_goes() -> None:
    def median(phase: str, organ: str) -> float:
        p = case(0, phase)
        return float(np.median(p.ct[p.labels == ID[organ]]))

    assert median("arterial", "aorta") > median("portal_venous", "aorta") + 60
    assert median("portal_venous", "aorta") > median("non_contrast", "aorta") + 60
    assert median("portal_venous", "liver") > median("arterial", "liver") + 15
    assert median("arterial", "pancreas") > median("non_contrast", "pancreas") + 40


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_organ_volumes_and_aorta_diameter_are_plausible(seed: int) -> None:
    p = case(seed, "portal_venous")
    s = p.setup
    liver_high = 3500.0 if s["liver_scale"] > 1.12 else 2500.0
    spleen_high = 1500.0 if s["spleen_scale"] > 1.2 else 500.0
    assert 1000.0 <= volume_ml(p, "liver") <= liver_high
    assert 100.0 <= volume_ml(p, "spleen") <= spleen_high
    for kidney in ("kidney_left", "kidney_right"):
        assert 100.0 <= volume_ml(p, kidney) <= 250.0, kidney
    if s["gallbladder_scale"] > 0:
        assert 10.0 <= volume_ml(p, "gallbladder") <= 80.0
    assert 40.0 <= volume_ml(p, "urinary_bladder") <= 550.0
    assert 40.0 <= volume_ml(p, "pancreas") <= 130.0
    assert 80.0 <= volume_ml(p, "stomach") <= 1500.0
    # Aorta: the equivalent diameter of its cross-section in slices where it is one piece.
    aorta = p.labels == ID["aorta"]
    diameters = []
    for k in np.flatnonzero(aorta.any(axis=(1, 2))):
        _, pieces = ndimage.label(aorta[k])
        if pieces == 1:
            area = np.count_nonzero(aorta[k]) * p.spacing[0] * p.spacing[1]
            diameters.append(2.0 * np.sqrt(area / np.pi) / float(s["size"]))
    assert len(diameters) > 20
    assert 15.0 <= float(np.median(diameters)) <= 30.0


@pytest.mark.parametrize("metal", ["hip", "hips", "spine", "clips", "port"])
def test_metal_is_very_bright_and_unlabelled(metal: str) -> None:
    p = case(3, "portal_venous", metal)
    assert int(p.ct.max()) > 2000
    assert not np.any(p.labels[p.ct >= 3000])  # metal is no organ, not even bone
    plain = case(3, "portal_venous")
    assert int(plain.ct.max()) < 2000  # without metal nothing reaches it


def test_hip_prosthesis_casts_streaks() -> None:
    # Same seed, same anatomy up to the metal: streaks make the soft tissue of the hip slices
    # far more uneven than the same slices without the prosthesis.
    metal, plain = case(4, "non_contrast", "hips"), case(4, "non_contrast")
    k = int(np.argmax((metal.ct > 2500).sum(axis=(1, 2))))
    soft = (plain.labels[k] == 0) & (plain.ct[k] > -150) & (plain.ct[k] < 150)
    assert soft.sum() > 200
    assert float(np.std(metal.ct[k][soft])) > 2.0 * float(np.std(plain.ct[k][soft]))


def test_same_seed_same_case_and_new_organs_labelled() -> None:
    a = make_phantom("human", np.random.default_rng([25, 0]), variety="wide")
    b = make_phantom("human", np.random.default_rng([25, 0]), variety="wide")
    assert np.array_equal(a.ct, b.ct) and np.array_equal(a.labels, b.labels)
    assert a.spacing == b.spacing and a.origin == b.origin and a.setup == b.setup
    assert a.ct.dtype == np.int16 and a.labels.dtype == np.uint8
    assert set(np.unique(a.labels)) <= set(range(len(HUMAN_ORGANS) + 1))
    c = make_phantom("human", np.random.default_rng([22, 0]), variety="wide")
    assert a.setup != c.setup
    # Case spacing is the stated one: the field of view over the matrix.
    assert a.spacing[0] * a.ct.shape[2] == pytest.approx(a.setup["fov_mm"], rel=0.01)
    # contrast=False keeps the same anatomy but without contrast.
    plain = make_phantom("human", np.random.default_rng([25, 0]), contrast=False, variety="wide")
    assert plain.phase == "non_contrast" and plain.contrast is False
    assert np.array_equal(plain.labels, a.labels)


@pytest.mark.parametrize("organ", HUMAN_EXTRA_ORGANS)
def test_new_organs_sit_where_anatomy_puts_them(organ: str) -> None:
    p = case(1, "portal_venous")
    where = np.argwhere(p.labels == ID[organ]).mean(axis=0)
    liver = np.argwhere(p.labels == ID["liver"]).mean(axis=0)
    kidneys = np.argwhere(np.isin(p.labels, [ID["kidney_left"], ID["kidney_right"]])).mean(axis=0)
    midline = (p.ct.shape[2] - 1) / 2 + p.setup["off_centre_mm"][1] / p.spacing[0]
    if organ == "stomach":
        assert where[2] > midline  # left upper abdomen
    elif organ == "pancreas":
        assert where[1] < kidneys[1]  # in front of the kidneys
    elif organ == "gallbladder":
        assert where[2] < midline and where[0] < liver[0]  # right, under the liver
    elif organ == "urinary_bladder":
        assert where[0] < kidneys[0] - 100.0 / p.spacing[2]  # deep in the pelvis
    else:  # aorta: along the spine, the whole way from the pelvis to the chest
        slices = np.any(p.labels == ID["aorta"], axis=(1, 2))
        assert slices.sum() * p.spacing[2] > 300.0


def test_noise_level_is_the_stated_one() -> None:
    rng = np.random.default_rng(5)
    base = small(draw_wide_setup(rng), metal="none", region="abdomen", z_range=REGIONS["abdomen"])
    state = rng.bit_generator.state
    images = {}
    for noise in (8.0, 35.0):
        rng.bit_generator.state = state  # same anatomy, same noise pattern, other amplitude
        images[noise] = make_wide_phantom(dataclasses.replace(base, noise_hu=noise), rng)
    liver = images[8.0].labels == ID["liver"]
    difference = images[35.0].ct[liver].astype(float) - images[8.0].ct[liver]
    assert float(difference.std()) == pytest.approx(27.0, rel=0.1)


def test_thicker_slices_blur_along_z() -> None:
    rng = np.random.default_rng(6)
    base = small(draw_wide_setup(rng), metal="none", region="abdomen", z_range=REGIONS["abdomen"])
    # 1.25 mm apart (finer than the generator draws, to see the slice profile on a coarse grid).
    base = dataclasses.replace(base, interval_mm=1.25, noise_hu=0.0, pixel_mm=4.0)
    state = rng.bit_generator.state
    steps = {}
    for thickness in (0.625, 5.0):
        rng.bit_generator.state = state
        p = make_wide_phantom(dataclasses.replace(base, slice_mm=thickness), rng)
        steps[thickness] = float(np.abs(np.diff(p.ct.astype(float), axis=0)).mean())
    assert steps[5.0] < 0.8 * steps[0.625]


def test_a_tight_field_of_view_cuts_the_body() -> None:
    rng = np.random.default_rng(7)
    setup = small(draw_wide_setup(rng), fov_mm=260.0, size=1.1, fat_mm=40.0, fov_circle=False)
    setup = dataclasses.replace(setup, off_centre_mm=(0.0, 0.0), region="abdomen")
    p = make_wide_phantom(dataclasses.replace(setup, z_range=REGIONS["abdomen"]), rng)
    body = p.ct > -300
    assert body[:, :, 0].any() and body[:, :, -1].any()  # skin beyond both image edges


def test_setups_cover_the_intended_variety() -> None:
    rng = np.random.default_rng(2026)
    setups = [draw_wide_setup(rng) for _ in range(400)]
    assert set(Counter(s.phase for s in setups)) == set(PHASES)
    assert set(Counter(s.region for s in setups)) == set(REGIONS)
    assert {s.kernel for s in setups} == {"soft", "standard", "sharp"}
    assert {s.arms for s in setups} == {"up", "down"} and {s.table for s in setups} == {True, False}
    assert {s.oral_contrast for s in setups} == {"none", "positive", "water"}
    assert {"hip", "hips", "spine", "clips", "port"} <= {s.metal for s in setups}
    noise = [s.noise_hu for s in setups]
    assert 5.0 <= min(noise) < 8.0 and 30.0 < max(noise) <= 40.0
    thickness = [s.slice_mm for s in setups]
    assert min(thickness) < 0.7 and max(thickness) == 5.0
    scanner_pixel = [s.fov_mm / 512 for s in setups]
    assert min(scanner_pixel) < 0.6 and max(scanner_pixel) > 0.9
    assert all(s.pixel_mm * round(s.fov_mm / s.pixel_mm) == pytest.approx(s.fov_mm) for s in setups)
    sizes = [s.size for s in setups]
    assert min(sizes) < 0.7 and max(sizes) > 1.1
    fat = [s.fat_mm for s in setups]
    assert min(fat) < 8.0 and max(fat) > 50.0
    assert any(s.spleen_scale > 1.3 for s in setups) and any(s.liver_scale > 1.12 for s in setups)
    assert any(s.gallbladder_scale == 0 for s in setups)
    # Some fields of view are tighter than the body, some off centre by more than 2 cm.
    assert any(abs(s.off_centre_mm[0]) > 20.0 for s in setups)


def test_wide_variety_is_human_only_and_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="human phantoms only"):
        make_phantom("rabbit", np.random.default_rng(0), variety="wide")
    with pytest.raises(InputError, match="unknown phantom variety 'huge'"):
        write_phantom_dataset(tmp_path / "x", "human", cases=1, seed=0, variety="huge")
    assert not (tmp_path / "x").exists()


def test_wide_dataset_names_twelve_organs_and_each_case_setup(tmp_path: Path) -> None:
    out = tmp_path / "wide"
    # Seed 25's first case is a small one (a child-sized field of view): a fast test.
    written = write_phantom_dataset(out, "human", cases=1, seed=25, variety="wide")
    info = json.loads((out / "dataset.json").read_text())
    assert info["labels"] == {"background": 0, **ID}
    assert info["synthetic"] is True and info["variety"] == "wide"
    assert "SYNTHETIC" in info["description"]
    setup = info["cases"]["human_000"]
    assert setup["phase"] in PHASES and set(setup) == {
        f.name for f in dataclasses.fields(WideSetup)
    }
    expected = make_phantom("human", np.random.default_rng([25, 0]), variety="wide")
    ct, meta = read_image(out / "imagesTr" / "human_000_0000.nii.gz")
    labels, _ = read_label(written[0], reference=meta, reference_shape=ct.shape)
    assert np.array_equal(ct, expected.ct) and np.array_equal(labels, expected.labels)
    assert np.allclose(meta.spacing, expected.spacing)


def test_parallel_workers_write_the_same_cases(tmp_path: Path) -> None:
    one = write_phantom_dataset(tmp_path / "one", "rabbit", cases=3, seed=9)
    two = write_phantom_dataset(tmp_path / "two", "rabbit", cases=3, seed=9, workers=2)
    for a, b in zip(one, two, strict=True):
        assert a.name == b.name
        assert np.array_equal(read_image(a)[0], read_image(b)[0])
    for name in ("rabbit_002_0000.nii.gz", "rabbit_000_0000.nii.gz"):
        images = [
            read_image(d / "imagesTr" / name)[0] for d in (tmp_path / "one", tmp_path / "two")
        ]
        assert np.array_equal(*images)
    with pytest.raises(InputError, match="workers"):
        write_phantom_dataset(tmp_path / "three", "rabbit", cases=1, seed=9, workers=0)


def test_kidney_appearance_follows_the_setup() -> None:
    """Nephrogram, renal sinus and lateral position change the kidneys as the setup says."""
    base = small(
        draw_wide_setup(np.random.default_rng(4)), phase="portal_venous", z_range=REGIONS["abdomen"]
    )
    base = dataclasses.replace(
        base, noise_hu=5.0, nephrogram=0.0, renal_sinus=0.0, kidney_lateral_mm=0.0
    )

    def draw(**changes: object) -> Phantom:
        return make_wide_phantom(dataclasses.replace(base, **changes), np.random.default_rng(9))

    plain, homogeneous = draw(), draw(nephrogram=1.0)
    kidneys = [ID["kidney_left"], ID["kidney_right"]]

    def spread(p: Phantom) -> float:
        inside = interior(np.isin(p.labels, kidneys))
        return float(np.percentile(p.ct[inside], 90) - np.percentile(p.ct[inside], 10))

    # Corticomedullary contrast (cortex ~175, medulla ~110 HU) against a homogeneous nephrogram.
    assert spread(plain) > spread(homogeneous) + 30.0
    big_sinus = draw(renal_sinus=1.0)
    for kidney in ("kidney_left", "kidney_right"):
        assert volume_ml(big_sinus, kidney) < 0.95 * volume_ml(plain, kidney)
    lateral = draw(kidney_lateral_mm=14.0)

    def x_mm(p: Phantom, kidney: str) -> float:
        return float(np.argwhere(p.labels == ID[kidney])[:, 2].mean() * p.spacing[0])

    for kidney, sign in (("kidney_left", 1.0), ("kidney_right", -1.0)):
        assert 8.0 < sign * (x_mm(lateral, kidney) - x_mm(plain, kidney)) < 20.0


def test_wide_keeps_its_kidneys_and_wide_kidneys_varies_them_alone() -> None:
    """``wide`` draws what the shipped model trained on (no kidney fields drawn); with
    ``kidney_variety`` every other field keeps its draw and the kidney fields are in range."""
    for seed in range(6):
        plain = draw_wide_setup(np.random.default_rng(seed))
        varied = draw_wide_setup(np.random.default_rng(seed), kidney_variety=True)
        kidney_fields = {"kidney_lateral_mm", "nephrogram", "renal_sinus", "perirenal_fat"}
        assert (plain.kidney_lateral_mm, plain.nephrogram) == (0.0, 0.0)
        assert (plain.renal_sinus, plain.perirenal_fat) == (0.0, 1.3)
        for key, value in dataclasses.asdict(plain).items():
            if key not in kidney_fields:
                assert getattr(varied, key) == value, key
        assert 0.0 <= varied.kidney_lateral_mm <= 14.0
        assert 0.0 <= varied.renal_sinus <= 1.0 and 1.2 <= varied.perirenal_fat <= 1.6
        assert varied.nephrogram == 0.0 if varied.phase == "arterial" else varied.nephrogram > 0
    with pytest.raises(InputError, match="human phantoms only"):
        make_phantom("rabbit", np.random.default_rng(0), True, "wide-kidneys")
    # Parenchyma without the renal sinus (larger in older adults): ~80-250 ml per kidney.
    for seed in range(3):
        rng = np.random.default_rng(seed)
        setup = draw_wide_setup(rng, kidney_variety=True)
        p = make_wide_phantom(small(setup, phase="portal_venous", z_range=REGIONS[CAP]), rng)
        for kidney in ("kidney_left", "kidney_right"):
            assert 80.0 <= volume_ml(p, kidney) <= 250.0, (seed, kidney)


def test_wide_ribs_changes_only_the_ribs() -> None:
    """``wide-ribs`` draws the wide-kidneys case (every other field, and the anatomy) and
    changes only bone: the rib fields come from a child generator."""
    for seed in range(4):
        kidneys = draw_wide_setup(np.random.default_rng(seed), kidney_variety=True)
        ribs = draw_wide_setup(np.random.default_rng(seed), kidney_variety=True, rib_variety=True)
        rib_fields = {"rib_thickness_mm", "rib_taper", "rib_cortex_mm", "cartilage_rise_mm"}
        for key, value in dataclasses.asdict(kidneys).items():
            if key not in rib_fields:
                assert getattr(ribs, key) == value, key
        assert kidneys.rib_shape() is None
        shape = ribs.rib_shape()
        assert shape is not None and shape.cartilage
        assert 6.5 <= shape.thickness_mm <= 9.5 and 0.5 <= shape.taper <= 0.85
        assert 1.0 <= shape.cortex_mm <= 2.2 and 20.0 <= shape.cartilage_rise_mm <= 60.0
    # The whole case: labels differ only where one of the two calls a voxel bone.
    bone = ID["bone"]
    a = make_phantom("human", np.random.default_rng([7, 0]), True, "wide-kidneys")
    b = make_phantom("human", np.random.default_rng([7, 0]), True, "wide-ribs")
    changed = a.labels != b.labels
    assert changed.any()
    assert np.all((a.labels[changed] == bone) | (b.labels[changed] == bone))
    assert b.setup["rib_thickness_mm"] > 0 and a.setup["rib_thickness_mm"] == 0
    with pytest.raises(InputError, match="human phantoms only"):
        make_phantom("rabbit", np.random.default_rng(0), True, "wide-ribs")


def test_real_ribs_read_as_real_ribs_do_and_cartilage_is_labelled_bone() -> None:
    """Solid 9 mm ribs read ~700 HU; real ribs (a thin cortex around marrow) a few hundred HU,
    as on the real series (ribs 7-11: median 190-320 HU). Costal cartilage (~120 HU) is
    labelled bone, in front, where the old ribs had none."""
    rng = np.random.default_rng(3)
    setup = draw_wide_setup(rng, kidney_variety=True, rib_variety=True)
    setup = small(
        setup, phase="portal_venous", region=CAP, z_range=REGIONS[CAP], pixel_mm=1.5, arms="up"
    )
    state = rng.bit_generator.state
    real = make_wide_phantom(setup, rng)
    rng.bit_generator.state = state
    solid = make_wide_phantom(dataclasses.replace(setup, rib_thickness_mm=0.0), rng)
    bone = ID["bone"]

    def lower_chest(p: Phantom) -> np.ndarray:
        """Slices that hold both liver and lungs: where the lower ribs are."""
        both = [
            (p.labels[z] == ID["liver"]).any() and (p.labels[z] == ID["lungs"]).any()
            for z in range(p.labels.shape[0])
        ]
        return np.flatnonzero(both)

    def ribs_hu(p: Phantom) -> np.ndarray:
        z = lower_chest(p)
        x_mm = (np.arange(p.labels.shape[2]) - p.labels.shape[2] / 2) * p.spacing[0]
        ribs = (p.labels[z] == bone) & (np.abs(x_mm) > 70.0)[None, None, :]
        return p.ct[z][ribs]

    assert np.median(ribs_hu(solid)) > 550.0
    assert 120.0 < np.median(ribs_hu(real)) < 450.0
    # Cartilage: anterior bone between 60 and 200 HU (the front half of the body, y < centre).
    z = lower_chest(real)
    half = real.labels.shape[1] // 2

    def soft_front_bone(p: Phantom) -> int:
        front = p.labels[z, :half] == bone
        return int(np.count_nonzero(front & (p.ct[z, :half] > 60) & (p.ct[z, :half] < 200)))

    assert soft_front_bone(real) > max(50, 3 * soft_front_bone(solid))


def test_wide_stomach_collapses_half_the_stomachs_and_changes_nothing_else() -> None:
    """``wide-stomach``: the wide-ribs case (every other field; the stomach fields from a
    second child generator) with, in about half the cases, a collapsed stomach: smaller, a
    thick wall, little gas, food as dense as soft tissue."""
    collapsed = 0
    for seed in range(20):
        ribs = draw_wide_setup(np.random.default_rng(seed), True, True)
        gut = draw_wide_setup(np.random.default_rng(seed), True, True, stomach_variety=True)
        for key, value in dataclasses.asdict(ribs).items():
            if key not in ("stomach_collapse", "stomach_content_hu"):
                assert getattr(gut, key) == value, key
        assert (ribs.stomach_collapse, ribs.stomach_content_hu) == (0.0, 12.0)
        assert gut.stomach_collapse == 0.0 or 0.5 <= gut.stomach_collapse <= 1.0
        assert 10.0 <= gut.stomach_content_hu <= 60.0
        collapsed += gut.stomach_collapse > 0
    assert 4 <= collapsed <= 16
    rng = np.random.default_rng(5)
    setup = small(
        draw_wide_setup(rng, True, True, stomach_variety=True),
        phase="portal_venous",
        region=CAP,
        z_range=REGIONS[CAP],
        oral_contrast="none",
        stomach_content_hu=50.0,
        pixel_mm=2.0,
    )
    state = rng.bit_generator.state
    sac = make_wide_phantom(dataclasses.replace(setup, stomach_collapse=0.0), rng)
    rng.bit_generator.state = state
    flat = make_wide_phantom(dataclasses.replace(setup, stomach_collapse=1.0), rng)
    stomach = ID["stomach"]
    assert (
        0.3 * volume_ml(sac, "stomach")
        < volume_ml(flat, "stomach")
        < 0.8 * volume_ml(sac, "stomach")
    )
    gas_share = [float(np.mean(p.ct[p.labels == stomach] < -500)) for p in (sac, flat)]
    assert gas_share[1] < 0.5 * gas_share[0]
    # Food as dense as soft tissue: the collapsed stomach's median is that of tissue.
    assert 35.0 < np.median(flat.ct[flat.labels == stomach]) < 110.0
    # Everything outside the two stomachs is the same case.
    either = (sac.labels == stomach) | (flat.labels == stomach)
    same = ~ndimage.binary_dilation(either, iterations=3)
    assert np.array_equal(sac.labels[same], flat.labels[same])
