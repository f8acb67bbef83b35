"""A rich progress bar for long work (training epochs, segmenting many slices or scans)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@contextlib.contextmanager
def make_progress(enabled: bool = True, console: Console | None = None) -> Iterator[Progress]:
    """A progress display with a description, bar, count, times and a free ``info`` field.

    Tasks take ``info=...`` (e.g. the running loss). When ``enabled`` is False the bar is
    hidden but lines printed through ``progress.console`` still appear.
    """
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    progress = Progress(
        *columns, console=console or Console(stderr=True), disable=not enabled, transient=True
    )
    with progress:
        yield progress
