"""Segment every scan in a folder; a scan that fails is reported and the batch goes on.

A folder of scans holds image files (NIfTI, NRRD, MHA) and DICOM series, each series in its own
subfolder (found at any depth). A folder that holds DICOM files directly is one series, not a
batch. Outputs are named after the scan: ``case01.nii.gz`` -> ``OUT/case01.nii.gz``, the series
folder ``CT_0001/`` -> ``OUT/CT_0001.nii.gz``.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vetseg.errors import InputError, VetsegError
from vetseg.inference.pipeline import ScanResult, SegmentOutputs, segment_scan
from vetseg.inference.segmenter import Progress, Segmenter
from vetseg.io.image import is_dicom_file
from vetseg.io.units import ScanUnits

#: Image file endings a batch picks up (longest first: a name is matched by its ending).
#: (a 3D Slicer ``.seg.nrrd`` is a label map, not a scan, and is left out).
SCAN_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nrrd", ".nhdr", ".nii", ".mha", ".mhd")


@dataclass(frozen=True)
class ScanEntry:
    """One scan of a batch: its output name and where it lies."""

    name: str
    path: Path


@dataclass
class BatchItem:
    """The outcome of one scan: a result, or the error that stopped it."""

    entry: ScanEntry
    result: ScanResult | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def _looks_like_dicom(path: Path) -> bool:
    return path.suffix.lower() in (".dcm", ".ima") or is_dicom_file(path)


def holds_dicom_files(folder: Path) -> bool:
    """True when ``folder`` itself (not a subfolder) holds a DICOM file."""
    try:
        return any(p.is_file() and _looks_like_dicom(p) for p in folder.iterdir())
    except OSError:
        return False


def is_scan_folder(path: Path) -> bool:
    """True for a folder of scans (a batch), False for a file or a DICOM series folder."""
    return path.is_dir() and not holds_dicom_files(path)


def scan_name(path: Path) -> str:
    """A scan's name for its outputs: the file name without its image ending, or the folder's."""
    name = path.name
    lower = name.lower()
    for suffix in (".seg.nrrd", *SCAN_SUFFIXES, ".dcm", ".ima"):
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def find_scans(folder: Path, exclude: tuple[Path, ...] = ()) -> list[ScanEntry]:
    """The scans of a batch folder, sorted by name.

    Args:
        folder: the folder of scans.
        exclude: folders to skip (e.g. the output folder when it lies inside ``folder``).

    Returns:
        Image files directly in ``folder``, and every subfolder (at any depth) that holds DICOM
        files directly. Hidden files and folders are skipped; a ``.seg.nrrd`` file is a label
        map, not a scan, and is skipped too. Names that two scans share get the format added
        (``case.nrrd`` -> ``case_nrrd``).
    """
    folder = Path(folder)
    skip = {p.resolve() for p in exclude}
    found: list[ScanEntry] = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        lower = path.name.lower()
        if lower.endswith(".seg.nrrd"):
            continue
        if any(lower.endswith(s) and len(lower) > len(s) for s in SCAN_SUFFIXES):
            found.append(ScanEntry(scan_name(path), path))
    for current, dirs, _files in os.walk(folder):
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".") and (Path(current) / d).resolve() not in skip
        )
        here = Path(current)
        if here != folder and holds_dicom_files(here):
            found.append(ScanEntry(here.relative_to(folder).as_posix().replace("/", "_"), here))
            dirs.clear()  # a series folder's subfolders belong to it
    counts: dict[str, int] = {}
    for entry in found:
        counts[entry.name] = counts.get(entry.name, 0) + 1
    unique = []
    for entry in found:
        if counts[entry.name] > 1 and entry.path.is_file():
            ending = entry.path.name[len(entry.name) :].lstrip(".").replace(".", "_")
            entry = ScanEntry(f"{entry.name}_{ending}", entry.path)
        unique.append(entry)
    return sorted(unique, key=lambda e: e.name)


def shard_scans(entries: list[ScanEntry], index: int, count: int) -> list[ScanEntry]:
    """Shard ``index`` of ``count`` (0-based) of the scans, sorted by name: every ``count``-th
    scan from the ``index``-th. The shards of one folder are disjoint and together hold every
    scan, whatever machine computes them: a SLURM array (``--shard $SLURM_ARRAY_TASK_ID/N``)
    splits a cohort without a coordinator.

    Raises:
        InputError: ``index`` not in ``0 .. count - 1``.
    """
    if count < 1 or not 0 <= index < count:
        raise InputError(
            f"--shard {index}/{count}: give I/N with N >= 1 and I from 0 to N - 1"
            " (e.g. $SLURM_ARRAY_TASK_ID/N for an array of N tasks numbered from 0)."
        )
    return sorted(entries, key=lambda e: e.name)[index::count]


def segment_folder(
    segmenter: Segmenter,
    folder: Path,
    out_dir: Path,
    *,
    suffix: str = ".nii.gz",
    report_dir: Path | None = None,
    preview_dir: Path | None = None,
    on_scan: Callable[[int, int, ScanEntry], None] | None = None,
    progress: Progress | None = None,
    orientation: str | None = None,
    shard: tuple[int, int] | None = None,
    units: ScanUnits | None = None,
) -> list[BatchItem]:
    """Segment every scan of ``folder`` into ``out_dir``; a failing scan does not stop the rest.

    Args:
        segmenter: the loaded model.
        folder: the folder of scans (see :func:`find_scans`).
        out_dir: label maps go to ``out_dir/<name><suffix>``.
        suffix: label map format, e.g. ``".nii.gz"`` or ``".nrrd"``.
        report_dir: when given, ``<name>.csv`` and ``<name>.json`` reports go there.
        preview_dir: when given, ``<name>.png`` previews go there.
        on_scan: called with ``(index, count, entry)`` before each scan.
        progress: called with ``(slices done, slices in all)`` during each scan.
        orientation: override of every scan's header direction (``--orientation``).
        shard: ``(i, n)``: only this machine's share of the scans (:func:`shard_scans`).
        units: intercept and units check for every scan (:mod:`vetseg.io.units`); a scan
            that fails the check is reported and the others go on.

    Returns:
        One item per scan, in order; failed items carry the error's one sentence (none when
        the shard holds no scan).

    Raises:
        InputError: the folder holds no scan.
    """
    folder, out_dir = Path(folder), Path(out_dir)
    excluded = tuple(p for p in (out_dir, report_dir, preview_dir) if p is not None)
    entries = find_scans(folder, exclude=excluded)
    if not entries:
        raise InputError(
            f"Cannot segment {folder}: it holds no scan (.nii, .nii.gz, .nrrd, .mha, .mhd or a "
            "DICOM series folder)."
        )
    if shard is not None:
        entries = shard_scans(entries, *shard)
    items = []
    for index, entry in enumerate(entries):
        if on_scan is not None:
            on_scan(index, len(entries), entry)
        outputs = SegmentOutputs(
            labels=out_dir / f"{entry.name}{suffix}",
            report=report_dir / entry.name if report_dir is not None else None,
            preview=preview_dir / f"{entry.name}.png" if preview_dir is not None else None,
        )
        started = time.perf_counter()
        item = BatchItem(entry)
        try:
            item.result = segment_scan(
                segmenter,
                entry.path,
                outputs,
                progress=progress,
                orientation=orientation,
                units=units,
            )
        except VetsegError as exc:
            item.error = str(exc)
        except Exception as exc:  # one broken scan must not stop the batch
            where = traceback.extract_tb(exc.__traceback__)[-1]
            item.error = (
                f"unexpected {type(exc).__name__} in {Path(where.filename).name}:{where.lineno}: "
                f"{exc}"
            )
        item.seconds = time.perf_counter() - started
        items.append(item)
    return items
