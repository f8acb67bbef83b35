"""Organ vocabularies: one place for organ names, species sets, left/right pairs and mappings.

Importable without torch. A *vocabulary* is an ordered tuple of organ names; a label map written
by vetseg uses id ``i + 1`` for ``organs[i]`` and 0 for background. A *mapping* turns a dataset's
own label ids (TotalSegmentator v2, Digimouse, a mouse head template, ...) into vetseg organ
names, merging where vetseg's organ is coarser (lung lobes -> lungs, ribs and vertebrae -> bone).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from vetseg.errors import LabelMappingError

#: The organs every built-in phantom labels, in the order of their label ids (1..7).
CORE_ORGANS: tuple[str, ...] = (
    "liver",
    "spleen",
    "kidney_left",
    "kidney_right",
    "lungs",
    "heart",
    "bone",
)

#: Abdominal organs a human model can learn beyond the core set, where public human CT labels
#: them (TotalSegmentator v2 draws all five).
HUMAN_EXTRA_ORGANS: tuple[str, ...] = (
    "stomach",
    "pancreas",
    "gallbladder",
    "urinary_bladder",
    "aorta",
)

#: The human model's vocabulary: the core organs keep ids 1..7 and the extra ones follow
#: (8 stomach, 9 pancreas, 10 gallbladder, 11 urinary_bladder, 12 aorta), so a label map written
#: with :data:`CORE_ORGANS` means the same under this vocabulary.
HUMAN_ORGANS: tuple[str, ...] = CORE_ORGANS + HUMAN_EXTRA_ORGANS

#: Organ sets per species: a new workspace's default organs. Human stays at the core set: the
#: shipped human model, the demo and existing workspaces segment those 7; a workspace or a human
#: model that wants the extra organs asks for :data:`HUMAN_ORGANS` explicitly.
SPECIES_ORGANS: dict[str, tuple[str, ...]] = {
    "human": CORE_ORGANS,
    "rabbit": CORE_ORGANS,
    "mouse": CORE_ORGANS,
    "rat": CORE_ORGANS,
    "dog": CORE_ORGANS,
    "pig": CORE_ORGANS,
    # The labelled mouse head template (../shared/data/mouse/template).
    "mouse_head": ("skull", "mandible_left", "mandible_right", "endocranial_space"),
}

#: Left/right organ pairs: a left-right image flip must swap their labels.
LR_PAIRS: tuple[tuple[str, str], ...] = (
    ("kidney_left", "kidney_right"),
    ("lung_left", "lung_right"),
    ("adrenal_gland_left", "adrenal_gland_right"),
    ("mandible_left", "mandible_right"),
    ("femur_left", "femur_right"),
)

#: TotalSegmentator v2 label ids (its ``labels.json``, 117 classes).
TOTALSEG_V2: dict[int, str] = {
    1: "spleen",
    2: "kidney_right",
    3: "kidney_left",
    4: "gallbladder",
    5: "liver",
    6: "stomach",
    7: "pancreas",
    8: "adrenal_gland_right",
    9: "adrenal_gland_left",
    10: "lung_upper_lobe_left",
    11: "lung_lower_lobe_left",
    12: "lung_upper_lobe_right",
    13: "lung_middle_lobe_right",
    14: "lung_lower_lobe_right",
    15: "esophagus",
    16: "trachea",
    17: "thyroid_gland",
    18: "small_bowel",
    19: "duodenum",
    20: "colon",
    21: "urinary_bladder",
    22: "prostate",
    23: "kidney_cyst_left",
    24: "kidney_cyst_right",
    25: "sacrum",
    26: "vertebrae_S1",
    27: "vertebrae_L5",
    28: "vertebrae_L4",
    29: "vertebrae_L3",
    30: "vertebrae_L2",
    31: "vertebrae_L1",
    32: "vertebrae_T12",
    33: "vertebrae_T11",
    34: "vertebrae_T10",
    35: "vertebrae_T9",
    36: "vertebrae_T8",
    37: "vertebrae_T7",
    38: "vertebrae_T6",
    39: "vertebrae_T5",
    40: "vertebrae_T4",
    41: "vertebrae_T3",
    42: "vertebrae_T2",
    43: "vertebrae_T1",
    44: "vertebrae_C7",
    45: "vertebrae_C6",
    46: "vertebrae_C5",
    47: "vertebrae_C4",
    48: "vertebrae_C3",
    49: "vertebrae_C2",
    50: "vertebrae_C1",
    51: "heart",
    52: "aorta",
    53: "pulmonary_vein",
    54: "brachiocephalic_trunk",
    55: "subclavian_artery_right",
    56: "subclavian_artery_left",
    57: "common_carotid_artery_right",
    58: "common_carotid_artery_left",
    59: "brachiocephalic_vein_left",
    60: "brachiocephalic_vein_right",
    61: "atrial_appendage_left",
    62: "superior_vena_cava",
    63: "inferior_vena_cava",
    64: "portal_vein_and_splenic_vein",
    65: "iliac_artery_left",
    66: "iliac_artery_right",
    67: "iliac_vena_left",
    68: "iliac_vena_right",
    69: "humerus_left",
    70: "humerus_right",
    71: "scapula_left",
    72: "scapula_right",
    73: "clavicula_left",
    74: "clavicula_right",
    75: "femur_left",
    76: "femur_right",
    77: "hip_left",
    78: "hip_right",
    79: "spinal_cord",
    80: "gluteus_maximus_left",
    81: "gluteus_maximus_right",
    82: "gluteus_medius_left",
    83: "gluteus_medius_right",
    84: "gluteus_minimus_left",
    85: "gluteus_minimus_right",
    86: "autochthon_left",
    87: "autochthon_right",
    88: "iliopsoas_left",
    89: "iliopsoas_right",
    90: "brain",
    91: "skull",
    92: "rib_left_1",
    93: "rib_left_2",
    94: "rib_left_3",
    95: "rib_left_4",
    96: "rib_left_5",
    97: "rib_left_6",
    98: "rib_left_7",
    99: "rib_left_8",
    100: "rib_left_9",
    101: "rib_left_10",
    102: "rib_left_11",
    103: "rib_left_12",
    104: "rib_right_1",
    105: "rib_right_2",
    106: "rib_right_3",
    107: "rib_right_4",
    108: "rib_right_5",
    109: "rib_right_6",
    110: "rib_right_7",
    111: "rib_right_8",
    112: "rib_right_9",
    113: "rib_right_10",
    114: "rib_right_11",
    115: "rib_right_12",
    116: "sternum",
    117: "costal_cartilages",
}

#: Digimouse atlas label ids (Dogdas et al. 2007), as in ../shared/data/mouse/digimouse.
DIGIMOUSE: dict[int, str] = {
    1: "skin",
    2: "skeleton",
    3: "eye",
    4: "medulla",
    5: "cerebellum",
    6: "olfactory_bulbs",
    7: "external_cerebrum",
    8: "striatum",
    9: "heart",
    10: "rest_of_brain",
    11: "masseter_muscles",
    12: "lachrymal_glands",
    13: "bladder",
    14: "testis",
    15: "stomach",
    16: "spleen",
    17: "pancreas",
    18: "liver",
    19: "kidneys",
    20: "adrenal_glands",
    21: "lungs",
}

#: Mouse head template ids (Maga et al. 2017), as in ../shared/data/mouse/template.
MOUSE_HEAD_TEMPLATE: dict[int, str] = {
    1: "skull",
    2: "mandible_right",
    3: "bone_undocumented",
    15: "endocranial_space",
    21: "mandible_left",
}


def totalseg_structure_to_organ(structure: str) -> str | None:
    """The vetseg organ a TotalSegmentator structure belongs to, or None when vetseg ignores it.

    Stomach, pancreas, gallbladder, urinary bladder and aorta keep their names (they count only
    where the target vocabulary holds them, e.g. :data:`HUMAN_ORGANS`). Lung lobes merge into
    ``lungs``; ribs, vertebrae, sacrum, skull, sternum, costal cartilages,
    limb and girdle bones merge into ``bone``. Heart chambers of TotalSegmentator v1 merge into
    ``heart``.
    """
    if structure in ("liver", "spleen", "kidney_left", "kidney_right", "heart"):
        return structure
    if structure in HUMAN_EXTRA_ORGANS:
        return structure
    if structure.startswith("lung_"):
        return "lungs"
    if structure.startswith("heart_"):
        return "heart"
    bone_prefixes = (
        "rib_",
        "vertebrae_",
        "sacrum",
        "skull",
        "sternum",
        "costal_cartilages",
        "humerus_",
        "scapula_",
        "clavicula_",
        "femur_",
        "hip_",
    )
    if structure.startswith(bone_prefixes):
        return "bone"
    return None


def totalseg_mapping(organs: Sequence[str] = CORE_ORGANS) -> dict[int, str | None]:
    """TotalSegmentator v2 ids -> vetseg organ names in ``organs`` (None: background)."""
    out: dict[int, str | None] = {}
    for label_id, structure in TOTALSEG_V2.items():
        organ = totalseg_structure_to_organ(structure)
        out[label_id] = organ if organ in organs else None
    return out


def digimouse_mapping(organs: Sequence[str] = CORE_ORGANS) -> dict[int, str | None]:
    """Digimouse ids -> vetseg organs. The atlas draws both kidneys as one label (19): they are
    split into left and right by the body's midline in :func:`split_left_right`. Its stomach
    (15), pancreas (17) and bladder (13, -> ``urinary_bladder``) map where ``organs`` holds them;
    it draws no gallbladder (mice have one, the atlas leaves it in the liver) and no aorta."""
    names = {
        "liver": "liver",
        "spleen": "spleen",
        "lungs": "lungs",
        "heart": "heart",
        "skeleton": "bone",
        "kidneys": "kidneys",
        "stomach": "stomach",
        "pancreas": "pancreas",
        "bladder": "urinary_bladder",
    }
    out: dict[int, str | None] = {}
    for label_id, structure in DIGIMOUSE.items():
        organ = names.get(structure)
        if organ == "kidneys":
            out[label_id] = "kidneys" if "kidney_left" in organs else None
        else:
            out[label_id] = organ if organ in organs else None
    return out


def mouse_head_mapping(
    organs: Sequence[str] = SPECIES_ORGANS["mouse_head"],
) -> dict[int, str | None]:
    """Mouse head template ids -> vetseg organs (the undocumented bone id 3 joins the skull)."""
    names = {
        1: "skull",
        2: "mandible_right",
        3: "skull",
        15: "endocranial_space",
        21: "mandible_left",
    }
    return {i: (n if n in organs else None) for i, n in names.items()}


#: Human organ -> animal organ. The animal model's head starts from nothing, but the zero-shot
#: baseline and the organ mapping in reports use this correspondence. Every organ of
#: :data:`HUMAN_ORGANS` has its namesake in the common laboratory and companion species (rabbit,
#: dog, pig, mouse, rat); the rat alone has no gallbladder, which its workspace simply leaves out.
HUMAN_TO_ANIMAL: dict[str, str] = {organ: organ for organ in HUMAN_ORGANS}


def lr_swap_permutation(organs: Sequence[str]) -> list[int]:
    """Channel order after a left-right flip: index ``i`` takes the channel of ``i``'s partner.

    Args:
        organs: the vocabulary, one channel per organ.

    Returns:
        A permutation of ``range(len(organs))``; organs without a partner in ``organs`` map to
        themselves.
    """
    position = {name: i for i, name in enumerate(organs)}
    perm = list(range(len(organs)))
    for left, right in LR_PAIRS:
        if left in position and right in position:
            perm[position[left]], perm[position[right]] = position[right], position[left]
    return perm


def organ_ids(organs: Sequence[str]) -> dict[str, int]:
    """vetseg's label ids for a vocabulary: ``organs[i]`` -> ``i + 1``."""
    return {name: i + 1 for i, name in enumerate(organs)}


def remap_labels(
    labels: np.ndarray,
    mapping: Mapping[int, str | None],
    organs: Sequence[str],
    source: str = "label map",
    strict: bool = True,
) -> np.ndarray:
    """Turn a dataset's label ids into vetseg ids for ``organs``.

    Args:
        labels: integer label map of any shape.
        mapping: dataset id -> organ name (None: treat as background).
        organs: the target vocabulary (ids ``1..len(organs)``).
        source: file name for error messages.
        strict: when True, an id that is neither 0 nor in ``mapping`` is an error.

    Returns:
        A uint8 (or uint16 for over 255 organs) label map of the same shape.

    Raises:
        LabelMappingError: on ids the mapping does not know (strict), or organs not in ``organs``.
    """
    target = organ_ids(organs)
    present = _present_ids(labels)
    unknown = [int(v) for v in present if v != 0 and int(v) not in mapping]
    if unknown and strict:
        shown = ", ".join(str(v) for v in unknown[:8])
        raise LabelMappingError(
            f"{source}: label id(s) {shown} are not in the organ mapping in use."
        )
    lut_size = int(max(present.max(initial=0), max(mapping, default=0))) + 1
    lut = np.zeros(lut_size, dtype=np.uint16)
    for label_id, organ in mapping.items():
        if organ is None:
            continue
        if organ not in target:
            raise LabelMappingError(
                f"{source}: organ {organ!r} is not in the vocabulary {list(organs)}."
            )
        lut[label_id] = target[organ]
    if labels.min(initial=0) < 0:
        raise LabelMappingError(f"{source}: label ids must not be negative.")
    lut = lut.astype(np.uint8 if len(organs) < 256 else np.uint16)
    if _small_unsigned(labels):
        return lut[labels]  # uint8/uint16 index directly: no int64 copy of the volume
    return lut[labels.astype(np.int64)]


def _small_unsigned(labels: np.ndarray) -> bool:
    return labels.dtype.kind == "u" and labels.dtype.itemsize <= 2


def _present_ids(labels: np.ndarray) -> np.ndarray:
    """The ids a label map holds, sorted.

    For uint8/uint16 maps (what label files hold) a histogram in chunks: linear and without a
    copy of the volume, where ``np.unique`` sorts an int64 copy (seconds and 800 MB for a
    512 x 512 x 400 label, which a browser save in ``vetseg review`` waits for).
    """
    if not _small_unsigned(labels):
        return np.unique(labels)
    counts = np.zeros(1 << (8 * labels.dtype.itemsize), np.int64)
    flat = labels.reshape(-1)
    chunk = 1 << 22
    for start in range(0, flat.size, chunk):
        counts += np.bincount(flat[start : start + chunk], minlength=counts.size)
    return np.flatnonzero(counts)


def identity_mapping(names: Mapping[int, str], organs: Iterable[str]) -> dict[int, str | None]:
    """Map ids whose names are vetseg organs to themselves, the rest to background."""
    wanted = set(organs)
    return {i: (n if n in wanted else None) for i, n in names.items()}


def split_left_right(
    mask: np.ndarray, body: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Split a paired organ drawn as one label (Digimouse's ``kidneys``) into left and right.

    The arrays must be in vetseg's canonical orientation (``vetseg.io.to_canonical``): axis 2
    runs from the patient's right to the left, so "left" is the side of higher x index. The
    midline is the centre of ``body`` (or of ``mask``) along x. Each connected piece of
    ``mask`` goes whole to the side of its centre; a piece with more than a fifth of its voxels
    on each side (two organs that touch) is cut at the midline.

    Args:
        mask: bool ``[z, y, x]``, the paired organ.
        body: bool ``[z, y, x]``, the body, for the midline (default: ``mask`` itself).

    Returns:
        ``(left, right)`` bool masks that partition ``mask``.
    """
    from scipy import ndimage  # scipy only here: the vocabularies load without it

    mask = np.asarray(mask, dtype=bool)
    reference = mask if body is None or not np.any(body) else np.asarray(body, dtype=bool)
    if not mask.any():
        return mask.copy(), mask.copy()
    midline = float(ndimage.center_of_mass(reference)[2])
    pieces, count = ndimage.label(mask)
    x_index = np.broadcast_to(np.arange(mask.shape[2]), mask.shape)
    on_left = x_index > midline
    left = np.zeros_like(mask)
    for piece in range(1, count + 1):
        voxels = pieces == piece
        share_left = float(on_left[voxels].mean())
        if 0.2 < share_left < 0.8:
            left |= voxels & on_left
        elif share_left >= 0.5:
            left |= voxels
    return left, mask & ~left
