"""Tissue values in HU for the phantoms: one table per contrast phase, drawn per case."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

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


#: Contrast phases of the wide-variety phantoms, in the order of :data:`PHASE_TISSUE_HU`'s values.
PHASES: tuple[str, ...] = ("non_contrast", "arterial", "portal_venous", "delayed")

#: Tissue values in HU per phase: (non-contrast, late arterial ~35 s, portal venous ~70 s,
#: delayed ~3-5 min), and the case-to-case standard deviation. Sources, rounded: aorta ~300 HU
#: in the late arterial phase, ~170 portal venous, ~110 delayed (bolus-tracked CT protocols);
#: liver 55 -> 70 -> 105 -> 85 (Heiken 1995; Bae 2010); spleen arciform in the arterial phase;
#: renal cortex 190 vs medulla 65 (corticomedullary), 175 vs 110 (portal venous), a homogeneous
#: nephrogram ~140 and excreted contrast in the collecting system later (Yuh & Cohan 1999);
#: pancreas peaks ~120 in the pancreatic (late arterial) phase; bile and urine ~0-20; oral
#: contrast 200-500. The enhancement above the non-contrast value is scaled by one per-case
#: bolus factor (dose, cardiac output, timing), so a case is consistently early or late.
PHASE_TISSUE_HU: dict[str, tuple[float, float, float, float, float]] = {
    "air": (-1000.0, -1000.0, -1000.0, -1000.0, 0.0),
    "gas": (-950.0, -950.0, -950.0, -950.0, 20.0),
    "fat": (-100.0, -100.0, -100.0, -100.0, 10.0),
    "skin": (40.0, 40.0, 40.0, 40.0, 5.0),
    "muscle": (50.0, 55.0, 58.0, 56.0, 5.0),
    "bowel": (25.0, 30.0, 35.0, 35.0, 6.0),
    "bowel_wall": (35.0, 90.0, 85.0, 70.0, 8.0),
    "digesta": (40.0, 40.0, 45.0, 45.0, 8.0),
    "fluid": (12.0, 12.0, 15.0, 15.0, 4.0),
    "artery": (42.0, 310.0, 170.0, 115.0, 15.0),
    "vein": (40.0, 85.0, 155.0, 115.0, 12.0),
    "myocardium": (45.0, 115.0, 110.0, 90.0, 8.0),
    "liver": (55.0, 70.0, 105.0, 85.0, 8.0),
    "liver_vessel": (38.0, 110.0, 165.0, 110.0, 12.0),
    "spleen": (46.0, 115.0, 112.0, 95.0, 8.0),
    "kidney_cortex": (33.0, 190.0, 175.0, 140.0, 12.0),
    "kidney_medulla": (28.0, 65.0, 110.0, 140.0, 10.0),
    "renal_sinus": (-50.0, -50.0, -50.0, -50.0, 10.0),
    "collecting_system": (10.0, 10.0, 12.0, 450.0, 5.0),
    "lung": (-850.0, -850.0, -850.0, -850.0, 20.0),
    "lung_vessel": (40.0, 150.0, 120.0, 90.0, 10.0),
    "bone_cortex": (900.0, 900.0, 900.0, 900.0, 100.0),
    "bone_marrow": (230.0, 230.0, 230.0, 230.0, 40.0),
    "yellow_marrow": (-30.0, -30.0, -30.0, -30.0, 20.0),
    "disc": (85.0, 85.0, 85.0, 85.0, 8.0),
    "csf": (15.0, 15.0, 15.0, 15.0, 3.0),
    "cartilage": (120.0, 120.0, 120.0, 120.0, 10.0),
    "pancreas": (42.0, 120.0, 100.0, 80.0, 8.0),
    "bile": (8.0, 8.0, 8.0, 8.0, 6.0),
    "gallbladder_wall": (35.0, 75.0, 80.0, 70.0, 8.0),
    "urine": (8.0, 8.0, 10.0, 12.0, 4.0),
    "urine_contrast": (8.0, 8.0, 10.0, 600.0, 20.0),
    "oral_contrast": (320.0, 320.0, 320.0, 320.0, 70.0),
    "calcification": (600.0, 600.0, 600.0, 600.0, 150.0),
    "table": (300.0, 300.0, 300.0, 300.0, 100.0),
    "foam": (-800.0, -800.0, -800.0, -800.0, 60.0),
    "pad": (-750.0, -750.0, -750.0, -750.0, 100.0),
    "metal": (3000.0, 3000.0, 3000.0, 3000.0, 0.0),
}

#: HU from which a voxel counts as metal (cortical bone, oral contrast and excreted contrast
#: stay below it).
METAL_HU = 2500.0

#: Where the median HU inside each organ's label falls, (low, high), per phase, for the wide
#: variety phantoms: what a radiologist would accept for that phase, wide enough for the bolus
#: factor, noise, partial volume at thick slices and soft kernels. The stomach's range holds
#: without positive oral contrast (with it, :data:`ORAL_CONTRAST_STOMACH_HU`). The tests check
#: the phantoms against these ranges.
PHASE_ORGAN_HU_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "non_contrast": {
        "liver": (40.0, 75.0),
        "spleen": (30.0, 62.0),
        "kidney_left": (15.0, 45.0),
        "kidney_right": (15.0, 45.0),
        "lungs": (-900.0, -700.0),
        "heart": (25.0, 65.0),
        "bone": (150.0, 1200.0),
        "stomach": (-60.0, 80.0),
        "pancreas": (20.0, 60.0),
        "gallbladder": (-15.0, 35.0),
        "urinary_bladder": (-10.0, 30.0),
        "aorta": (25.0, 65.0),
    },
    "arterial": {
        "liver": (55.0, 100.0),
        "spleen": (80.0, 165.0),
        "kidney_left": (60.0, 250.0),
        "kidney_right": (60.0, 250.0),
        "lungs": (-900.0, -700.0),
        "heart": (90.0, 420.0),
        "bone": (150.0, 1200.0),
        "stomach": (-60.0, 100.0),
        "pancreas": (75.0, 160.0),
        "gallbladder": (-15.0, 40.0),
        "urinary_bladder": (-10.0, 30.0),
        "aorta": (220.0, 420.0),
    },
    "portal_venous": {
        "liver": (80.0, 135.0),
        "spleen": (80.0, 145.0),
        "kidney_left": (100.0, 220.0),
        "kidney_right": (100.0, 220.0),
        "lungs": (-900.0, -700.0),
        "heart": (90.0, 230.0),
        "bone": (150.0, 1200.0),
        "stomach": (-60.0, 100.0),
        "pancreas": (65.0, 135.0),
        "gallbladder": (-15.0, 40.0),
        "urinary_bladder": (-10.0, 30.0),
        "aorta": (125.0, 225.0),
    },
    "delayed": {
        "liver": (60.0, 110.0),
        "spleen": (65.0, 125.0),
        "kidney_left": (95.0, 185.0),
        "kidney_right": (95.0, 185.0),
        "lungs": (-900.0, -700.0),
        "heart": (65.0, 155.0),
        "bone": (150.0, 1200.0),
        "stomach": (-60.0, 100.0),
        "pancreas": (50.0, 105.0),
        "gallbladder": (-15.0, 40.0),
        "urinary_bladder": (-10.0, 80.0),
        "aorta": (85.0, 155.0),
    },
}

#: The stomach's median HU when it holds positive oral contrast.
ORAL_CONTRAST_STOMACH_HU: tuple[float, float] = (120.0, 600.0)


def draw_phase_tissue_hu(
    rng: np.random.Generator, phase: str, bolus: float = 1.0
) -> dict[str, float]:
    """One case's HU for every tissue of :data:`PHASE_TISSUE_HU` in ``phase``.

    Args:
        rng: random generator.
        phase: one of :data:`PHASES`.
        bolus: scales every tissue's enhancement above its non-contrast value (1: the table's).

    Returns:
        Tissue name -> HU.
    """
    column = PHASES.index(phase)
    values = {}
    for name, row in PHASE_TISSUE_HU.items():
        plain, mean, spread = row[0], row[column], row[4]
        peak = max(abs(v) for v in row[:4])
        if peak != abs(plain) and phase == "non_contrast":
            # Most of an enhancing tissue's spread is the enhancement's: without contrast blood
            # varies by ~4 HU, not by the ~15 of an arterial bolus.
            spread = max(3.0, spread * abs(plain) / max(peak, 1.0))
        values[name] = float(plain + bolus * (mean - plain) + spread * rng.standard_normal())
    return values
