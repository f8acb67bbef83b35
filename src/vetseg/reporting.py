"""Dice tables on the terminal (rich) for ``evaluate`` and ``demo``.

An organ without a mean Dice says why: ``not annotated`` (the dataset does not label it) or
``absent`` (no case's reference or prediction holds it); see :mod:`vetseg.training.evaluation`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table


def _fmt(value: float | None) -> str:
    return (
        "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"
    )


def _why_no_value(result: Mapping[str, Any], organ: str) -> str:
    """Why an organ has no mean Dice, from the result's per-organ status counts."""
    counts = result.get("summary", {}).get(organ)
    if not counts:
        return "-"
    if counts.get("not_annotated") and not counts.get("absent_in_both"):
        return "not annotated"
    return "absent" if counts.get("absent_in_both") else "-"


def _organ_cell(result: Mapping[str, Any], organ: str) -> str:
    value = result["per_organ"].get(organ)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return _why_no_value(result, organ)
    return f"{value:.3f}"


def dice_table(
    results: Mapping[str, Mapping[str, Any]], organs: Sequence[str], synthetic: bool = False
) -> Table:
    """A table with one column per model and one row per organ, plus the mean."""
    title = "Dice per organ" + (
        " (synthetic data: says nothing about real animals)" if synthetic else ""
    )
    table = Table(title=title)
    table.add_column("organ")
    for name in results:
        table.add_column(name, justify="right")
    for organ in organs:
        table.add_row(organ, *(_organ_cell(r, organ) for r in results.values()))
    table.add_row("[bold]mean", *(f"[bold]{_fmt(r['mean_dice'])}" for r in results.values()))
    return table


def print_dice_table(
    results: Mapping[str, Mapping[str, Any]],
    organs: Sequence[str],
    synthetic: bool = False,
    console: Console | None = None,
) -> None:
    """Print :func:`dice_table` to stdout."""
    (console or Console()).print(dice_table(results, organs, synthetic))


def markdown_dice_table(results: Mapping[str, Mapping[str, Any]], organs: Sequence[str]) -> str:
    """The same table as Markdown, for the README and benchmark reports."""
    names = list(results)
    lines = ["| organ | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for organ in organs:
        cells = [_organ_cell(results[n], organ) for n in names]
        lines.append(f"| {organ} | " + " | ".join(cells) + " |")
    lines.append(
        "| **mean** | " + " | ".join(f"**{_fmt(results[n]['mean_dice'])}**" for n in names) + " |"
    )
    return "\n".join(lines)


def evaluation_table(result: Mapping[str, Any]) -> Table:
    """One model's evaluation: per organ mean Dice, mean HD95 and how many cases had each
    status (ok, missed, false positive, absent in both, not annotated)."""
    title = "Evaluation of " + str(result.get("model_id", "the model"))
    title += " (post-processed as vetseg segment)" if result.get("postprocess") else " (raw)"
    if result.get("synthetic"):
        title += " (synthetic data: says nothing about real animals)"
    table = Table(
        title=title,
        caption="cases per status. false+: the reference lacks the organ, the model draws it "
        "(Dice 0, counted); absent: in neither; n/a: the dataset does not label the organ "
        "(neither counted). HD95 over ok cases.",
    )
    columns = ("organ", "Dice", "HD95 mm", "ok", "missed", "false+", "absent", "n/a")
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right", no_wrap=index < 2)
    statuses = ("ok", "missed", "false_positive", "absent_in_both", "not_annotated")
    for organ in result["organs"]:
        counts = result["summary"][organ]
        hd95 = counts["hd95_mm"]
        table.add_row(
            organ,
            _organ_cell(result, organ),
            "-" if hd95 is None else f"{hd95:.1f}",
            *(str(counts[s]) for s in statuses),
        )
    hd95 = result.get("mean_hd95_mm")
    table.add_row(
        "[bold]mean", f"[bold]{_fmt(result['mean_dice'])}",
        "-" if hd95 is None else f"{hd95:.1f}", *[""] * len(statuses),
    )  # fmt: skip
    return table
