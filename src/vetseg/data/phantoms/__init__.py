"""Synthetic CT phantoms of a human and a rabbit torso with organ labels (demo and training data).

A phantom is drawn from simple shapes (ellipsoids, tubes, shells) placed in millimetres, on
coordinates that a smooth random field bends, so that no two cases share one anatomy. Tissue
values follow contrast-enhanced abdominal CT in the portal venous phase (liver ~100 HU, spleen
~110, renal cortex ~170 with a darker medulla, muscle ~55, fat ~-100, lung ~-850 with vessels,
bone cortex ~900 around ~230 marrow, air -1000) or non-contrast CT (``contrast=False``: liver
~55, spleen ~45, kidney ~30). The image is blurred a little (partial volume) and carries
correlated Gaussian noise (10-20 HU).

Arrays are ``[z, y, x]`` in vetseg's canonical orientation: axis 0 runs inferior -> superior
(caudal -> cranial for the rabbit), axis 1 anterior -> posterior (ventral -> dorsal), axis 2 the
patient's right -> left. With an identity direction that is ITK's LPS, so an axial slice shown
as an image is in radiological convention (the patient's right on the image's left) and
``kidney_left`` lies at high x indices.

Label ids follow :data:`vetseg.labels.CORE_ORGANS` (1 liver, 2 spleen, 3 kidney_left,
4 kidney_right, 5 lungs, 6 heart, 7 bone). Structures are painted one after another and a later
one wins where two overlap; the order is: body wall, unlabelled viscera (bowel, stomach, caecum,
vessels), liver, spleen, kidneys, lungs, heart, bone last. Unlabelled structures painted after
an organ clear its label (the stomach indents the liver, pericardial fat separates heart and lungs).

Human and rabbit differ as real ones do: the rabbit's body is long and narrow with a small
thorax (small lungs and heart), a large caecum full of gas and digesta, its right kidney cranial
to the left, and finer voxels (0.6 mm in-plane against 2.4 mm). The human phantom's voxels are
those of a 512 x 512 scan at 0.75 mm resized to 160 x 160, so its organs have their real size
in millilitres. These phantoms make the demo and the tests self-contained; they prove nothing
about real animals.

Wide variety (``make_phantom(..., variety="wide")``, human only) draws far more varied cases
for training a human model that must work on real scanners: four contrast phases, noise 5-40 HU,
soft to sharp kernels, slices 0.6-5 mm, fields of view 250-500 mm with the body off centre and
sometimes cut, children to obese adults, organ enlargement, arms up or down, table or none,
metal with streaks, oral contrast, chest / abdomen / pelvis ranges, and 12 organs
(:data:`vetseg.labels.HUMAN_ORGANS`). See :mod:`.variety` for the ranges. ``"wide-kidneys"``
also draws kidneys as real contrast scans show them (nephrogram, renal sinus, perirenal fat,
position); ``"wide-ribs"`` draws the same cases with ribs as real CT shows them (thinner,
tapering, a thin cortex around marrow so that they read a few hundred HU, costal cartilage
labelled bone) instead of the solid 9 mm ribs. ``"wide"`` keeps drawing what the first human
model was trained on.

Modules: :mod:`.tissue` (HU tables per phase), :mod:`.shapes` (the drawing board),
:mod:`.tubes` (tubes and capsule chains), :mod:`.anatomy` (organ recipes shared by the species),
:mod:`.human`, :mod:`.human_wide` and :mod:`.rabbit` (the torsos), :mod:`.variety` (what a
wide case draws), :mod:`.render` (slice profile, kernel, noise, metal streaks), :mod:`.phantom`
(one case), :mod:`.dataset` (datasets on disk).
"""

from vetseg.data.phantoms.dataset import (
    check_new_dataset_folder,
    phantom_meta,
    write_msd_dataset,
    write_phantom_dataset,
)
from vetseg.data.phantoms.phantom import (
    SPECIES,
    VARIETIES,
    Phantom,
    make_phantom,
    make_wide_phantom,
)
from vetseg.data.phantoms.shapes import smooth_noise
from vetseg.data.phantoms.tissue import (
    ORAL_CONTRAST_STOMACH_HU,
    ORGAN_HU_RANGES,
    PHASE_ORGAN_HU_RANGES,
    PHASE_TISSUE_HU,
    PHASES,
    TISSUE_HU,
    draw_phase_tissue_hu,
    draw_tissue_hu,
)
from vetseg.data.phantoms.variety import REGIONS, WideSetup, draw_wide_setup

__all__ = [
    "ORAL_CONTRAST_STOMACH_HU",
    "ORGAN_HU_RANGES",
    "PHASES",
    "PHASE_ORGAN_HU_RANGES",
    "PHASE_TISSUE_HU",
    "REGIONS",
    "SPECIES",
    "TISSUE_HU",
    "VARIETIES",
    "Phantom",
    "WideSetup",
    "check_new_dataset_folder",
    "draw_phase_tissue_hu",
    "draw_tissue_hu",
    "draw_wide_setup",
    "make_phantom",
    "make_wide_phantom",
    "phantom_meta",
    "smooth_noise",
    "write_msd_dataset",
    "write_phantom_dataset",
]
