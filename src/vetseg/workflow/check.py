"""``vetseg check``: is a workspace whole? Files, checksums, versions and the database itself.

A workspace is sound when

* SQLite finds its database intact (``PRAGMA integrity_check`` and foreign keys);
* every file the database names exists (scans, labels, pre-labels, every corrected version,
  each model's ``model.json`` and ``model.safetensors``) and matches the SHA-256 recorded when
  it was written (workspaces from before schema 3 got their checksums when first opened by
  this version);
* a model's weights match the checksum in its own ``model.json``;
* every case in state ``corrected`` has a corrected version, every ``prelabelled`` one a
  pre-label, and the current model is one of the workspace's models;
* no temporary file of an interrupted write is left (``.<name>.tmp-*``: the next command that
  changes the workspace sweeps them; ``check`` only reports them).

The check holds the workspace lock while it looks, so that a command writing at the same
moment is not mistaken for damage, and changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from vetseg.workflow.workspace import CONFIG_NAME, Workspace, file_sha256


@dataclass
class CheckReport:
    """What ``check`` found: problems (empty when sound) and how much it looked at."""

    problems: list[str] = field(default_factory=list)
    files_checked: int = 0
    checksums_compared: int = 0

    @property
    def sound(self) -> bool:
        return not self.problems


def temporary_leftovers(root: Path) -> list[Path]:
    """Temporary files and folders of interrupted writes (``vetseg.fileutil`` naming)."""
    found = [p for p in root.glob(f".{CONFIG_NAME.split('.')[0]}.tmp-*")]
    for sub in ("data", "review", "models"):
        folder = root / sub
        if folder.is_dir():
            found += [p for p in folder.rglob(".*.tmp-*")]
    return sorted(found)


def check_workspace(workspace: Workspace) -> CheckReport:
    """Look for everything that makes a workspace less than whole (see the module docstring).

    Args:
        workspace: an open workspace; the caller holds its lock (:meth:`Workspace.inspecting`).

    Returns:
        The report; ``report.sound`` is True when nothing is wrong.
    """
    report = CheckReport()
    db = workspace.db
    integrity = [row[0] for row in db.execute("PRAGMA integrity_check")]
    if integrity != ["ok"]:
        report.problems.append(f"database: SQLite integrity check failed ({'; '.join(integrity)})")
    for row in db.execute("PRAGMA foreign_key_check"):
        report.problems.append(f"database: row {row[1]} of {row[0]} names a missing {row[2]} row")

    recorded = {
        r["path"]: (r["sha256"], r["size"])
        for r in db.execute("SELECT path, sha256, size FROM files")
    }
    named = set(workspace.named_files()) | set(recorded)
    for relative in sorted(named):
        path = workspace.path(relative)
        report.files_checked += 1
        if not path.is_file():
            report.problems.append(f"{relative}: missing (the database names it)")
            continue
        if relative in recorded:
            digest, size = file_sha256(path)
            report.checksums_compared += 1
            if (digest, size) != recorded[relative]:
                report.problems.append(
                    f"{relative}: changed since it was written (SHA-256 or size differs from "
                    "the one recorded)"
                )
        else:
            report.problems.append(f"{relative}: no checksum recorded")

    for (folder,) in db.execute("SELECT path FROM models"):
        meta, weights = (
            workspace.path(f"{folder}/model.json"),
            workspace.path(f"{folder}/model.safetensors"),
        )
        if meta.is_file() and weights.is_file():
            try:
                expected = json.loads(meta.read_text()).get("weights_sha256", "")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                report.problems.append(f"{folder}/model.json: not a readable model description")
                continue
            if expected and file_sha256(weights)[0] != expected:
                report.problems.append(
                    f"{folder}/model.safetensors: does not match the checksum in its model.json"
                )

    for case_id, state in db.execute("SELECT case_id, state FROM cases ORDER BY case_id"):
        if state == "corrected" and not workspace.corrections(case_id):
            report.problems.append(f"case {case_id}: state corrected but no corrected version")
        if state == "prelabelled" and workspace.latest_prelabel(case_id) is None:
            report.problems.append(f"case {case_id}: state prelabelled but no pre-label")
    current = db.execute("SELECT value FROM info WHERE key = 'current_model'").fetchone()
    if (
        current is not None
        and db.execute("SELECT 1 FROM models WHERE model_id = ?", (current[0],)).fetchone() is None
    ):
        report.problems.append(f"current model {current[0]} is not among the workspace's models")

    for leftover in temporary_leftovers(workspace.root):
        relative = leftover.relative_to(workspace.root).as_posix()
        report.problems.append(f"{relative}: temporary file of an interrupted write")
    return report


__all__ = ["CheckReport", "check_workspace", "temporary_leftovers"]
