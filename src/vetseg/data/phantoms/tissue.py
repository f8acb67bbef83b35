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
