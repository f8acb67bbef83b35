"""Contrast-phase variants of a real non-contrast CT, drawn from its TotalSegmentator labels.

The only real labelled human CT vetseg trains on is a NON-contrast scan (liver ~46 HU, aorta
~41 HU), while most abdominal CT in clinics, and the scans vetseg is checked on, are
contrast-enhanced. The phantoms come in every phase, but with phantom anatomy; the real anatomy
came only without contrast, so the model never saw a real-shaped spleen at 120 HU or a real
kidney at 180 HU. :func:`phase_variant` adds to each labelled structure the enhancement its
tissue gains in a phase (:data:`~vetseg.data.phantoms.tissue.PHASE_TISSUE_HU`, the same table
and per-case bolus factor the phantoms draw), so one real anatomy appears in all four phases:

- arteries (aorta, iliac arteries) and veins (vena cava, portal/splenic, iliac veins) take the
  ``artery``/``vein`` enhancement; the heart the ``myocardium``'s;
- liver, spleen, pancreas take their own; inside the liver, voxels darker than the organ's
  median by more than 8 HU (its vessels, after smoothing) take ``liver_vessel``'s;
- kidneys: the outer voxel shell takes the cortex's enhancement, the inside the medulla's
  (corticomedullary in the arterial phase, a nephrogram later);
- the walls (outer voxel shell) of stomach, duodenum, small bowel and colon take
  ``bowel_wall``'s; muscles, and unlabelled soft tissue (-20..200 HU), the ``muscle``'s;
- bone, lungs, fat, gas, bile and urine keep their values (bladder and gallbladder do not
  enhance).

The enhancement spills into the unenhanced voxels next to it by a Gaussian of ``edge_sigma``
voxels (partial volume at the borders; inside a structure it stays whole) and is added only to
voxels above -300 HU, so gas and lung stay as they were. Labels are unchanged. This is an
augmentation of a real scan, not a new patient: the anatomy, noise and texture are the real
scan's.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import ndimage

from vetseg.data.phantoms.tissue import PHASE_TISSUE_HU, PHASES, draw_phase_tissue_hu

#: TotalSegmentator structure names (or name prefixes ending in ``_``) -> tissue of
#: :data:`PHASE_TISSUE_HU` whose enhancement they take. Structures not named keep their HU.
STRUCTURE_TISSUE: dict[str, str] = {
    "aorta": "artery",
    "iliac_artery_": "artery",
    "pulmonary_vein": "vein",
    "inferior_vena_cava": "vein",
    "superior_vena_cava": "vein",
    "portal_vein_and_splenic_vein": "vein",
    "iliac_vena_": "vein",
    "heart": "myocardium",
    "liver": "liver",
    "spleen": "spleen",
    "pancreas": "pancreas",
    "kidney_": "kidney",
    "stomach": "bowel_wall",
    "duodenum": "bowel_wall",
    "small_bowel": "bowel_wall",
    "colon": "bowel_wall",
    "gluteus_": "muscle",
    "autochthon_": "muscle",
    "iliopsoas_": "muscle",
}

#: Structures enhanced only in their outer voxel shell (hollow organs: the wall enhances, the
#: content does not).
_WALL_ONLY = ("bowel_wall",)


def structure_tissue(name: str) -> str | None:
    """The tissue of :data:`PHASE_TISSUE_HU` whose enhancement ``name`` takes, or None."""
    for key, tissue in STRUCTURE_TISSUE.items():
        if name == key or (key.endswith("_") and name.startswith(key)):
            return tissue
    return None


def _enhancement(values: Mapping[str, float], tissue: str) -> float:
    """HU a tissue gains over its non-contrast value in one drawn phase."""
    return float(values[tissue] - PHASE_TISSUE_HU[tissue][0])


def phase_variant(
    image: np.ndarray,
    labels: np.ndarray,
    names: Mapping[int, str],
    phase: str,
    rng: np.random.Generator,
    bolus: float = 1.0,
    edge_sigma: float = 0.7,
) -> tuple[np.ndarray, dict[str, float]]:
    """One contrast-phase variant of a non-contrast CT (see the module docstring).

    Args:
        image: the non-contrast CT in HU, any 3D shape.
        labels: integer label map on the same grid (e.g. TotalSegmentator v2 ids).
        names: label id -> structure name (TotalSegmentator names; unknown names keep their HU).
        phase: one of :data:`PHASES`; ``"non_contrast"`` still draws each tissue's case-to-case
            variation around the scan's own values.
        rng: random generator (per-tissue draw).
        bolus: scales every enhancement (dose, cardiac output, timing), as for the phantoms.
        edge_sigma: Gaussian smoothing of the enhancement field, in voxels.

    Returns:
        (the variant in HU as int16 clipped to -1024..3071, tissue -> HU added).
    """
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {', '.join(PHASES)}, not {phase!r}")
    if image.shape != labels.shape:
        raise ValueError(f"image {image.shape} and labels {labels.shape} differ in shape")
    values = draw_phase_tissue_hu(rng, phase, bolus)
    tissues = ("artery", "vein", "myocardium", "liver", "liver_vessel", "spleen", "pancreas")
    tissues += ("kidney_cortex", "kidney_medulla", "bowel_wall", "muscle")
    gain = {t: _enhancement(values, t) for t in tissues}
    image = np.asarray(image, dtype=np.float32)
    field = np.zeros(image.shape, dtype=np.float32)
    labelled = labels > 0
    for label_id in np.unique(labels):
        if label_id == 0:
            continue
        tissue = structure_tissue(str(names.get(int(label_id), "")))
        if tissue is None:
            continue
        mask = labels == label_id
        if tissue == "kidney":
            inner = ndimage.binary_erosion(mask)
            field[mask & ~inner] = gain["kidney_cortex"]
            field[inner] = gain["kidney_medulla"]
        elif tissue in _WALL_ONLY:
            field[mask & ~ndimage.binary_erosion(mask)] = gain[tissue]
        elif tissue == "liver":
            field[mask] = gain["liver"]
            # Smoothed within the liver only (normalised convolution), so the fat around it
            # does not make its border look like a vessel.
            inside = mask.astype(np.float32)
            weight = ndimage.gaussian_filter(inside, 1.0)
            smooth = ndimage.gaussian_filter(image * inside, 1.0) / np.maximum(weight, 1e-6)
            core = ndimage.binary_erosion(mask)
            vessels = core & (smooth < np.median(image[mask]) - 8.0)
            field[vessels] = gain["liver_vessel"]
        else:
            field[mask] = gain[tissue]
    unlabelled_soft = ~labelled & (image > -20.0) & (image < 200.0)
    field[unlabelled_soft] = gain["muscle"]
    if edge_sigma > 0:
        # Enhancement spills into unenhanced neighbours (partial volume) but is kept whole
        # inside the voxels it was given to: small vessels are not dimmed by the smoothing.
        given = field != 0
        field = np.where(given, field, ndimage.gaussian_filter(field, edge_sigma))
    out = image + np.where(image > -300.0, field, 0.0)
    pixels = np.clip(np.rint(out), -1024, 3071).astype(np.int16)
    return pixels, {k: round(v, 1) for k, v in gain.items()}
