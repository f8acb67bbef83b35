"""Contrast-phase variants of a non-contrast CT drawn from its structure labels."""

from __future__ import annotations

import numpy as np
import pytest

from vetseg.data.phantoms.tissue import PHASE_TISSUE_HU
from vetseg.data.phases import phase_variant, structure_tissue

NAMES = {
    1: "liver",
    2: "aorta",
    3: "kidney_left",
    4: "colon",
    5: "urinary_bladder",
    6: "lung_lower_lobe_left",
}


def _scan() -> tuple[np.ndarray, np.ndarray]:
    """A 24^3 non-contrast block: fat around a liver with one darker vessel, an aorta, a kidney,
    a colon with gas inside, a bladder of urine and a lung."""
    image = np.full((24, 24, 24), -100.0, dtype=np.float32)
    labels = np.zeros(image.shape, dtype=np.int16)
    labels[2:12, 2:12, 2:12], image[2:12, 2:12, 2:12] = 1, 55.0
    image[4:8, 2:12, 5:9] = 38.0  # a liver vessel, darker than the parenchyma
    labels[13:19, 1:7, 2:22], image[13:19, 1:7, 2:22] = 2, 42.0
    labels[14:22, 8:16, 14:22], image[14:22, 8:16, 14:22] = 3, 33.0
    labels[2:10, 14:22, 14:22], image[2:10, 14:22, 14:22] = 4, 35.0
    image[4:8, 16:20, 16:20] = -950.0  # gas in the colon
    labels[14:20, 18:23, 2:8], image[14:20, 18:23, 2:8] = 5, 8.0
    labels[2:8, 14:22, 2:8], image[2:8, 14:22, 2:8] = 6, -850.0
    return image, labels


def test_structure_names_map_to_tissues() -> None:
    assert structure_tissue("iliac_artery_left") == "artery"
    assert structure_tissue("kidney_right") == "kidney"
    assert structure_tissue("portal_vein_and_splenic_vein") == "vein"
    assert structure_tissue("urinary_bladder") is None
    assert structure_tissue("vertebrae_L1") is None


def test_arterial_phase_enhances_aorta_and_kidney_cortex_not_urine_gas_or_lung() -> None:
    image, labels = _scan()
    out, gain = phase_variant(image, labels, NAMES, "arterial", np.random.default_rng(0))
    assert out.dtype == np.int16 and out.shape == image.shape
    # The aorta gains about 310 - 42 HU, far more than the liver (70 - 55).
    aorta = np.median(out[labels == 2])
    assert aorta - 42 == pytest.approx(gain["artery"], abs=25) and gain["artery"] > 200
    assert np.median(out[labels == 1]) - 55 < 40
    # Corticomedullary: the kidney's outer shell is brighter than its inside.
    kidney = labels == 3
    assert out[16, 8, 18] > out[18, 12, 18] + 40  # shell voxel vs core voxel
    assert np.median(out[kidney]) > 33 + 20
    # Urine, gas and lung keep their values (away from the smoothed borders).
    assert out[17, 20, 5] == 8
    assert out[6, 18, 18] == -950
    assert out[4, 18, 4] == -850
    # Colon: the wall enhances, gas inside stays gas; fat far from organs does not move.
    assert out[2, 18, 18] > 35 + 0.5 * gain["bowel_wall"]
    assert out[12, 23, 12] == -100


def test_portal_venous_liver_vessels_brighter_than_parenchyma() -> None:
    image, labels = _scan()
    out, gain = phase_variant(image, labels, NAMES, "portal_venous", np.random.default_rng(1))
    assert gain["liver_vessel"] > gain["liver"]
    # Before: the vessel 17 HU darker than the liver; after: brighter (smoothing aside).
    assert out[6, 6, 7] > out[10, 6, 3]
    assert np.median(out[labels == 1]) == pytest.approx(55 + gain["liver"], abs=10)


def test_non_contrast_variant_stays_near_the_scan_and_bolus_scales() -> None:
    image, labels = _scan()
    plain, gain = phase_variant(image, labels, NAMES, "non_contrast", np.random.default_rng(2))
    assert max(abs(v) for v in gain.values()) < 40
    assert abs(np.median(plain[labels == 2]) - 42) < 25
    low, g_low = phase_variant(image, labels, NAMES, "arterial", np.random.default_rng(3), 0.8)
    high, g_high = phase_variant(image, labels, NAMES, "arterial", np.random.default_rng(3), 1.2)
    spread = PHASE_TISSUE_HU["artery"][4]
    assert g_high["artery"] - g_low["artery"] == pytest.approx(0.4 * (310 - 42), abs=1e-3)
    assert np.median(high[labels == 2]) > np.median(low[labels == 2]) + 100 - 2 * spread


def test_bad_input_is_refused() -> None:
    image, labels = _scan()
    with pytest.raises(ValueError, match="phase must be one of"):
        phase_variant(image, labels, NAMES, "venous", np.random.default_rng(0))
    with pytest.raises(ValueError, match="differ in shape"):
        phase_variant(image, labels[:-1], NAMES, "arterial", np.random.default_rng(0))
