"""Import a vet's corrected label (``vetseg correct``): a new version every time, never overwritten.

The vet opens the scan and ``review/<case>/prelabel.nii.gz`` in 3D Slicer or ITK-SNAP, fixes it
and saves it (NIfTI, NRRD or Slicer ``.seg.nrrd``). The import checks that the file lies on the
scan's voxel grid and holds known organ ids (Slicer segment names are matched by name), stores it
as ``review/<case>/corrected_v<NNN>.nii.gz`` in the workspace's ids and records how much the vet
changed.

Correction effort
    ``changed / drawn``: voxels whose label differs between the pre-label and the correction,
    divided by the correction's organ voxels, which is what a vet would paint when drawing from
    nothing. 0 means the draft was accepted as it was, 1 means as much work as drawing from
    nothing (more than 1 is possible: a draft full of false organs). Without a pre-label the
    case was drawn from nothing and the effort is 1.

Interruptions
    The file is written (atomically) before its database row. A kill in between leaves a
    version file nobody registered; the re-run finds it, registers it when it holds the same
    label, and otherwise takes the next free version number, so no file is ever replaced.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vetseg.errors import InputError, StaleVersionError
from vetseg.workflow.workspace import CorrectionRecord, Workspace, now


@dataclass(frozen=True)
class CorrectResult:
    """The imported version (or the existing one, when the same label was imported before)."""

    record: CorrectionRecord
    new: bool


def correction_effort(prelabel: np.ndarray | None, corrected: np.ndarray) -> tuple[int, int, float]:
    """Voxels the vet changed against the pre-label, relative to drawing from nothing.

    Args:
        prelabel: the draft label map, or None when there was none.
        corrected: the vet's label map on the same grid.

    Returns:
        ``(changed, drawn, effort)``: voxels that differ, organ voxels of the correction, and
        ``changed / drawn`` (NaN when the correction holds no organ voxel).
    """
    drawn = int(np.count_nonzero(corrected))
    changed = drawn if prelabel is None else int(np.count_nonzero(prelabel != corrected))
    return changed, drawn, (changed / drawn if drawn else float("nan"))


def _label_digest(labels: np.ndarray) -> str:
    digest = hashlib.sha256(str((labels.dtype.str, labels.shape)).encode())
    digest.update(np.ascontiguousarray(labels).tobytes())
    return digest.hexdigest()


def correct(
    workspace: Workspace,
    case_id: str,
    file: Path,
    mapping: str = "vetseg",
    *,
    base_version: int | None = None,
    source: str | None = None,
) -> CorrectResult:
    """Import ``file`` as the next corrected version of ``case_id``.

    Args:
        workspace: the open workspace.
        case_id: a registered case (pre-labelled, corrected, or unlabelled: drawn from nothing).
        file: the vet's label map (NIfTI, NRRD, ``.seg.nrrd``, MHA).
        mapping: the file's id convention when it carries no segment names (see
            :func:`vetseg.workflow.register.label_mapping`).
        base_version: the newest version the vet's edit started from (0: none); when given,
            the import is refused if another version was saved since (``vetseg review``).
        source: what the audit log records as the label's origin (default: the file's
            absolute path; the browser review uploads to a temporary file and names itself).

    Returns:
        The version recorded. Importing a label identical to the newest version records
        nothing new (so a re-run after a kill does not duplicate it).

    Raises:
        InputError: unknown case, a case registered with its label, an empty label map.
        GridMismatchError: the file is not on the scan's voxel grid.
        LabelMappingError: ids that are no organ of the workspace.
        StaleVersionError: ``base_version`` is not the newest version any more.
    """
    from vetseg.io.image import read_image, read_label, write_image
    from vetseg.workflow.register import read_workspace_label

    file = Path(file)
    with workspace.changing():
        case = workspace.case(case_id)
        if case.state == "labelled":
            raise InputError(
                f"case {case_id} was registered with its label ({case.label}); corrections "
                "are for pre-labelled or unlabelled cases."
            )
        # Checked under the workspace lock, before any file is written: a save from a page that
        # loaded version N must not silently supersede a version N + 1 saved meanwhile.
        newest = max((v.version for v in workspace.corrections(case_id)), default=0)
        if base_version is not None and base_version != newest:
            raise StaleVersionError(
                f"case {case_id}: version {newest} was saved after this edit started from "
                f"version {base_version}; nothing was stored."
            )
        image_path = workspace.path(case.image)
        image, meta = read_image(image_path)
        labels = read_workspace_label(
            file, meta, image.shape, str(image_path), workspace.settings.organs, mapping
        )
        del image
        if not labels.any():
            raise InputError(f"{file}: holds no organ voxels; nothing to import for {case_id}.")
        digest = _label_digest(labels)
        versions = workspace.corrections(case_id)
        if versions and versions[-1].content_sha256 == digest:
            return CorrectResult(versions[-1], new=False)

        prelabel_record = workspace.latest_prelabel(case_id)
        prelabel = None
        if prelabel_record is not None:
            prelabel, _ = read_label(workspace.path(prelabel_record.path))
        changed, drawn, effort = correction_effort(prelabel, labels)

        names = {i + 1: organ for i, organ in enumerate(workspace.settings.organs)}
        version = 1 + max((v.version for v in versions), default=0)
        folder = workspace.review_dir(case_id)
        while True:
            target = folder / f"corrected_v{version:03d}.nii.gz"
            if not target.exists():
                write_image(labels, meta, target, segment_names=names)
                break
            # A file no row points to: an import killed before its commit. Adopt it if it is
            # this very label, else leave it and take the next number.
            orphan = read_label(target)[0].astype(labels.dtype)
            if orphan.shape == labels.shape and _label_digest(orphan) == digest:
                break
            version += 1
        record = CorrectionRecord(
            case_id=case_id,
            version=version,
            path=workspace.relative(target),
            source=source if source is not None else str(file.resolve()),
            content_sha256=digest,
            prelabel_id=None if prelabel_record is None else prelabel_record.id,
            changed_voxels=changed,
            drawn_voxels=drawn,
            effort=effort,
            created=now(),
        )
        with workspace.transaction():
            workspace.db.execute(
                "INSERT INTO corrections VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.case_id,
                    record.version,
                    record.path,
                    record.source,
                    record.content_sha256,
                    record.prelabel_id,
                    record.changed_voxels,
                    record.drawn_voxels,
                    record.effort,
                    record.created,
                ),
            )
            workspace.db.execute(
                "UPDATE cases SET state = 'corrected', updated = ? WHERE case_id = ?",
                (now(), case_id),
            )
            workspace.record_files(record.path)
            workspace.audit(
                "correct",
                {
                    "case": case_id,
                    "version": version,
                    "source": record.source,
                    "changed_voxels": changed,
                    "drawn_voxels": drawn,
                    "effort": effort,
                },
            )
        return CorrectResult(record, new=True)


__all__ = ["CorrectResult", "correct", "correction_effort"]
