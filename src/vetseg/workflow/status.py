"""``vetseg status``: the queue, the versions and the correction effort, read-only."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console, Group
from rich.table import Table

from vetseg.workflow.prelabel import review_queue
from vetseg.workflow.rounds import rounds
from vetseg.workflow.workspace import STATES, Workspace


def status_report(workspace: Workspace) -> dict[str, Any]:
    """Everything ``vetseg status`` shows, as plain data (JSON-able).

    Returns:
        ``{"workspace", "settings", "current_model", "counts", "queue", "cases", "models",
        "rounds", "mean_effort"}``; ``cases`` holds per case its state, pre-label uncertainty,
        correction versions and the newest version's effort.
    """
    settings = workspace.settings
    current = workspace.current_model()
    cases = []
    efforts = []
    for case in workspace.cases():
        versions = workspace.corrections(case.case_id)
        latest = workspace.latest_prelabel(case.case_id)
        entry: dict[str, Any] = {
            "case": case.case_id,
            "state": case.state,
            "uncertainty": None if latest is None else latest.uncertainty,
            "prelabel_model": None if latest is None else latest.model_id,
            "versions": [
                {
                    "version": v.version,
                    "file": v.path,
                    "changed_voxels": v.changed_voxels,
                    "drawn_voxels": v.drawn_voxels,
                    "effort": v.effort,
                    "created": v.created,
                }
                for v in versions
            ],
            "effort": versions[-1].effort if versions else None,
        }
        if versions and math.isfinite(versions[-1].effort):
            efforts.append(versions[-1].effort)
        cases.append(entry)
    models = [
        {
            "model": m.model_id,
            "parent": m.parent,
            "stage": m.stage,
            "val_mean_dice": m.metrics.get("val_mean_dice"),
            "promoted": m.promoted,
            "current": current is not None and m.model_id == current.model_id,
            "path": m.path,
            "note": m.note,
        }
        for m in workspace.models()
    ]
    return {
        "workspace": str(workspace.root),
        "settings": {
            "species": settings.species,
            "organs": list(settings.organs),
            "window": list(settings.window),
            "synthetic": settings.synthetic,
        },
        "current_model": None if current is None else current.model_id,
        "counts": {s: sum(1 for c in cases if c["state"] == s) for s in STATES},
        "queue": review_queue(workspace),
        "cases": cases,
        "models": models,
        "rounds": rounds(workspace),
        "mean_effort": sum(efforts) / len(efforts) if efforts else None,
    }


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def print_status(report: dict[str, Any], console: Console | None = None) -> None:
    """Print a status report as a few tables."""
    console = console or Console()
    settings = report["settings"]
    counts = ", ".join(f"{n} {s}" for s, n in report["counts"].items())
    head = (
        f"[bold]{report['workspace']}[/bold]: {settings['species']}, organs "
        f"{', '.join(settings['organs'])}; window {settings['window']}"
        + (" (synthetic data)" if settings["synthetic"] else "")
        + f"\ncases: {counts}\ncurrent model: {report['current_model'] or 'none'}"
    )
    parts: list[Any] = [head]

    queue = Table(title="review queue (correct these first)")
    for column in ("#", "case", "uncertainty", "pre-label file", "model"):
        queue.add_column(column)
    for i, item in enumerate(report["queue"], 1):
        queue.add_row(str(i), item["case"], _fmt(item["uncertainty"]), item["file"], item["model"])
    parts.append(queue if report["queue"] else "review queue: empty")

    corrected = [c for c in report["cases"] if c["versions"]]
    if corrected:
        table = Table(title="corrections (effort: voxels changed / voxels drawn from nothing)")
        for column in ("case", "versions", "changed", "drawn", "effort"):
            table.add_column(column)
        for c in corrected:
            newest = c["versions"][-1]
            table.add_row(
                c["case"],
                ", ".join(f"v{v['version']}" for v in c["versions"]),
                str(newest["changed_voxels"]),
                str(newest["drawn_voxels"]),
                _fmt(newest["effort"]),
            )
        parts.append(table)
        parts.append(f"mean correction effort: {_fmt(report['mean_effort'])} (1.0 = drawing)")

    if report["models"]:
        table = Table(title="models")
        for column in ("model", "parent", "stage", "val Dice (own split)", "status"):
            table.add_column(column)
        for m in report["models"]:
            status = "current" if m["current"] else ("was current" if m["promoted"] else "kept")
            table.add_row(
                m["model"], m["parent"] or "-", m["stage"], _fmt(m["val_mean_dice"]), status
            )
        parts.append(table)
    if report["rounds"]:
        table = Table(title="refine rounds (Dice on the round's validation cases)")
        for column in ("round", "parent", "model", "parent Dice", "new Dice", "result"):
            table.add_column(column)
        for r in report["rounds"]:
            table.add_row(
                str(r["round"]),
                r["parent"],
                r["model_id"] or "-",
                _fmt(r["parent_val_dice"]),
                _fmt(r["new_val_dice"]),
                r["status"],
            )
        parts.append(table)
    console.print(Group(*parts))


__all__ = ["print_status", "status_report"]
