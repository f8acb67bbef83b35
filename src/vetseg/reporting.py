"""Dice tables on the terminal (rich) for ``evaluate`` and ``demo``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table


def _fmt(value: float) -> str:
    return (
        "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"
    )


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
        table.add_row(organ, *(_fmt(r["per_organ"].get(organ, math.nan)) for r in results.values()))
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
        cells = [_fmt(results[n]["per_organ"].get(organ, math.nan)) for n in names]
        lines.append(f"| {organ} | " + " | ".join(cells) + " |")
    lines.append(
        "| **mean** | " + " | ".join(f"**{_fmt(results[n]['mean_dice'])}**" for n in names) + " |"
    )
    return "\n".join(lines)
