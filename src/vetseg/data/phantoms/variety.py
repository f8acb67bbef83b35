"""What a wide-variety human phantom varies: the patient, the exam and the scanner, per case.

:func:`draw_wide_setup` draws one :class:`WideSetup` from the case's random generator; the
recipe (:mod:`.human_wide`) and the scanner model (:mod:`.render`) read it. The aim is coverage
of what real abdominal and chest CT looks like, not a match to any one scanner or dataset: the
ranges are those of clinical practice, each drawn with a simple distribution.

Lengths of the patient (``fat_mm``, organ sizes) are those of an adult of ``size`` 1 and scale
with ``size``; lengths of the scanner (``fov_mm``, ``pixel_mm``, ``slice_mm``) are real mm.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TypeVar

import numpy as np

from vetseg.data.phantoms.anatomy import RibShape

K = TypeVar("K")

#: Scan regions along the body, as (lowest, highest) z in the wide recipe's adult mm: z = 0 lies
#: below the femoral heads, the iliac crest near 200, the right diaphragm dome near 363, the
#: lung apices near 610 (see :mod:`.human_wide`).
REGIONS: dict[str, tuple[float, float]] = {
    "chest_abdomen_pelvis": (0.0, 650.0),
    "abdomen_pelvis": (0.0, 405.0),
    "abdomen": (150.0, 405.0),
    "liver": (215.0, 400.0),
    "chest": (300.0, 650.0),
}
_REGION_WEIGHTS = {
    "chest_abdomen_pelvis": 0.3,
    "abdomen_pelvis": 0.3,
    "abdomen": 0.15,
    "liver": 0.1,
    "chest": 0.15,
}
_PHASE_WEIGHTS = {"non_contrast": 0.25, "arterial": 0.2, "portal_venous": 0.4, "delayed": 0.15}
#: Reconstructed slice thicknesses in common clinical use (mm) and how often each is drawn.
_SLICES = {0.625: 0.1, 1.0: 0.15, 1.25: 0.1, 1.5: 0.1, 2.0: 0.15, 2.5: 0.1, 3.0: 0.15, 5.0: 0.15}
#: Reconstruction kernels: (in-plane FWHM range in mm, edge enhancement range).
KERNELS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "soft": ((1.4, 2.2), (0.0, 0.0)),
    "standard": ((0.9, 1.4), (0.0, 0.15)),
    "sharp": ((0.5, 0.9), (0.3, 0.8)),
}
METAL_KINDS: tuple[str, ...] = ("none", "hip", "hips", "spine", "clips", "port")
#: Where each kind of metal lies (recipe z, mm): a case draws only metal its scan shows.
_METAL_Z = {"hip": 55.0, "hips": 55.0, "spine": 260.0, "clips": 243.0, "port": 585.0}
#: Largest array of a case: in-plane pixels per side and slices (they bound time and memory;
#: a long scan gets a larger slice interval, as clinical 5 mm reconstructions of long ranges do).
MAX_MATRIX = 256
MAX_SLICES = 128


@dataclass(frozen=True)
class WideSetup:
    """One wide-variety case: patient, exam and scanner. All fields are plain data (JSON-able).

    Attributes:
        size: linear body scale (1: an adult of ~1.75 m; 0.6: a child of ~8 years).
        fat_mm: subcutaneous fat at the flanks (adult mm; 5 slim .. 70 obese).
        bowel_share: bowel loops against mesenteric fat (< 1: more visceral fat).
        ap_ratio: body depth over its usual share of the width (0.8 flat .. 1.2 round).
        liver_scale: linear liver size (> 1.15: hepatomegaly).
        spleen_scale: linear spleen size (> 1.3: splenomegaly).
        kidney_scale: linear kidney size.
        gallbladder_scale: linear gallbladder size; 0 after a cholecystectomy.
        bladder_ml: urinary bladder filling (adult ml).
        stomach_scale: linear stomach distension.
        stomach_gas: share of the stomach's depth that holds gas.
        jitter_mm: standard deviation of organ position jitter.
        arms: ``"up"`` (above the head, out of the scan) or ``"down"`` (beside the body).
        phase: contrast phase, one of :data:`~vetseg.data.phantoms.tissue.PHASES`.
        bolus: scale of every tissue's enhancement (dose, cardiac output, timing).
        oral_contrast: ``"none"``, ``"positive"`` (iodine/barium, ~300 HU) or ``"water"``.
        metal: one of :data:`METAL_KINDS`.
        region: a key of :data:`REGIONS`.
        z_range: (lowest, highest) z of the scan in the recipe's adult mm.
        table: whether the patient table and its pad are in the image.
        fov_mm: display field of view (square side, mm).
        pixel_mm: in-plane spacing of the arrays (mm); the scanner's own is ``fov_mm / 512``.
        off_centre_mm: (y, x) of the body's axis from the image centre (mm).
        fov_circle: whether the reconstruction circle's outside is blanked (-1024 HU).
        kernel: reconstruction kernel, a key of :data:`KERNELS`.
        kernel_fwhm_mm: in-plane resolution (FWHM of the point spread, mm).
        edge_gain: edge enhancement of sharp kernels (overshoot at edges, crisper noise).
        slice_mm: reconstructed slice thickness (FWHM of the slice profile, mm).
        interval_mm: distance between slices (mm; thin slices are stored at 2 mm or more).
        noise_hu: image noise (standard deviation in uniform tissue, HU).
        kidney_lateral_mm: kidneys this much further from the midline than the recipe's
            62 mm (real kidneys' centres lie ~60-90 mm out, lateral to the psoas).
        nephrogram: how far the medulla has caught up with the cortex (0: the
            corticomedullary contrast of early enhancement; 1: a homogeneous nephrogram, as
            real portal venous and delayed scans often show). Arterial scans keep 0.
        renal_sinus: size of the fatty renal sinus at the hilum (0 small .. 1 large, as in
            older adults).
        perirenal_fat: extent of the perirenal fat around each kidney (times the kidney's
            semi-axes; lumpy, not a clean ellipsoid shell).
        rib_thickness_mm: rib thickness at the spine (recipe mm); 0: the solid 9 mm ribs
            of the ``"wide"`` phantoms, and the rib fields below are unused.
        rib_taper: rib thickness at its front end over that at the spine.
        rib_cortex_mm: cortical shell around the rib's marrow.
        cartilage_rise_mm: how far the costal cartilage rises from a rib's end to the sternum.
        stomach_collapse: 0: the distended fluid-filled sac of the ``"wide"`` phantoms; up to
            1: collapsed, narrower, a wall up to 12 mm thick with rugal folds, little gas.
        stomach_content_hu: mean HU of a collapsed stomach's food (without oral contrast).
    """

    size: float
    fat_mm: float
    bowel_share: float
    ap_ratio: float
    liver_scale: float
    spleen_scale: float
    kidney_scale: float
    gallbladder_scale: float
    bladder_ml: float
    stomach_scale: float
    stomach_gas: float
    jitter_mm: float
    arms: str
    phase: str
    bolus: float
    oral_contrast: str
    metal: str
    region: str
    z_range: tuple[float, float]
    table: bool
    fov_mm: float
    pixel_mm: float
    off_centre_mm: tuple[float, float]
    fov_circle: bool
    kernel: str
    kernel_fwhm_mm: float
    edge_gain: float
    slice_mm: float
    interval_mm: float
    noise_hu: float
    kidney_lateral_mm: float = 0.0
    nephrogram: float = 0.0
    renal_sinus: float = 0.0
    perirenal_fat: float = 1.3
    rib_thickness_mm: float = 0.0
    rib_taper: float = 1.0
    rib_cortex_mm: float = 0.0
    cartilage_rise_mm: float = 0.0
    stomach_collapse: float = 0.0
    stomach_content_hu: float = 12.0

    def rib_shape(self) -> RibShape | None:
        """The ribs this case draws: None for the ``"wide"`` phantoms' solid ribs."""
        if self.rib_thickness_mm <= 0.0:
            return None
        return RibShape(
            thickness_mm=self.rib_thickness_mm,
            taper=self.rib_taper,
            cortex_mm=self.rib_cortex_mm,
            cartilage=True,
            cartilage_rise_mm=self.cartilage_rise_mm,
        )

    def to_json(self) -> dict[str, object]:
        """The setup as a JSON-able dict (for ``dataset.json``)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def _choice(rng: np.random.Generator, weights: Mapping[K, float]) -> K:
    """One key of ``weights`` drawn with probabilities proportional to its values."""
    keys = list(weights)
    p = np.array([weights[k] for k in keys], dtype=np.float64)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def body_half_width_mm(size: float, fat_mm: float, arms: str) -> float:
    """Half the body's largest width (real mm), arms included: what the field of view must hold."""
    trunk = 175.0 + fat_mm - 20.0
    beside = 12.0 + 2 * (45.0 + 0.4 * fat_mm) if arms == "down" else 0.0
    return (trunk + beside) * size


def draw_wide_setup(
    rng: np.random.Generator,
    kidney_variety: bool = False,
    rib_variety: bool = False,
    stomach_variety: bool = False,
) -> WideSetup:
    """Draw one case's patient, exam and scanner (see :class:`WideSetup` for the fields).

    Args:
        rng: the case's random generator.
        kidney_variety: also draw the kidneys' position, nephrogram, renal sinus and perirenal
            fat (after every other field, so those keep their draws); False keeps the kidneys
            of the ``"wide"`` phantoms the shipped human model was trained on.
        rib_variety: also draw ribs as real CT shows them (thinner, tapering, a thin cortex
            around marrow, costal cartilage to the sternum), after the kidney fields so that
            every earlier field keeps its draw.
        stomach_variety: also draw the stomach as real CT often shows it (collapsed, thick
            rugal wall, food as dense as soft tissue), from a second child generator.

    Returns:
        The setup.
    """
    # Patient. Mostly adults (size ~1), sometimes a child or adolescent, sometimes a large adult.
    size = float(np.clip(rng.normal(1.0, 0.07), 0.85, 1.15))
    if rng.random() < 0.1:
        size = float(rng.uniform(0.6, 0.85))
    # Fat: log-normal, median ~20 mm (slim 5 .. obese 70); children are leaner.
    fat_mm = float(np.clip(20.0 * np.exp(rng.normal(0.0, 0.55)), 5.0, 70.0))
    if size < 0.85:
        fat_mm = min(fat_mm, 25.0)
    bowel_share = float(np.clip(1.0 - 0.008 * (fat_mm - 20.0) + rng.normal(0, 0.08), 0.6, 1.2))
    ap_ratio = float(np.clip(rng.normal(1.0, 0.08) + 0.003 * (fat_mm - 20.0), 0.8, 1.25))
    liver_scale = float(np.clip(rng.normal(1.0, 0.06), 0.88, 1.12))
    if rng.random() < 0.1:
        liver_scale = float(rng.uniform(1.12, 1.25))  # hepatomegaly
    spleen_scale = float(np.clip(rng.normal(1.0, 0.08), 0.8, 1.2))
    if rng.random() < 0.12:
        spleen_scale = float(rng.uniform(1.3, 1.75))  # splenomegaly
    kidney_scale = float(np.clip(rng.normal(1.0, 0.06), 0.88, 1.12))
    gallbladder_scale = 0.0 if rng.random() < 0.08 else float(rng.uniform(0.8, 1.3))
    bladder_ml = float(np.exp(rng.uniform(np.log(60.0), np.log(450.0))))
    stomach_scale = float(rng.uniform(0.75, 1.3))
    stomach_gas = float(rng.uniform(0.03, 0.4))
    jitter_mm = float(rng.uniform(3.0, 9.0))
    arms = "down" if rng.random() < 0.3 else "up"

    # Exam.
    phase = str(_choice(rng, _PHASE_WEIGHTS))
    bolus = float(rng.uniform(0.8, 1.2))
    oral = float(rng.random())
    oral_contrast = "positive" if oral < 0.2 else ("water" if oral < 0.3 else "none")
    region = str(_choice(rng, _REGION_WEIGHTS))
    lo, hi = REGIONS[region]
    z_range = (float(max(0.0, lo + rng.normal(0, 15))), float(min(660.0, hi + rng.normal(0, 15))))
    metal = "none"
    visible = [kind for kind, z in _METAL_Z.items() if z_range[0] + 20 < z < z_range[1] - 20]
    if rng.random() < 0.25 and visible:
        metal = str(rng.choice(visible))
    if gallbladder_scale == 0.0 and metal == "none":
        metal = "clips"  # cholecystectomy clips in the gallbladder fossa
    table = bool(rng.random() < 0.85)

    # Scanner. The field of view is set to the body, sometimes too tight (the body is cut).
    width = 2.0 * body_half_width_mm(size, fat_mm, arms)
    fov_mm = float(np.clip(width * rng.uniform(0.93, 1.3), 250.0, 500.0))
    # Stored in-plane spacing: the scanner's 512 matrix (0.5-1.0 mm) drawn on a coarser grid,
    # near the ~1.5 mm a human model works at (keeps the arrays small); stated exactly.
    n = min(MAX_MATRIX, int(round(fov_mm / rng.uniform(1.5, 2.1))))
    pixel_mm = fov_mm / n
    off_centre_mm = (float(rng.normal(0.0, 15.0)), float(rng.normal(0.0, 10.0)))
    fov_circle = bool(rng.random() < 0.5)
    kernel = str(_choice(rng, {"soft": 0.3, "standard": 0.5, "sharp": 0.2}))
    (f_lo, f_hi), (e_lo, e_hi) = KERNELS[kernel]
    kernel_fwhm_mm = float(rng.uniform(f_lo, f_hi))
    edge_gain = float(rng.uniform(e_lo, e_hi))
    slice_mm = float(_choice(rng, _SLICES))
    interval_mm = slice_mm if slice_mm >= 2.0 else float(rng.choice([2.0, 2.5]))
    interval_mm = max(interval_mm, (z_range[1] - z_range[0]) * size / (MAX_SLICES - 1))
    # Noise: thinner slices and sharper kernels are noisier; large patients too.
    base = float(np.exp(rng.uniform(np.log(5.0), np.log(22.0))))
    noise = base * np.sqrt(2.5 / slice_mm) * (1.0 + 0.6 * edge_gain)
    noise *= 1.0 + 0.006 * max(0.0, fat_mm - 20.0)
    noise_hu = float(np.clip(noise, 5.0, 40.0))
    # Kidneys as real contrast scans show them (drawn last: the fields above keep their draws).
    kidney_lateral_mm, nephrogram, renal_sinus, perirenal_fat = 0.0, 0.0, 0.0, 1.3
    if kidney_variety:
        kidney_lateral_mm = float(rng.uniform(0.0, 14.0))
        nephrogram = 0.0 if phase == "arterial" else float(rng.uniform(0.0, 1.0))
        renal_sinus = float(rng.uniform(0.0, 1.0))
        perirenal_fat = float(rng.uniform(1.2, 1.6))
    # Ribs. Real ribs are ~6-10 mm thick with a ~0.5-1.5 mm cortex, so in 1-5 mm slices they read
    # a few hundred HU; anterior ribs are thinner. Drawn from a child generator (rng.spawn does
    # not advance rng), so that the case's anatomy is that of the wide-kidneys case: only the
    # ribs differ.
    rib_thickness_mm, rib_taper, rib_cortex_mm, cartilage_rise_mm = 0.0, 1.0, 0.0, 0.0
    if rib_variety:
        ribs = rng.spawn(1)[0]
        rib_thickness_mm = float(ribs.uniform(6.5, 9.5))
        rib_taper = float(ribs.uniform(0.5, 0.85))
        rib_cortex_mm = float(ribs.uniform(0.6, 1.6))
        cartilage_rise_mm = float(ribs.uniform(20.0, 60.0))
    # Stomach: about half of real abdominal CTs show it collapsed around food, not distended.
    stomach_collapse, stomach_content_hu = 0.0, 12.0
    if stomach_variety:
        gut = rng.spawn(1)[0]
        if gut.random() < 0.5:
            stomach_collapse = float(gut.uniform(0.5, 1.0))
        stomach_content_hu = float(gut.uniform(10.0, 60.0))
    return WideSetup(
        size=size,
        fat_mm=fat_mm,
        bowel_share=bowel_share,
        ap_ratio=ap_ratio,
        liver_scale=liver_scale,
        spleen_scale=spleen_scale,
        kidney_scale=kidney_scale,
        gallbladder_scale=gallbladder_scale,
        bladder_ml=bladder_ml,
        stomach_scale=stomach_scale,
        stomach_gas=stomach_gas,
        jitter_mm=jitter_mm,
        arms=arms,
        phase=phase,
        bolus=bolus,
        oral_contrast=oral_contrast,
        metal=metal,
        region=region,
        z_range=z_range,
        table=table,
        fov_mm=fov_mm,
        pixel_mm=pixel_mm,
        off_centre_mm=off_centre_mm,
        fov_circle=fov_circle,
        kernel=kernel,
        kernel_fwhm_mm=kernel_fwhm_mm,
        edge_gain=edge_gain,
        slice_mm=slice_mm,
        interval_mm=interval_mm,
        noise_hu=noise_hu,
        kidney_lateral_mm=kidney_lateral_mm,
        nephrogram=nephrogram,
        renal_sinus=renal_sinus,
        perirenal_fat=perirenal_fat,
        rib_thickness_mm=rib_thickness_mm,
        rib_taper=rib_taper,
        rib_cortex_mm=rib_cortex_mm,
        cartilage_rise_mm=cartilage_rise_mm,
        stomach_collapse=stomach_collapse,
        stomach_content_hu=stomach_content_hu,
    )
