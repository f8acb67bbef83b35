"""What the browser review (``vetseg review``) shows and stores, as plain workflow functions.

The web server in :mod:`vetseg.server` only translates HTTP to these calls: the queue comes from
the database, every file it serves is a path a database row names, and a save is
:func:`vetseg.workflow.correct.correct` with the edit's starting version, so a browser save is
checked, versioned, audit-logged and measured exactly like ``vetseg correct``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vetseg.errors import InputError
from vetseg.workflow.correct import CorrectResult, correct
from vetseg.workflow.workspace import Workspace

#: Organ colours of the viewer (RGB), in organ order; repeated when a workspace has more organs.
ORGAN_COLOURS: tuple[tuple[int, int, int], ...] = (
    (220, 80, 60),
    (60, 160, 220),
    (240, 200, 40),
    (120, 200, 90),
    (190, 90, 210),
    (250, 140, 30),
    (40, 200, 190),
    (230, 110, 170),
    (150, 120, 70),
    (140, 150, 250),
)


@dataclass(frozen=True)
class CaseFiles:
    """The files the viewer shows for one case, all named by database rows.

    Attributes:
        case_id: the case.
        state: its state in the database.
        scan: absolute path of the registered scan.
        overlay: the label shown and edited: the newest correction, else the newest pre-label,
            else the registered label; None when the case has none (drawn from nothing).
        overlay_kind: ``"corrected"``, ``"prelabel"``, ``"label"`` or ``"none"``.
        version: the newest correction's version (0: none); a save must start from it.
        editable: False for a case registered with its label (``vetseg correct`` refuses it).
    """

    case_id: str
    state: str
    scan: Path
    overlay: Path | None
    overlay_kind: str
    version: int
    editable: bool


def _inside(workspace: Workspace, relative: str) -> Path:
    """A database path as an absolute one, refused if it points outside the workspace."""
    path = workspace.path(relative).resolve()
    if not path.is_relative_to(workspace.root.resolve()):
        raise InputError(f"{workspace.root}: database path {relative!r} leaves the workspace.")
    return path


def case_files(workspace: Workspace, case_id: str) -> CaseFiles:
    """The scan and overlay of ``case_id`` (unknown names raise InputError, never a path)."""
    case = workspace.case(case_id)
    versions = workspace.corrections(case_id)
    prelabel = workspace.latest_prelabel(case_id)
    if versions:
        overlay, kind = versions[-1].path, "corrected"
    elif prelabel is not None:
        overlay, kind = prelabel.path, "prelabel"
    elif case.label:
        overlay, kind = case.label, "label"
    else:
        overlay, kind = None, "none"
    return CaseFiles(
        case_id=case.case_id,
        state=case.state,
        scan=_inside(workspace, case.image),
        overlay=None if overlay is None else _inside(workspace, overlay),
        overlay_kind=kind,
        version=max((v.version for v in versions), default=0),
        editable=case.state != "labelled",
    )


def _state_text(state: str, version: int) -> str:
    if state == "corrected":
        return f"corrected v{version}"
    return {"prelabelled": "pre-labelled"}.get(state, state)


def review_cases(workspace: Workspace) -> list[dict[str, Any]]:
    """Every case in review order: editable cases most uncertain first, labelled cases last.

    The uncertainty is that of the case's newest pre-label (the score ``vetseg prelabel``
    ranks by); cases without one follow, by name.

    Returns:
        One JSON-able dict per case: ``case``, ``state``, ``state_text``, ``uncertainty``,
        ``version``, ``effort`` (the newest version's, None before a correction),
        ``editable``.
    """
    rows = []
    for case in workspace.cases():
        versions = workspace.corrections(case.case_id)
        prelabel = workspace.latest_prelabel(case.case_id)
        version = max((v.version for v in versions), default=0)
        effort = versions[-1].effort if versions else None
        rows.append(
            {
                "case": case.case_id,
                "state": case.state,
                "state_text": _state_text(case.state, version),
                "uncertainty": None if prelabel is None else prelabel.uncertainty,
                "version": version,
                "effort": effort if effort is None or math.isfinite(effort) else None,
                "editable": case.state != "labelled",
            }
        )

    def order(row: dict[str, Any]) -> tuple[int, float, str]:
        uncertainty = row["uncertainty"]
        group = 2 if not row["editable"] else (0 if uncertainty is not None else 1)
        return group, -(uncertainty or 0.0), row["case"]

    return sorted(rows, key=order)


def organ_table(workspace: Workspace) -> list[dict[str, Any]]:
    """The workspace's organs with their label id and viewer colour."""
    return [
        {"id": i + 1, "name": organ, "colour": list(ORGAN_COLOURS[i % len(ORGAN_COLOURS)])}
        for i, organ in enumerate(workspace.settings.organs)
    ]


def save_review(
    workspace: Workspace, case_id: str, upload: Path, base_version: int
) -> CorrectResult:
    """Store a label drawn in the browser as the next corrected version of ``case_id``.

    Args:
        workspace: the open workspace.
        case_id: the case (a database name).
        upload: the uploaded label map (a temporary NIfTI file on the scan's grid).
        base_version: the newest version when the page loaded the case (0: none).

    Returns:
        As :func:`vetseg.workflow.correct.correct`.

    Raises:
        StaleVersionError: another version was saved since the page loaded.
        GridMismatchError, LabelMappingError, InputError: as ``vetseg correct``.
    """
    return correct(
        workspace,
        case_id,
        upload,
        base_version=base_version,
        source=f"vetseg review (browser edit of version {base_version})",
    )


__all__ = ["ORGAN_COLOURS", "CaseFiles", "case_files", "organ_table", "review_cases", "save_review"]
