"""Bring scans, labels and models into a workspace: ``vetseg add`` and ``vetseg use``.

``add`` checks every scan and label first (readable, label on the scan's voxel grid, label ids
known) and registers nothing when one of them is wrong. Scans are copied into ``data/<case>/``
so that the workspace does not depend on files elsewhere; labels are stored in the workspace's
own ids (``organs[i]`` -> ``i + 1``) whatever ids the lab's files use.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vetseg.errors import InputError, LabelMappingError, ModelFileError
from vetseg.fileutil import atomic_path
from vetseg.io.image import READ_SUFFIXES, ImageMeta, read_image, read_label, read_scan, write_image
from vetseg.io.units import AIR_HU, expects_hu
from vetseg.labels import mouse_head_mapping, remap_labels, totalseg_mapping
from vetseg.workflow.workspace import Workspace, now

if TYPE_CHECKING:  # vetseg.models imports torch and monai: seconds a correct command never needs
    from vetseg.models.files import ModelInfo

#: Formats copied byte for byte; anything else (DICOM folders, .mhd + .raw) becomes NIfTI.
_COPIED_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".mha")
#: Named label id conventions ``vetseg add --mapping`` understands.
MAPPINGS: tuple[str, ...] = ("vetseg", "mouse_head", "totalseg")


@dataclass(frozen=True)
class AddResult:
    """What ``add`` did: cases registered now, and cases that already were (same content)."""

    added: list[str]
    already: list[str]
    warnings: list[str]


# --------------------------------------------------------------------------- helpers
def case_id_for(path: Path) -> str:
    """A case id from a scan's file or folder name (ending dropped, odd characters as ``_``).

    A file of an MSD / nnU-Net ``images*`` folder (``imagesTr/case_0000.nii.gz``) drops the
    channel suffix ``_0000`` too, so its case is ``case``, as in ``labelsTr/case.nii.gz``.
    Elsewhere ``_0000`` is kept: there it may be a lab's own case number.
    """
    name = Path(path).name
    for suffix in (*READ_SUFFIXES, ".gz"):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    if Path(path).parent.name.lower().startswith("images") and re.fullmatch(r".+_0000", name):
        name = name[: -len("_0000")]
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).strip(".") or "case"
    return cleaned


def content_sha256(array: np.ndarray, meta: ImageMeta) -> str:
    """A digest of a volume's voxels and geometry (the same scan in any format gives the same)."""
    digest = hashlib.sha256()
    digest.update(str((array.dtype.str, array.shape)).encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(json.dumps([meta.spacing, meta.origin, meta.direction]).encode())
    return digest.hexdigest()


def label_mapping(
    name_or_file: str, organs: Sequence[str], segment_names: Mapping[int, str] | None = None
) -> dict[int, str | None]:
    """Label id -> workspace organ for a lab's label files.

    Args:
        name_or_file: ``"vetseg"`` (the workspace's own ids), ``"mouse_head"`` (the mouse head
            template), ``"totalseg"`` (TotalSegmentator v2 ids), or a JSON file naming the ids
            (``{"1": "liver"}`` or ``{"liver": 1}``).
        organs: the workspace's organs.
        segment_names: names stored in the label file itself (3D Slicer ``.seg.nrrd``); when
            present they win over ``name_or_file``, since Slicer may renumber segments.

    Raises:
        InputError: an unknown convention or an unreadable JSON file.
        LabelMappingError: names that match none of the organs.
    """
    from vetseg.data.datasets import organ_for_label_name

    if segment_names:
        mapping = {i: organ_for_label_name(n, organs) for i, n in segment_names.items() if i}
        unknown = [n for i, n in segment_names.items() if i and mapping[i] is None]
        if unknown:
            raise LabelMappingError(
                f"segment(s) {', '.join(unknown)} are none of the organs {list(organs)}."
            )
        return mapping
    if name_or_file == "vetseg":
        return {i + 1: organ for i, organ in enumerate(organs)}
    if name_or_file == "mouse_head":
        return mouse_head_mapping(organs)
    if name_or_file == "totalseg":
        return totalseg_mapping(organs)
    path = Path(name_or_file)
    if not path.is_file():
        raise InputError(
            f"label mapping {name_or_file!r}: neither one of {', '.join(MAPPINGS)} nor a "
            "JSON file naming the label ids."
        )
    from vetseg.data.datasets import _label_names, _mapping_from_names, _read_json

    return _mapping_from_names(_label_names(_read_json(path), path), organs, path)


def read_workspace_label(
    path: Path,
    image_meta: ImageMeta,
    image_shape: Sequence[int],
    image_name: str,
    organs: Sequence[str],
    mapping: str = "vetseg",
) -> np.ndarray:
    """Read a label map for a scan, check its grid, and turn its ids into workspace ids.

    Raises:
        InputError: unreadable file or not a label map.
        GridMismatchError: not on the scan's voxel grid.
        LabelMappingError: ids the mapping does not know.
    """
    labels, meta = read_label(
        path, reference=image_meta, reference_shape=image_shape, reference_name=image_name
    )
    ids = label_mapping(mapping, organs, meta.names)
    try:
        return remap_labels(labels, ids, organs, source=str(path), strict=True)
    except LabelMappingError as exc:
        if mapping == "vetseg" and not meta.names:
            raise LabelMappingError(
                f"{exc} This workspace's ids are "
                + ", ".join(f"{i + 1} {o}" for i, o in enumerate(organs))
                + "; give --mapping for other ids."
            ) from None
        raise


def _copy_atomic(source: Path, target: Path) -> None:
    with atomic_path(target, suffix="".join(target.suffixes)) as tmp:
        shutil.copyfile(source, tmp)


def _image_suffix(path: Path) -> str | None:
    name = path.name.lower()
    return next((s for s in _COPIED_SUFFIXES if name.endswith(s)), None) if path.is_file() else None


# --------------------------------------------------------------------------- add
@dataclass
class _Checked:
    case_id: str
    source: Path
    sha256: str
    label: Path | None


def add_scans(
    workspace: Workspace,
    scans: Sequence[Path],
    labels: Sequence[Path] | None = None,
    mapping: str = "vetseg",
    case_ids: Sequence[str] | None = None,
    orientation: str | None = None,
) -> AddResult:
    """Register scans (and, for labelled cases, their labels) in a workspace.

    Args:
        workspace: the open workspace.
        scans: scan files or DICOM folders; the case id is the file name without its ending.
        labels: one label map per scan, in the same order, or None for unlabelled scans.
        mapping: the label files' id convention (see :func:`label_mapping`).
        case_ids: one id per scan (default: from the file names, see :func:`case_id_for`).
        orientation: where the scans' array axes point (``--orientation``), recorded per case
            and used by every later command on it instead of the header; the files are
            copied unchanged. Given again for a registered case, it replaces the recorded one.

    Returns:
        The cases added, those already registered with the same content, and warnings (e.g. a
        scan whose values do not look like the workspace's intensity window, or whose body's
        long axis does not run across the slices).

    Raises:
        InputError: any bad scan or label (nothing is registered then).
    """
    with workspace.changing():
        return _add_scans(workspace, scans, labels, mapping, case_ids, orientation)


def _add_scans(
    workspace: Workspace,
    scans: Sequence[Path],
    labels: Sequence[Path] | None = None,
    mapping: str = "vetseg",
    case_ids: Sequence[str] | None = None,
    orientation: str | None = None,
) -> AddResult:
    from vetseg.io.orientation import (
        apply_orientation_override,
        parse_orientation,
        posture_warning,
    )

    orientation = parse_orientation(orientation)
    scans = [Path(s) for s in scans]
    if not scans:
        raise InputError("no scan given to add.")
    if labels is not None and len(labels) != len(scans):
        raise InputError(
            f"{len(labels)} label file(s) for {len(scans)} scan(s): give one label per scan."
        )
    if case_ids is not None and len(case_ids) != len(scans):
        raise InputError(f"{len(case_ids)} case id(s) for {len(scans)} scan(s).")
    organs = workspace.settings.organs
    window = workspace.settings.window
    checked: list[_Checked] = []
    warnings: list[str] = []
    seen: dict[str, Path] = {}
    # Pass 1: check everything before writing anything.
    for index, scan in enumerate(scans):
        case_id = case_id_for(scan) if case_ids is None else case_id_for(Path(case_ids[index]))
        if case_id in seen:
            raise InputError(f"{scan}: case id {case_id!r} is also the id of {seen[case_id]}.")
        seen[case_id] = scan
        image, meta = read_scan(scan)
        label = Path(labels[index]) if labels is not None else None
        if label is not None:
            read_workspace_label(label, meta, image.shape, str(scan), organs, mapping)
        low, high = float(np.min(image)), float(np.max(image))
        if window == (-1000.0, 1000.0) and low >= 0 and high <= 255 and image.dtype == np.uint8:
            warnings.append(
                f"{scan}: 8-bit values 0-255, not Hounsfield units; set window = [0.0, 255.0] "
                f"in {workspace.root / 'vetseg.toml'} if all scans are like this."
            )
        elif expects_hu(window) and low > AIR_HU:
            warnings.append(
                f"{scan}: no value below {AIR_HU:.0f} (lowest {low:.0f}), so not Hounsfield "
                f"units (air would be), and this workspace's window {list(window)} is in HU; "
                "if the file stores the scanner's raw values, add its rescale intercept "
                "(usually -1024) before adding it, or models will learn and pre-label "
                "nonsense (vetseg prelabel skips such a case; refine and rl-tune refuse it "
                "unless given --skip-units-check). A crop with no air in view is fine."
            )
        posed = apply_orientation_override(meta, orientation, image.shape)
        warning = posture_warning(image, posed, str(scan), workspace.settings.orientation)
        warnings += [warning] if warning else []
        checked.append(_Checked(case_id, scan, content_sha256(image, meta), label))
        del image

    added: list[str] = []
    already: list[str] = []
    todo: list[_Checked] = []
    reposed: list[str] = []
    for item in checked:
        existing = workspace.db.execute(
            "SELECT content_sha256, state, orientation FROM cases WHERE case_id = ?",
            (item.case_id,),
        ).fetchone()
        if existing is None:
            todo.append(item)
        elif existing["content_sha256"] != item.sha256:
            raise InputError(
                f"{item.source}: case {item.case_id!r} is already registered from another scan."
            )
        elif item.label is not None and existing["state"] != "labelled":
            raise InputError(
                f"{item.source}: case {item.case_id!r} is already registered without a label; "
                f"import its label with vetseg correct {workspace.root} {item.case_id} FILE."
            )
        else:
            already.append(item.case_id)
            if orientation is not None and existing["orientation"] != orientation:
                reposed.append(item.case_id)
                warnings.append(
                    f"{item.source}: case {item.case_id!r} now uses --orientation "
                    f"{orientation} (was {existing['orientation'] or 'the header'}); its "
                    "earlier pre-labels were drawn the old way."
                )

    # Pass 2: files first (atomic), then one transaction; a kill in between leaves files that
    # the re-run writes again and registers.
    rows = []
    for item in todo:
        folder = workspace.root / "data" / item.case_id
        suffix = _image_suffix(item.source)
        if suffix is not None:
            target = folder / f"image{suffix}"
            _copy_atomic(item.source, target)
        else:
            image, meta = read_image(item.source)
            target = folder / "image.nii.gz"
            write_image(image, meta, target)
        label_rel = None
        if item.label is not None:
            image, meta = read_image(target)
            ids = read_workspace_label(
                item.label, meta, image.shape, str(item.source), organs, mapping
            )
            names = {i + 1: o for i, o in enumerate(organs)}
            label_path = write_image(ids, meta, folder / "label.nii.gz", segment_names=names)
            label_rel = workspace.relative(label_path)
        rows.append(
            (
                item.case_id,
                workspace.relative(target),
                str(item.source.resolve()),
                item.sha256,
                label_rel,
                "labelled" if label_rel else "unlabelled",
                now(),
                now(),
                orientation,
            )
        )
        added.append(item.case_id)
    if rows or reposed:
        with workspace.transaction():
            workspace.db.executemany(
                "INSERT INTO cases (case_id, image, source, content_sha256, label, state, added,"
                " updated, orientation) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            workspace.db.executemany(
                "UPDATE cases SET orientation = ?, updated = ? WHERE case_id = ?",
                [(orientation, now(), case_id) for case_id in reposed],
            )
            workspace.record_files(*(r[1] for r in rows), *(r[4] for r in rows if r[4]))
            workspace.audit(
                "add",
                {
                    "cases": added,
                    "labelled": [r[0] for r in rows if r[4]],
                    "mapping": mapping,
                    "sources": [r[2] for r in rows],
                    "orientation": orientation,
                    "orientation_changed": reposed,
                },
            )
    return AddResult(added, already, warnings)


# --------------------------------------------------------------------------- use
def use_model(workspace: Workspace, model_path: str | Path, note: str = "") -> str:
    """Import a trained model into ``models/<id>/`` and make it the current model.

    Args:
        workspace: the open workspace.
        model_path: a model folder (or its model.json / model.safetensors), e.g. a transfer
            result, or the id of a model already in the workspace.
        note: a remark stored with the model.

    Returns:
        The model id.

    Raises:
        ModelFileError: not a vetseg model, or one for other organs or another intensity window.
    """
    with workspace.changing():
        return _use_model(workspace, model_path, note)


def _use_model(workspace: Workspace, model_path: str | Path, note: str) -> str:
    from vetseg.models.files import (
        META_NAME,
        WEIGHTS_NAME,
        load_model,
        read_model_info,
        resolve_model_dir,
    )

    settings = workspace.settings
    known = {m.model_id: m for m in workspace.models()}
    if str(model_path) in known and not Path(model_path).exists():
        model_id = str(model_path)
        with workspace.transaction():
            set_current(workspace, model_id)
            workspace.audit("use", {"model": model_id, "imported": False})
        return model_id

    source = resolve_model_dir(Path(model_path))
    info = read_model_info(source)
    if set(info.organs) != set(settings.organs):
        raise ModelFileError(
            f"{source}: the model segments {', '.join(info.organs)}, this workspace "
            f"{', '.join(settings.organs)}."
        )
    if tuple(info.preprocess.window) != tuple(settings.window):
        raise ModelFileError(
            f"{source}: the model expects intensities in the window "
            f"{list(info.preprocess.window)}, this workspace's scans use {list(settings.window)} "
            f"(window in {workspace.root / 'vetseg.toml'})."
        )
    if settings.spacing is not None and info.preprocess.spacing != settings.spacing:
        shown = (
            "none (a legacy model)"
            if info.preprocess.spacing is None
            else (f"{info.preprocess.spacing:g} mm")
        )
        raise ModelFileError(
            f"{source}: the model works at a pixel spacing of {shown}, this workspace's models"
            f" at {settings.spacing:g} mm (spacing in {workspace.root / 'vetseg.toml'})."
        )
    # Load it once before it is copied in: weights that are no safetensors, do not match the
    # checksum or do not fit the architecture are refused here, not at the next pre-label.
    load_model(source)
    target = workspace.root / "models" / info.model_id
    if source.resolve() != target.resolve():
        copied = target / META_NAME
        if not (copied.is_file() and read_model_info(target).weights_sha256 == info.weights_sha256):
            # Weights first, description last: a folder with model.json is a complete model.
            _copy_atomic(source / WEIGHTS_NAME, target / WEIGHTS_NAME)
            _copy_atomic(source / META_NAME, target / META_NAME)
    with workspace.transaction():
        if info.model_id not in known:
            insert_model(
                workspace,
                info,
                workspace.relative(target),
                promoted=True,
                note=note or f"imported from {source.resolve()}",
            )
        set_current(workspace, info.model_id)
        workspace.audit(
            "use", {"model": info.model_id, "stage": info.stage, "source": str(source.resolve())}
        )
    return info.model_id


def insert_model(
    workspace: Workspace, info: ModelInfo, path: str, promoted: bool, note: str = ""
) -> None:
    """Insert a models row for a model (call inside a transaction).

    Args:
        workspace: the open workspace.
        info: the model's description.
        path: its folder, relative to the workspace.
        promoted: whether it becomes (or became) current.
        note: a remark, e.g. why it was not promoted.
    """
    training = info.training or {}
    workspace.db.execute(
        "INSERT INTO models VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            info.model_id,
            info.parent,
            info.stage,
            path,
            json.dumps(info.metrics),
            json.dumps({"data": training.get("data"), "cases": training.get("cases")}),
            json.dumps(training.get("split", {})),
            info.created,
            now(),
            int(promoted),
            note,
        ),
    )
    workspace.record_files(f"{path}/model.json", f"{path}/model.safetensors")


def set_current(workspace: Workspace, model_id: str) -> None:
    """Make ``model_id`` the current model (call inside a transaction)."""
    workspace.db.execute("INSERT OR REPLACE INTO info VALUES ('current_model', ?)", (model_id,))
    workspace.db.execute("UPDATE models SET promoted = 1 WHERE model_id = ?", (model_id,))


__all__ = [
    "MAPPINGS",
    "AddResult",
    "add_scans",
    "case_id_for",
    "insert_model",
    "label_mapping",
    "read_workspace_label",
    "set_current",
    "use_model",
]
