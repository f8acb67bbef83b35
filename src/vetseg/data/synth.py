"""CT-like training cases synthesised from a real label atlas (e.g. the Digimouse atlas).

An atlas holds real anatomy but no CT: Digimouse draws 21 structures of a real mouse, a
TotalSegmentator label map 117 structures of a real patient. This module turns such an atlas
into image + label pairs: each structure gets a tissue class (liver, kidney, bone, lung, brain,
gut, fat, ...) and each case draws its own HU for every tissue from realistic ranges, bends the
anatomy with a smooth random deformation (the same field for image and labels; labels by
nearest neighbour), adds texture (renal cortex and medulla, bone cortex and marrow, lung and
liver vessels, gas in the gut), partial-volume blur and noise. Voxels outside the body are air;
voxels inside the body that the atlas leaves unlabelled become a mixture of muscle, fat and gut.

The anatomy is real, the intensities are not: these cases are marked ``"synthetic": true`` and
name their ``"source_atlas"`` in ``dataset.json``. Labels are written with vetseg's organ ids
(:data:`vetseg.labels.CORE_ORGANS`, or the mouse head vocabulary for the head template).

To keep cases small and fast the atlas is cropped to the region that holds the target organs
(the torso for Digimouse: the head and tail are dropped) and resampled isotropically so that no
in-plane side exceeds :data:`MAX_IN_PLANE` voxels (Digimouse: 0.2 mm -> 0.25 mm).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from vetseg.data.phantoms import (
    TISSUE_HU,
    check_new_dataset_folder,
    draw_tissue_hu,
    smooth_noise,
    write_msd_dataset,
)
from vetseg.errors import InputError, LabelMappingError
from vetseg.io.image import ImageMeta, read_label, to_canonical
from vetseg.labels import (
    CORE_ORGANS,
    DIGIMOUSE,
    MOUSE_HEAD_TEMPLATE,
    SPECIES_ORGANS,
    TOTALSEG_V2,
    digimouse_mapping,
    mouse_head_mapping,
    organ_ids,
    split_left_right,
    totalseg_mapping,
)

#: Mapping names :func:`synthesize_dataset` accepts.
MAPPINGS: tuple[str, ...] = ("auto", "digimouse", "totalseg", "mouse_head", "vetseg")
#: The output's largest in-plane side in voxels (the atlas is resampled down to it).
MAX_IN_PLANE = 128
#: The output's largest number of slices.
MAX_SLICES = 192

# Tissue values beyond the phantoms' table: (contrast-enhanced, non-contrast, case spread).
_EXTRA_HU: dict[str, tuple[float, float, float]] = {
    "brain": (38.0, 35.0, 3.0),
    "gland": (80.0, 45.0, 8.0),
    "pancreas": (95.0, 45.0, 8.0),
    "mouse_lung": (-520.0, -520.0, 60.0),
}
_HU = {**TISSUE_HU, **_EXTRA_HU}

# Extra ids in the prepared atlas (above any atlas id), for what the atlas does not draw.
_BODY_FILL = 60001  # inside the body, unlabelled: muscle, fat and gut
_SUBCUTIS = 60002  # a fat layer under a skin the atlas lacks
_KIDNEY_LEFT = 60003
_KIDNEY_RIGHT = 60004
_WALL = 60005  # the muscle wall under that fat layer


@dataclass(frozen=True)
class _Atlas:
    """A prepared atlas: canonical, cropped, resampled, with ids for tissue classes."""

    ids: np.ndarray  # uint16 [z, y, x]
    meta: ImageMeta
    tissue: dict[int, str]  # id -> tissue recipe
    organ: dict[int, int]  # id -> vetseg organ id (absent: background)
    organs: tuple[str, ...]
    species: str  # "mouse", "human", or "" when the atlas does not say
    kind: str


# --------------------------------------------------------------------------- mappings
def _tissue_of(name: str, species: str) -> str:
    """The tissue recipe of an atlas structure, from its name."""
    n = name.lower()
    rules: list[tuple[tuple[str, ...], str]] = [
        (("skin",), "skin"),
        (("kidney_cyst", "gallbladder", "bladder", "eye"), "fluid"),
        (("kidney",), "kidney"),
        (("liver",), "liver"),
        (("spleen",), "spleen"),
        (("pancreas",), "pancreas"),
        (("lung",), "lung"),
        (("trachea",), "air"),
        (("heart", "atrial_appendage"), "heart"),
        (("aorta", "artery", "brachiocephalic_trunk"), "artery"),
        (("vein", "vena"), "vein"),
        (("stomach", "colon", "bowel", "duodenum", "esophagus"), "gut"),
        (("costal_cartilage",), "cartilage"),
        (
            (
                "skeleton",
                "skull",
                "mandible",
                "bone",
                "vertebra",
                "rib_",
                "sacrum",
                "hip_",
                "femur",
                "humerus",
                "scapula",
                "clavicula",
                "sternum",
            ),
            "bone",
        ),
        (
            (
                "brain",
                "cerebell",
                "cerebrum",
                "striatum",
                "olfactory",
                "medulla",
                "endocranial",
                "spinal_cord",
            ),
            "brain",
        ),
        (("muscle", "gluteus", "autochthon", "iliopsoas", "masseter"), "muscle"),
        (("gland", "testis", "prostate", "thyroid"), "gland"),
    ]
    for keys, tissue in rules:
        if any(k in n for k in keys):
            return "mouse_lung" if tissue == "lung" and species == "mouse" else tissue
    return "muscle"


def _names_beside(path: Path) -> dict[int, str] | None:
    """``labels.json`` beside the atlas ({"1": "name", ...}), if there is one."""
    side = path.parent / "labels.json"
    if not side.is_file():
        return None
    try:
        raw = json.loads(side.read_text(encoding="utf-8"))
        return {int(k): str(v) for k, v in raw.items() if str(k).strip().isdigit()}
    except (OSError, ValueError, AttributeError):
        return None


def _detect_kind(path: Path, ids: set[int], shape: tuple[int, ...]) -> str:
    """Which label vocabulary an atlas uses: by a ``labels.json`` beside it, else by its ids."""
    names = _names_beside(path)
    if names:
        values = set(names.values())
        if {"skeleton", "kidneys"} <= values:
            return "digimouse"
        if "endocranial_space" in values:
            return "mouse_head"
        if values & {"liver", "spleen", "kidney_left", "lung_upper_lobe_left", "vertebrae_L1"}:
            return "totalseg"
    if ids and ids <= set(DIGIMOUSE) and len(ids) >= 15:
        return "digimouse"  # Digimouse draws (nearly) all of its 21 ids
    if ids and ids <= set(MOUSE_HEAD_TEMPLATE) and 15 in ids:
        return "mouse_head"
    if ids and ids <= set(TOTALSEG_V2):
        return "totalseg"
    shown = ", ".join(str(i) for i in sorted(ids)[:8])
    raise LabelMappingError(
        f"{path}: cannot tell which atlas this is (label ids {shown}, shape {shape}); pass "
        "--mapping digimouse, totalseg, mouse_head or vetseg."
    )


def _vocabulary(
    kind: str, organs: Sequence[str] | None = None
) -> tuple[dict[int, str], dict[int, str | None], tuple[str, ...], str]:
    """(id -> structure name, id -> vetseg organ, organ vocabulary, species) of an atlas kind.

    ``organs``: the vocabulary to label (Digimouse and TotalSegmentator atlases; default the
    core organs); organs the atlas does not draw are left out.
    """
    if kind in ("digimouse", "totalseg"):
        wanted = tuple(organs) if organs else CORE_ORGANS
        if kind == "digimouse":
            names, mapping, species = dict(DIGIMOUSE), dict(digimouse_mapping(wanted)), "mouse"
        else:
            names, mapping, species = dict(TOTALSEG_V2), dict(totalseg_mapping(wanted)), "human"
        drawn = {o for o in mapping.values() if o}
        if "kidneys" in drawn:  # one atlas label, split into left and right later
            drawn |= {"kidney_left", "kidney_right"}
        return names, mapping, tuple(o for o in wanted if o in drawn), species
    if kind == "mouse_head":
        organs = SPECIES_ORGANS["mouse_head"]
        return dict(MOUSE_HEAD_TEMPLATE), dict(mouse_head_mapping()), organs, "mouse"
    names = {i + 1: name for i, name in enumerate(CORE_ORGANS)}
    return names, dict(names), CORE_ORGANS, ""


# --------------------------------------------------------------------------- preparation
def _fill_body(mask: np.ndarray, convex: bool) -> np.ndarray:
    """The body: every axial slice of ``mask`` with its holes filled, or its convex hull.

    An atlas that draws the skin (Digimouse) has a closed outline to fill; one that draws
    only organs (TotalSegmentator) gets the convex hull of its organs in each slice.
    """
    out = np.zeros_like(mask)
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        if not convex:
            out[k] = ndimage.binary_fill_holes(mask[k])
            continue
        points = np.argwhere(mask[k])
        try:
            hull = ConvexHull(points[:, ::-1] + 0.5)
        except QhullError:  # a line or a point: nothing to hull
            out[k] = mask[k]
            continue
        canvas = Image.new("1", (mask.shape[2], mask.shape[1]), 0)
        ImageDraw.Draw(canvas).polygon([tuple(p) for p in hull.points[hull.vertices]], fill=1)
        out[k] = np.asarray(canvas, dtype=bool) | mask[k]
    return out


def _prepare(path: Path, mapping: str, organs: Sequence[str] | None = None) -> _Atlas:
    """Read, canonicalise, crop and resample an atlas; add body, subcutis and kidney sides."""
    if mapping not in MAPPINGS:
        raise InputError(
            f"Unknown atlas mapping {mapping!r} for {path}: choose one of {', '.join(MAPPINGS)}."
        )
    raw, meta = read_label(path)
    atlas, meta = to_canonical(raw, meta)
    present = {int(v) for v in np.unique(atlas) if v != 0}
    kind = _detect_kind(path, present, atlas.shape) if mapping == "auto" else mapping
    names, organ_of, organs, species = _vocabulary(kind, organs)
    side_names = _names_beside(path)
    if side_names and kind != "vetseg":
        names = {**names, **side_names}
    unknown = sorted(present - set(organ_of) - set(names))
    if unknown and kind != "vetseg":
        shown = ", ".join(str(v) for v in unknown[:8])
        raise LabelMappingError(f"{path}: label id(s) {shown} are not in the {kind} atlas.")
    targets = organ_ids(organs)
    wanted = [i for i in present if organ_of.get(i) in targets or organ_of.get(i) == "kidneys"]
    if not wanted:
        raise LabelMappingError(
            f"{path}: none of the organs {', '.join(organs)} is labelled in this atlas."
        )

    # Crop to the target organs (+10 % of their extent), then resample isotropically. The
    # skeleton runs from head to tail, so the soft organs say where the torso is.
    soft = [i for i in wanted if organ_of.get(i) != "bone"] or wanted
    organ_mask = np.isin(atlas, soft)
    body_any = atlas > 0
    zs = np.flatnonzero(organ_mask.any(axis=(1, 2)))
    margin = max(2, int(0.1 * (zs[-1] - zs[0] + 1)))
    z0, z1 = max(0, zs[0] - margin), min(atlas.shape[0], zs[-1] + margin + 1)
    ys = np.flatnonzero(body_any[z0:z1].any(axis=(0, 2)))
    xs = np.flatnonzero(body_any[z0:z1].any(axis=(0, 1)))
    pad = 3
    y0, y1 = max(0, ys[0] - pad), min(atlas.shape[1], ys[-1] + pad + 1)
    x0, x1 = max(0, xs[0] - pad), min(atlas.shape[2], xs[-1] + pad + 1)
    crop = atlas[z0:z1, y0:y1, x0:x1].astype(np.uint16)
    origin = meta.index_to_physical((z0, y0, x0))
    sx, sy, sz = meta.spacing
    factor = max(1.0, max(crop.shape[1], crop.shape[2]) / MAX_IN_PLANE, crop.shape[0] / MAX_SLICES)
    if factor > 1.0:
        target = tuple(max(1, int(round(n / factor))) for n in crop.shape)
        zoom = [t / n for t, n in zip(target, crop.shape, strict=True)]
        crop = ndimage.zoom(crop, zoom, order=0, grid_mode=True, mode="grid-constant")
        sx, sy, sz = sx / zoom[2], sy / zoom[1], sz / zoom[0]
    spacing = (float(sx), float(sy), float(sz))
    meta = ImageMeta(spacing=spacing, origin=tuple(origin), direction=meta.direction)

    tissue = {i: _tissue_of(names.get(i, f"label_{i}"), species) for i in present}
    organ = {i: targets[o] for i, o in organ_of.items() if o in targets and i in present}
    has_skin = any(t == "skin" for t in tissue.values())
    body = _fill_body(crop > 0, convex=not has_skin)
    if not has_skin:
        # An atlas without skin: muscle wall, subcutaneous fat and skin around its organs.
        disk = ndimage.generate_binary_structure(3, 1)
        disk[0] = disk[2] = False  # grow in-plane only
        wall = ndimage.binary_dilation(body, disk, max(1, int(round(8.0 / min(spacing)))))
        outer = ndimage.binary_dilation(wall, disk, max(1, int(round(12.0 / min(spacing)))))
        crop[outer & ~wall] = _SUBCUTIS
        crop[wall & ~body] = _WALL
        tissue[_SUBCUTIS] = "fat"
        tissue[_WALL] = "muscle"
        body = outer
    crop[body & (crop == 0)] = _BODY_FILL
    tissue[_BODY_FILL] = "body_fill"
    if has_skin:
        # Digimouse's "skin" fills everything it does not name (muscle, gut, fat): keep a skin
        # of about half a millimetre and fill the rest like an unlabelled body.
        skin_ids = [i for i, t in tissue.items() if t == "skin"]
        depth = max(1, int(round(0.5 / min(spacing))))
        deep = ndimage.binary_erosion(body, iterations=depth)
        crop[deep & np.isin(crop, skin_ids)] = _BODY_FILL

    kidney_ids = [i for i in present if organ_of.get(i) == "kidneys"]
    if kidney_ids and "kidney_left" in targets:
        kidneys = np.isin(crop, kidney_ids)
        left, right = split_left_right(kidneys, body)
        crop[left] = _KIDNEY_LEFT
        crop[right] = _KIDNEY_RIGHT
        tissue[_KIDNEY_LEFT] = tissue[_KIDNEY_RIGHT] = "kidney"
        organ[_KIDNEY_LEFT] = targets["kidney_left"]
        organ[_KIDNEY_RIGHT] = targets["kidney_right"]
    return _Atlas(crop, meta, tissue, organ, organs, species, kind)


# --------------------------------------------------------------------------- one case
def _deform(atlas: np.ndarray, rng: np.random.Generator, spacing: tuple[float, ...]) -> np.ndarray:
    """The atlas bent by a smooth random field and scaled by a few per cent (nearest)."""
    shape = atlas.shape
    extent = min(n * s for n, s in zip(shape, spacing[::-1], strict=True))
    cell = max(4.0, min(shape) / 3.0)
    amplitude_mm = 0.03 * extent
    scale = rng.uniform(0.94, 1.06, size=3)
    centre = [(n - 1) / 2 for n in shape]
    axes = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    coords = []
    for axis in range(3):
        bend = smooth_noise(rng, shape, cell) * (amplitude_mm / spacing[2 - axis])
        coords.append(centre[axis] + (axes[axis] - centre[axis]) / scale[axis] + bend)
    return ndimage.map_coordinates(atlas, coords, order=0, mode="nearest")


def _shell(mask: np.ndarray, depth: int) -> np.ndarray:
    """Voxels of ``mask`` within ``depth`` voxels of its surface."""
    if depth < 1 or not mask.any():
        return mask.copy()
    return mask & ~ndimage.binary_erosion(mask, iterations=depth)


def _case_image(
    ids: np.ndarray,
    atlas: _Atlas,
    rng: np.random.Generator,
) -> tuple[np.ndarray, bool]:
    """Paint a CT image (int16 HU) from a deformed id map; returns it and the contrast phase."""
    contrast = bool(rng.random() < 0.75)
    hu_of = draw_tissue_hu(rng, contrast, _HU)
    mouse = atlas.species == "mouse"
    image = np.full(ids.shape, hu_of["air"], dtype=np.float32)
    ids_of: dict[str, list[int]] = {}
    for label_id, tissue in atlas.tissue.items():
        ids_of.setdefault(tissue, []).append(label_id)
    masks = {tissue: np.isin(ids, members) for tissue, members in ids_of.items()}
    vox_mm = float(min(atlas.meta.spacing))

    def texture(cell_mm: float) -> np.ndarray:
        return smooth_noise(rng, ids.shape, max(1.5, cell_mm / vox_mm))

    for tissue, mask in masks.items():
        if tissue in hu_of:
            image[mask] = hu_of[tissue]
    if "body_fill" in masks:
        # Unlabelled body: muscle and fat, with gut loops and gas bubbles in them.
        fill = masks["body_fill"]
        mix = texture(3.0 if mouse else 25.0)
        image[fill] = np.where(mix[fill] > (0.2 if mouse else -0.1), hu_of["muscle"], hu_of["fat"])
        gas = texture(1.0 if mouse else 10.0)
        loops = fill & (np.abs(texture(4.0 if mouse else 30.0)) < 0.25)
        image[loops] = hu_of["bowel"]
        image[loops & (gas > 1.0)] = hu_of["gas"]
    if "gut" in masks:
        gut = masks["gut"]
        image[gut] = hu_of["digesta"] + 25.0 * texture(1.0 if mouse else 8.0)[gut]
        image[gut & (texture(1.5 if mouse else 12.0) > 0.9)] = hu_of["gas"]
        image[_shell(gut, 1)] = hu_of["bowel_wall"]
    if "kidney" in masks:
        kidney = masks["kidney"]
        image[kidney] = hu_of["kidney_medulla"]
        cortex_vox = max(1, int(round((1.0 if mouse else 6.0) / vox_mm)))
        image[_shell(kidney, cortex_vox)] = hu_of["kidney_cortex"]
    if "bone" in masks:
        bone = masks["bone"]
        image[bone] = hu_of["bone_marrow"]
        cortex_vox = max(1, int(round((0.25 if mouse else 2.0) / vox_mm)))
        image[_shell(bone, cortex_vox)] = hu_of["bone_cortex"]
    if "heart" in masks:
        heart = masks["heart"]
        image[heart] = hu_of["artery"]
        wall_vox = max(1, int(round((0.8 if mouse else 8.0) / vox_mm)))
        image[_shell(heart, wall_vox)] = hu_of["myocardium"]
    for tissue, vessel, cell in (
        ("lung", "lung_vessel", 25.0),
        ("mouse_lung", "lung_vessel", 2.0),
        ("liver", "liver_vessel", 40.0),
    ):
        if tissue in masks:
            organ = masks[tissue]
            cell_mm = cell if not (mouse and tissue == "liver") else 3.0
            tubes = (np.abs(texture(cell_mm)) < 0.2) & (np.abs(texture(cell_mm)) < 0.3)
            image[organ & tubes] = hu_of[vessel]

    # Noise before the blur, scaled so that about ``sigma`` remains after it (CT-like grain).
    sigma = float(rng.uniform(10.0, 20.0))
    blur = 0.6
    gain = np.sqrt((ndimage.gaussian_filter(_delta(), blur) ** 2).sum())
    image += rng.standard_normal(ids.shape, dtype=np.float32) * (sigma / gain)
    image = ndimage.gaussian_filter(image, blur)
    return np.clip(np.rint(image), -1024, 3071).astype(np.int16), contrast


def _delta() -> np.ndarray:
    out = np.zeros((9, 9, 9), dtype=np.float64)
    out[4, 4, 4] = 1.0
    return out


def _organ_labels(ids: np.ndarray, atlas: _Atlas) -> np.ndarray:
    """vetseg label ids of a deformed id map."""
    lut = np.zeros(int(ids.max()) + 1, dtype=np.uint8)
    for label_id, organ in atlas.organ.items():
        if label_id < len(lut):
            lut[label_id] = organ
    return lut[ids]


def synthesize_dataset(
    labels: Path,
    out: Path,
    cases: int,
    seed: int,
    mapping: str = "auto",
    organs: Sequence[str] | None = None,
) -> list[Path]:
    """Write ``cases`` CT-like cases synthesised from a label atlas, in the MSD layout.

    Args:
        labels: the atlas label map (NIfTI, NRRD, ...).
        out: new dataset folder (must not exist or be empty).
        cases: number of cases; case ``k`` uses ``np.random.default_rng([seed, k])``.
        seed: random seed.
        mapping: the atlas's label ids: ``"auto"`` (a ``labels.json`` beside the file, else the
            ids: Digimouse draws ids 1..21, TotalSegmentator up to 117), ``"digimouse"``,
            ``"totalseg"``, ``"mouse_head"`` or ``"vetseg"`` (already vetseg ids).
        organs: organs to label (Digimouse and TotalSegmentator atlases; default the core
            organs), e.g. :data:`vetseg.labels.HUMAN_ORGANS` for stomach, pancreas, bladder.

    Returns:
        The label files written, one per case.

    Raises:
        InputError: unreadable atlas, unknown mapping, ``out`` not empty, fewer than one case.
        LabelMappingError: ids the mapping does not know, or no target organ in the atlas.
    """
    labels, out = Path(labels), Path(out)
    if cases < 1:
        raise InputError(f"Cannot write {out}: the number of cases must be at least 1.")
    check_new_dataset_folder(out)
    atlas = _prepare(labels, mapping, organs)

    def generate() -> Iterator[tuple[str, np.ndarray, np.ndarray, ImageMeta]]:
        for k in range(cases):
            rng = np.random.default_rng([seed, k])
            ids = _deform(atlas.ids, rng, atlas.meta.spacing)
            image, _ = _case_image(ids, atlas, rng)
            yield f"{atlas.species or 'case'}_{k:03d}", image, _organ_labels(ids, atlas), atlas.meta

    info: Mapping[str, object] = {
        "description": (
            f"SYNTHESISED CT-like images from the real label atlas {labels.name} ({atlas.kind}): "
            "real anatomy, made-up intensities (tissue HU, contrast-enhanced in about 3 cases "
            "of 4, deformation, blur, noise); not real scans."
        ),
        **({"species": atlas.species} if atlas.species else {}),
        "synthetic": True,
        "source_atlas": str(labels),
        "atlas_kind": atlas.kind,
        "seed": seed,
        "generator": "vetseg.data.synth",
    }
    return write_msd_dataset(out, generate(), atlas.organs, info)
