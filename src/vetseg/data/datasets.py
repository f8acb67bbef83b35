"""Labelled CT datasets on disk: find the cases, load them in vetseg's terms, split them by case.

Three layouts are recognised by :func:`open_dataset`, in this order:

``msd``
    The Medical Segmentation Decathlon / nnU-Net layout: ``dataset.json``, ``imagesTr/`` and
    ``labelsTr/``. Images are ``<case>_0000<ending>`` (nnU-Net) or ``<case><ending>`` (MSD);
    labels ``<case><ending>``. ``dataset.json`` names the labels either nnU-Net v2 style
    (``{"background": 0, "liver": 1}``) or v1 / MSD style (``{"0": "background", "1": "liver"}``);
    ``file_ending`` defaults to ``.nii.gz``. ``imagesTs/`` (unlabelled) is not read.
``totalseg``
    The public TotalSegmentator dataset: one folder per subject with ``ct.nii.gz`` and
    ``segmentations/<structure>.nii.gz``, one binary mask per structure.
``pairs``
    A plain folder of ``<case><ext>`` + ``<case>_seg<ext>`` files (``.nii.gz``, ``.nii``,
    ``.nrrd``, ``.mha``, ``.mhd``). Label names come from ``dataset.json`` (``"labels"``) or
    ``labels.json`` in the folder (either style above); without them the ids are vetseg's own
    (``organs[i]`` has id ``i + 1``).

An optional ``dataset.json`` may also say ``"synthetic": true`` (phantoms, atlas-synthesised
images) and ``"species": "rabbit"``; results on synthetic data must say so.

Dataset label names become vetseg organs by name (``"Left Kidney"`` -> ``kidney_left``), and by
TotalSegmentator's structure names (lung lobes -> ``lungs``, ribs and vertebrae -> ``bone``);
everything else is background.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vetseg.data.identity import content_hash
from vetseg.errors import InputError
from vetseg.fileutil import atomic_write_json
from vetseg.io.image import ImageMeta, read_label, read_scan, to_canonical
from vetseg.labels import (
    CORE_ORGANS,
    TOTALSEG_V2,
    organ_ids,
    remap_labels,
    totalseg_structure_to_organ,
)

#: File endings vetseg reads in the pairs layout, longest first so ``.nii.gz`` wins over ``.gz``.
IMAGE_ENDINGS: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
#: Split names, in the order :func:`split_by_case` fills them.
SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class Case:
    """One case on disk.

    Attributes:
        case_id: the case's name (file name without channel suffix and ending).
        image: the CT image file.
        label: an integer label map in the dataset's own ids, or None.
        label_dir: TotalSegmentator layout: the ``segmentations/`` folder of binary masks.
        orientation: where the image's array axes point (``--orientation``, e.g. a workspace
            case's recorded code), overriding its header; None: the dataset's, else the header's.
    """

    case_id: str
    image: Path
    label: Path | None
    label_dir: Path | None = None
    orientation: str | None = None


@dataclass(frozen=True)
class CaseDataset:
    """A dataset folder, read once: its cases and how its labels become vetseg organs.

    Attributes:
        root: the folder.
        layout: ``"msd"``, ``"totalseg"`` or ``"pairs"``.
        cases: the cases, sorted by id.
        organs: the target vetseg vocabulary (label id ``i + 1`` is ``organs[i]``).
        mapping: dataset label id -> vetseg organ (None: background). For the TotalSegmentator
            layout the ids are TotalSegmentator v2's; masks are matched by structure name.
        synthetic: True when ``dataset.json`` says ``"synthetic": true``.
        species: ``dataset.json``'s ``"species"``, or None.
        orientation: ``--orientation`` for every case without its own (see :class:`Case`).
        real_cases: in a synthetic dataset, the ids of the cases that are real scans
            (``dataset.json``'s ``"real_cases"``, e.g. real CT mixed into phantoms).
    """

    root: Path
    layout: str
    cases: tuple[Case, ...]
    organs: tuple[str, ...]
    mapping: dict[int, str | None]
    synthetic: bool
    species: str | None
    orientation: str | None = None
    real_cases: tuple[str, ...] = ()

    @property
    def has_real_cases(self) -> bool:
        """True when some case is a real scan (all of them unless the dataset is synthetic)."""
        return not self.synthetic or bool(set(self.real_cases) & set(self.case_ids))

    @property
    def case_ids(self) -> list[str]:
        """The case ids, in dataset order."""
        return [case.case_id for case in self.cases]

    def case(self, case_id: str) -> Case:
        """The case named ``case_id``.

        Raises:
            InputError: when the dataset has no such case.
        """
        for case in self.cases:
            if case.case_id == case_id:
                return case
        raise InputError(f"{self.root}: no case named {case_id!r}.")


@dataclass
class LoadedCase:
    """One case in memory, in vetseg's terms.

    Attributes:
        case_id: the case's name.
        image: float32 HU ``[z, y, x]`` in canonical orientation (axis 0 inferior -> superior,
            axis 1 anterior -> posterior, axis 2 patient right -> left).
        labels: uint8 vetseg ids (``organs[i]`` -> ``i + 1``) on the same grid, or None.
        meta: the image's geometry as used: the header's, or its orientation override.
        canonical_meta: the geometry of ``image`` (canonical orientation).
    """

    case_id: str
    image: np.ndarray
    labels: np.ndarray | None
    meta: ImageMeta
    canonical_meta: ImageMeta

    @functools.cached_property
    def digest(self) -> str:
        """The image's content digest (:func:`vetseg.data.identity.content_hash`): the case's
        identity across names, folders and workspaces. Computed on first use, then kept."""
        return content_hash(self.image, self.canonical_meta.spacing)


# --------------------------------------------------------------------------- label names
def organ_for_label_name(name: str, organs: Sequence[str]) -> str | None:
    """The vetseg organ a dataset's label name stands for, or None (background).

    Matching is by normalised name (lower case, ``_`` for spaces and dashes; ``left_kidney`` is
    ``kidney_left``; ``lung`` is ``lungs``), then by TotalSegmentator structure name.

    Args:
        name: a label name from ``dataset.json`` or a TotalSegmentator mask file.
        organs: the target vocabulary.

    Returns:
        An organ of ``organs``, or None.
    """
    wanted = set(organs)
    key = re.sub(r"[\s\-]+", "_", name.strip().lower())
    synonyms = {"lung": "lungs", "bones": "bone", "skeleton": "bone"}
    key = synonyms.get(key, key)
    side = re.fullmatch(r"(left|right)_(.+)", key)
    if side:
        key = f"{side.group(2)}_{side.group(1)}"
    if key in wanted:
        return key
    organ = totalseg_structure_to_organ(key)
    return organ if organ in wanted else None


def normalise_label_name(name: str) -> str:
    """A dataset's label name as a vetseg organ name, whatever vocabulary it belongs to.

    The rules of :func:`organ_for_label_name` (case, separators, ``left_kidney`` ->
    ``kidney_left``, ``lung`` -> ``lungs``, TotalSegmentator structures merged into their
    organ), without requiring the organ to be in a given list: ``"Urinary bladder"`` ->
    ``"urinary_bladder"``.
    """
    key = re.sub(r"[\s\-]+", "_", name.strip().lower())
    synonyms = {"lung": "lungs", "bones": "bone", "skeleton": "bone"}
    key = synonyms.get(key, key)
    side = re.fullmatch(r"(left|right)_(.+)", key)
    if side:
        key = f"{side.group(2)}_{side.group(1)}"
    return totalseg_structure_to_organ(key) or key


def labelled_organs(path: Path) -> tuple[str, ...] | None:
    """The organs a dataset folder's labels name, in label-id order (background left out).

    Read from ``dataset.json`` (MSD / nnU-Net, or a pairs folder's) or a pairs folder's
    ``labels.json``; for the TotalSegmentator layout, the vetseg organs its structures merge
    into. None when the folder does not name its labels (plain pairs), so the caller decides.

    Raises:
        InputError: a malformed ``dataset.json`` / ``labels.json``.
    """
    root = Path(path)
    names: dict[int, str] | None = None
    for meta_name in ("dataset.json", "labels.json"):
        meta_file = root / meta_name
        if not meta_file.is_file():
            continue
        data = _read_json(meta_file)
        if meta_name == "labels.json":
            names = _label_names(data, meta_file)
        elif "labels" in data:
            names = _label_names(data["labels"], meta_file)
        if names is not None:
            break
    if names is None and root.is_dir():
        if any(sub.is_dir() and _is_totalseg_subject(sub) for sub in root.iterdir()):
            # Only the structures vetseg merges into an organ (lobes, bones, ...).
            names = {i: n for i, n in TOTALSEG_V2.items() if totalseg_structure_to_organ(n)}
    if names is None:
        return None
    out: list[str] = []
    for label_id in sorted(names):
        if label_id == 0 or names[label_id].strip().lower() == "background":
            continue
        organ = normalise_label_name(names[label_id])
        if organ not in out:
            out.append(organ)
    return tuple(out)


def _label_names(labels: Any, source: Path) -> dict[int, str]:
    """``dataset.json`` ``labels`` in either style -> ``{id: name}``."""
    if not isinstance(labels, dict) or not labels:
        raise InputError(f"{source}: 'labels' must be a non-empty object of label names and ids.")
    out: dict[int, str] = {}
    if all(isinstance(k, str) and k.strip().isdigit() for k in labels):
        # nnU-Net v1 / MSD: {"0": "background", "1": "liver"}
        for key, name in labels.items():
            if not isinstance(name, str):
                raise InputError(f"{source}: label {key} must be named by a string.")
            out[int(key)] = name
        return out
    # nnU-Net v2: {"background": 0, "liver": 1}
    for name, value in labels.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(
                f"{source}: label {name!r} must have one integer id (region-based labels such as"
                f" {value!r} are not supported)."
            )
        if value in out:
            raise InputError(f"{source}: label id {value} is given twice.")
        out[value] = name
    return out


def _mapping_from_names(
    names: Mapping[int, str], organs: Sequence[str], source: Path
) -> dict[int, str | None]:
    """Dataset ids -> vetseg organs by name; at least one organ must be found."""
    mapping = {i: organ_for_label_name(n, organs) for i, n in names.items() if i != 0}
    if not any(organ is not None for organ in mapping.values()):
        shown = ", ".join(sorted(names.values()))
        raise InputError(
            f"{source}: none of the label names ({shown}) is one of the organs {list(organs)}."
        )
    return mapping


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable JSON file ({exc}).") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path}: must hold a JSON object.")
    return data


def _flags(data: Mapping[str, Any], source: Path) -> tuple[bool, str | None]:
    synthetic = data.get("synthetic", False)
    species = data.get("species")
    if not isinstance(synthetic, bool):
        raise InputError(f"{source}: 'synthetic' must be true or false.")
    if species is not None and not isinstance(species, str):
        raise InputError(f"{source}: 'species' must be a string.")
    return synthetic, species


# --------------------------------------------------------------------------- layouts
def _open_msd(root: Path, organs: tuple[str, ...]) -> CaseDataset:
    meta_file = root / "dataset.json"
    if not meta_file.is_file():
        raise InputError(f"{root}: has imagesTr/ but no dataset.json naming its labels.")
    meta = _read_json(meta_file)
    if "labels" not in meta:
        raise InputError(f"{meta_file}: no 'labels' entry naming the label ids.")
    ending = meta.get("file_ending", ".nii.gz")
    if not isinstance(ending, str) or not ending.startswith("."):
        raise InputError(f"{meta_file}: 'file_ending' must be a string such as '.nii.gz'.")
    mapping = _mapping_from_names(_label_names(meta["labels"], meta_file), organs, meta_file)
    synthetic, species = _flags(meta, meta_file)

    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    cases: list[Case] = []
    for image in sorted(images_dir.iterdir()):
        name = image.name
        if name.startswith(".") or not name.endswith(ending):
            continue
        stem = name[: -len(ending)]
        channel = re.fullmatch(r"(.+)_(\d{4})", stem)
        if channel and channel.group(2) != "0000":
            raise InputError(
                f"{image}: vetseg reads one CT channel per case; channel {channel.group(2)}"
                " files are not supported."
            )
        case_id = channel.group(1) if channel else stem
        label = labels_dir / f"{case_id}{ending}"
        if not label.is_file():
            raise InputError(f"{label}: label file of case {case_id} is missing.")
        cases.append(Case(case_id, image, label))
    if not cases:
        raise InputError(f"{images_dir}: no images ending in {ending}.")
    real = meta.get("real_cases", [])
    if not isinstance(real, list) or not all(isinstance(r, str) for r in real):
        raise InputError(f"{meta_file}: 'real_cases' must be a list of case ids.")
    return CaseDataset(
        root, "msd", tuple(cases), organs, mapping, synthetic, species, real_cases=tuple(real)
    )


def _is_totalseg_subject(folder: Path) -> bool:
    return (folder / "ct.nii.gz").is_file() and (folder / "segmentations").is_dir()


def _open_totalseg(root: Path, organs: tuple[str, ...]) -> CaseDataset:
    cases = tuple(
        Case(sub.name, sub / "ct.nii.gz", None, sub / "segmentations")
        for sub in sorted(root.iterdir())
        if sub.is_dir() and _is_totalseg_subject(sub)
    )
    mapping = {i: organ_for_label_name(name, organs) for i, name in TOTALSEG_V2.items()}
    meta_file = root / "dataset.json"
    # The public TotalSegmentator dataset is human CT; a dataset.json may say otherwise.
    synthetic, species = False, "human"
    if meta_file.is_file():
        synthetic, named = _flags(_read_json(meta_file), meta_file)
        species = named or species
    return CaseDataset(root, "totalseg", cases, organs, mapping, synthetic, species)


def _split_ending(name: str) -> tuple[str, str] | None:
    for ending in IMAGE_ENDINGS:
        if name.endswith(ending) and len(name) > len(ending):
            return name[: -len(ending)], ending
    return None


def _open_pairs(root: Path, organs: tuple[str, ...]) -> CaseDataset:
    images: dict[str, Path] = {}
    labels: dict[str, Path] = {}
    for path in sorted(root.iterdir()):
        parts = _split_ending(path.name) if path.is_file() else None
        if parts is None or path.name.startswith("."):
            continue
        stem = parts[0]
        if stem.endswith("_seg"):
            labels[stem[: -len("_seg")]] = path
        else:
            images[stem] = path
    if not images and not labels:
        raise InputError(
            f"{root}: not a dataset folder (no dataset.json + imagesTr/, no TotalSegmentator"
            " subject folders, no <case>.nii.gz + <case>_seg.nii.gz pairs)."
        )
    for case_id, image in images.items():
        if case_id not in labels:
            ending = image.name[len(case_id) :]
            raise InputError(f"{image}: its label file {case_id}_seg{ending} is missing.")
    for case_id, label in labels.items():
        if case_id not in images:
            raise InputError(f"{label}: no image {case_id} beside this label file.")

    synthetic, species = False, None
    names: dict[int, str] | None = None
    source = root
    for meta_name in ("dataset.json", "labels.json"):
        meta_file = root / meta_name
        if not meta_file.is_file():
            continue
        data = _read_json(meta_file)
        if meta_name == "dataset.json":
            synthetic, species = _flags(data, meta_file)
            if "labels" in data:
                names, source = _label_names(data["labels"], meta_file), meta_file
                break
        else:
            names, source = _label_names(data, meta_file), meta_file
            break
    if names is None:
        mapping: dict[int, str | None] = {i: organ for organ, i in organ_ids(organs).items()}
    else:
        mapping = _mapping_from_names(names, organs, source)
    cases = tuple(Case(case_id, images[case_id], labels[case_id]) for case_id in sorted(images))
    return CaseDataset(root, "pairs", cases, organs, mapping, synthetic, species)


def open_dataset(
    path: Path, organs: Sequence[str] | None = None, orientation: str | None = None
) -> CaseDataset:
    """Recognise a dataset folder's layout and list its cases (nothing is loaded yet).

    Args:
        path: the dataset folder.
        organs: the target vocabulary; default :data:`~vetseg.labels.CORE_ORGANS`.
        orientation: ``--orientation`` for every case (:attr:`CaseDataset.orientation`).

    Returns:
        The dataset, cases sorted by id.

    Raises:
        InputError: for a missing, empty or unrecognised folder, a case whose label file is
            missing, a malformed ``dataset.json``, or labels that name none of ``organs``.
    """
    dataset = _open_layout(Path(path), organs)
    if orientation is None:
        return dataset
    from vetseg.io.orientation import parse_orientation

    return dataclasses.replace(dataset, orientation=parse_orientation(orientation))


def _open_layout(root: Path, organs: Sequence[str] | None) -> CaseDataset:
    """:func:`open_dataset` without the orientation."""
    organs_t = tuple(organs) if organs is not None else CORE_ORGANS
    if not organs_t or len(set(organs_t)) != len(organs_t):
        raise InputError(f"organ list {list(organs_t)} must be non-empty without repeats.")
    if not root.is_dir():
        raise InputError(f"{root}: no such dataset folder.")
    if (root / "imagesTr").is_dir():
        return _open_msd(root, organs_t)
    if any(sub.is_dir() and _is_totalseg_subject(sub) for sub in root.iterdir()):
        return _open_totalseg(root, organs_t)
    return _open_pairs(root, organs_t)


# --------------------------------------------------------------------------- loading
def _totalseg_labels(
    dataset: CaseDataset, case: Case, reference: ImageMeta, shape: tuple[int, ...]
) -> np.ndarray:
    """Merge a subject's per-structure binary masks into one vetseg label map."""
    assert case.label_dir is not None
    ids = organ_ids(dataset.organs)
    out = np.zeros(shape, dtype=np.uint8)
    # Sorted for a deterministic result where two structures of different organs overlap.
    for mask_file in sorted(case.label_dir.glob("*.nii.gz")):
        structure = mask_file.name[: -len(".nii.gz")]
        organ = organ_for_label_name(structure, dataset.organs)
        if organ is None:
            continue  # most of TotalSegmentator's 117 structures are not vetseg organs
        mask, _ = read_label(
            mask_file, reference=reference, reference_shape=shape, reference_name=str(case.image)
        )
        out[mask != 0] = ids[organ]
    return out


def load_case(dataset: CaseDataset, case: Case, orientation: str = "LPS") -> LoadedCase:
    """Read one case's image and labels, in vetseg ids and canonical orientation.

    Args:
        dataset: the dataset the case belongs to (its organs and mapping).
        case: one of ``dataset.cases``.
        orientation: the canonical orientation (``PreprocessConfig.orientation``); with the
            default, axis 2 runs from the patient's right to left, as the augmentation's
            left-right flip assumes.

    Returns:
        The loaded case; ``labels`` is None for a case without labels.

    Raises:
        InputError: an unreadable file.
        GridMismatchError: a label map on another voxel grid than its image.
        LabelMappingError: label ids the dataset's mapping does not know (the file is named).
    """
    from vetseg.io.orientation import apply_orientation_override

    image, header_meta = read_scan(case.image)
    # The override only turns the axes; labels are checked against the header's grid.
    meta = apply_orientation_override(
        header_meta, case.orientation or dataset.orientation, image.shape
    )
    labels: np.ndarray | None = None
    if case.label_dir is not None:
        labels = _totalseg_labels(dataset, case, header_meta, image.shape)
    elif case.label is not None:
        raw, _ = read_label(
            case.label,
            reference=header_meta,
            reference_shape=image.shape,
            reference_name=str(case.image),
        )
        labels = remap_labels(
            raw.astype(np.int64, copy=False),
            dataset.mapping,
            dataset.organs,
            source=str(case.label),
            strict=True,
        )
    canonical, canonical_meta = to_canonical(np.asarray(image, dtype=np.float32), meta, orientation)
    if labels is not None:
        labels, _ = to_canonical(labels, meta, orientation)
        labels = np.ascontiguousarray(labels, dtype=np.uint8)
    return LoadedCase(
        case_id=case.case_id,
        image=np.ascontiguousarray(canonical, dtype=np.float32),
        labels=labels,
        meta=meta,
        canonical_meta=canonical_meta,
    )


# --------------------------------------------------------------------------- splits
def split_by_case(
    case_ids: Sequence[str],
    seed: int,
    ratios: Sequence[float] = (8, 1, 1),
    *,
    keep_in_train: Collection[str] = (),
) -> dict[str, list[str]]:
    """Split cases (never slices) into train, val and test, reproducibly.

    Rule: val gets ``round(n * r_val / sum)`` cases and test ``round(n * r_test / sum)``
    (halves round up), but at least one each when its ratio is positive; train keeps the rest.
    So 50 cases give 40/5/5, 10 give 8/1/1, 5 give 3/1/1 and 3 give 1/1/1. The order of
    ``case_ids`` does not matter: they are sorted before the seeded shuffle.

    ``keep_in_train``: cases a model already learnt from (a refine round's parent trained or
    selected its epoch on them). They go to train, and val and test are drawn from the other
    cases, so that neither scores a model on what its parent saw; when too few other cases
    remain for val and test, the plain split is returned (check with ``set(val) & keep``).

    Args:
        case_ids: distinct case ids.
        seed: shuffle seed; the same ids and seed give the same split.
        ratios: train : val : test.
        keep_in_train: ids to keep in train when possible (ids not in ``case_ids`` are ignored).

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each list sorted.

    Raises:
        InputError: fewer than 3 cases, repeated ids, or bad ratios.
    """
    ids = sorted(str(c) for c in case_ids)
    if len(set(ids)) != len(ids):
        repeated = sorted({c for c in ids if ids.count(c) > 1})
        raise InputError(f"case id(s) {', '.join(repeated)} appear more than once.")
    n = len(ids)
    if n < 3:
        raise InputError(
            f"{n} case(s) cannot be split into train, val and test sets: at least 3 are needed."
        )
    if len(ratios) != 3 or any(r < 0 for r in ratios) or ratios[0] <= 0:
        raise InputError(f"split ratios {tuple(ratios)} must be three numbers, train above 0.")
    total = float(sum(ratios))
    sizes = []
    for ratio in ratios[1:]:
        size = math.floor(n * ratio / total + 0.5)
        sizes.append(max(size, 1) if ratio > 0 else 0)
    n_val, n_test = sizes
    n_train = n - n_val - n_test
    if n_train < 1:
        raise InputError(f"split ratios {tuple(ratios)} leave no training case out of {n}.")
    kept = [c for c in ids if c in set(keep_in_train)]
    if kept and n - len(kept) >= n_val + n_test:
        others = [c for c in ids if c not in set(kept)]
        order = np.random.default_rng(seed).permutation(len(others))
        shuffled = [others[i] for i in order]
        held = shuffled[: n_val + n_test]
        return {
            "train": sorted(kept + shuffled[n_val + n_test :]),
            "val": sorted(held[:n_val]),
            "test": sorted(held[n_val:]),
        }
    order = np.random.default_rng(seed).permutation(n)
    shuffled = [ids[i] for i in order]
    return {
        "train": sorted(shuffled[:n_train]),
        "val": sorted(shuffled[n_train : n_train + n_val]),
        "test": sorted(shuffled[n_train + n_val :]),
    }


def _check_splits(splits: Mapping[str, Any], source: str) -> dict[str, list[str]]:
    if set(splits) - {"hashes"} != set(SPLIT_NAMES):
        raise InputError(
            f"{source}: splits must have exactly the keys train, val and test (and hashes)."
        )
    out: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    for name in SPLIT_NAMES:
        values = splits[name]
        if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
            raise InputError(f"{source}: split {name!r} must be a list of case ids.")
        for case_id in values:
            if case_id in seen:
                raise InputError(
                    f"{source}: case {case_id!r} is in both {seen[case_id]!r} and {name!r}."
                )
            seen[case_id] = name
        out[name] = list(values)
    return out


def _check_hashes(hashes: Any, cases: Collection[str], source: str) -> dict[str, str]:
    if not isinstance(hashes, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in hashes.items()
    ):
        raise InputError(f"{source}: 'hashes' must map case ids to content digests.")
    unknown = sorted(set(hashes) - set(cases))
    if unknown:
        raise InputError(f"{source}: 'hashes' names case(s) {', '.join(unknown[:5])} of no split.")
    return dict(hashes)


def write_splits(
    path: Path, splits: Mapping[str, Sequence[str]], hashes: Mapping[str, str] | None = None
) -> None:
    """Write ``splits.json`` atomically (checked: three sets, no case in two).

    Args:
        path: the file to write.
        splits: as returned by :func:`split_by_case`.
        hashes: case id -> content digest (:attr:`LoadedCase.digest`), recorded as ``"hashes"``
            so that the cases are known by content wherever they are found again.
    """
    checked: dict[str, Any] = _check_splits(splits, str(path))
    if hashes is not None:
        cases = [c for name in SPLIT_NAMES for c in checked[name]]
        checked["hashes"] = _check_hashes(hashes, cases, str(path))
    atomic_write_json(Path(path), checked)


def _read_splits_file(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such splits file.")
    return _read_json(path)


def read_splits(path: Path) -> dict[str, list[str]]:
    """Read a ``splits.json`` written by :func:`write_splits` (train, val and test only).

    Raises:
        InputError: a missing or malformed file, or a case in two sets.
    """
    return _check_splits(_read_splits_file(path), str(path))


def read_split_hashes(path: Path) -> dict[str, str]:
    """The ``"hashes"`` of a ``splits.json`` (``{}`` for a file written before they were).

    Raises:
        InputError: a missing or malformed file.
    """
    data = _read_splits_file(path)
    splits = _check_splits(data, str(path))
    cases = [c for name in SPLIT_NAMES for c in splits[name]]
    return _check_hashes(data.get("hashes", {}), cases, str(path))
