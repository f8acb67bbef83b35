"""``vetseg segment`` and ``vetseg export``: options checked, progress shown, results tabled.

The command bodies in :mod:`vetseg.cli` only gather their options into a
:class:`SegmentRequest` and call :func:`run_segment`; everything here is plain library code
that a server could call too (with its own console). Progress bars go to stderr, results to
stdout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from vetseg.config import TILINGS
from vetseg.errors import InputError
from vetseg.inference.report import OrganStats
from vetseg.io.units import ScanUnits

if TYPE_CHECKING:
    from vetseg.inference.batch import ScanEntry
    from vetseg.inference.postprocess import PostprocessConfig
    from vetseg.inference.segmenter import Segmenter

#: Exit code of a batch in which at least one scan failed (bad input as a whole is 2).
EXIT_SOME_FAILED = 1


@dataclass(frozen=True)
class SegmentRequest:
    """Everything ``vetseg segment`` was asked to do.

    Attributes:
        model: the model folder.
        scan: a scan (file or DICOM series folder) or a folder of scans.
        out: label map file, or a folder for a folder of scans.
        preview: PNG preview (one scan).
        report: report prefix, ``PREFIX.csv`` + ``PREFIX.json`` (one scan).
        report_dir: folder for ``<scan>.csv`` + ``<scan>.json`` reports (one scan or many).
        uncertainty: uncertainty map (one scan).
        dicom_seg: DICOM Segmentation file (one DICOM series).
        preview_dir: folder for ``<scan>.png`` previews (a folder of scans).
        label_format: label map ending for a folder of scans (``nii.gz``, ``nrrd``, ...).
        engine: ``auto`` (the fastest engine that passes the accuracy check here, see
            :func:`vetseg.inference.engines.select_engine`), ``torch``, ``onnx`` or ``openvino``.
        onnx_file: exported model for the ``onnx`` engine.
        batch_size: slices per forward pass (None: by the model's input size, 4 at 512).
        threshold: organ probability threshold.
        postprocess: apply the post-processing rules.
        postprocess_file: JSON file with post-processing rules.
        threads: ONNX Runtime / OpenVINO threads (None: their default).
        precision: ``auto``, ``fp32`` or ``bf16`` (OpenVINO, after the accuracy check).
        smooth_slices: average organ probabilities over this many neighbouring slices on each
            side (0: off, the default until measured better on held-out data).
        mirror: also segment every slice mirrored left-right and average the two answers
            (test-time augmentation; twice the network's time; off by default).
        tilings: grids of tiles averaged per slice (1, 3 or 5; one more pass of the network
            each); None: the model's own (its model.json).
        orientation: where the scan's array axes x, y, z point (``PIR``), overriding the
            header (see :mod:`vetseg.io.orientation`); None: the header's.
        shard: ``(i, n)``: segment only shard ``i`` of ``n`` of a folder of scans
            (:func:`vetseg.inference.batch.shard_scans`).
        rescale_intercept: added to every scan's values before the model sees them
            (``-1024`` for files that store the scanner's raw values; see
            :mod:`vetseg.io.units`).
        check_units: refuse a scan whose values are not in the model's units (a HU model
            given a scan without air).
    """

    model: Path
    scan: Path
    out: Path
    preview: Path | None = None
    report: Path | None = None
    report_dir: Path | None = None
    uncertainty: Path | None = None
    dicom_seg: Path | None = None
    preview_dir: Path | None = None
    label_format: str | None = None
    engine: str = "auto"
    onnx_file: Path | None = None
    batch_size: int | None = None
    threshold: float = 0.5
    postprocess: bool = True
    postprocess_file: Path | None = None
    threads: int | None = None
    precision: str = "auto"
    smooth_slices: int = 0
    mirror: bool = False
    tilings: int | None = None
    orientation: str | None = None
    shard: tuple[int, int] | None = None
    rescale_intercept: float = 0.0
    check_units: bool = True

    def units(self) -> ScanUnits:
        """The intercept and units check as :func:`segment_scan` takes them."""
        return ScanUnits(self.rescale_intercept, self.check_units)


def _check_request(request: SegmentRequest, batch: bool) -> None:
    """Refuse option combinations that make no sense, before any model is loaded."""
    from vetseg.inference.engines import ENGINES, PRECISIONS
    from vetseg.inference.pipeline import MAP_SUFFIXES
    from vetseg.io.orientation import parse_orientation

    if request.engine not in ENGINES:
        raise InputError(f"Unknown engine {request.engine!r}; vetseg runs {', '.join(ENGINES)}.")
    if request.precision not in PRECISIONS:
        raise InputError(f"Unknown precision {request.precision!r}; use {', '.join(PRECISIONS)}.")
    if request.precision == "bf16" and request.engine in ("torch", "onnx"):
        raise InputError(f"--engine {request.engine} runs fp32 only; bf16 runs in OpenVINO.")
    if request.threads is not None and request.threads < 1:
        raise InputError(f"--threads must be at least 1, got {request.threads}.")
    if request.onnx_file is not None and request.engine == "torch":
        raise InputError("--onnx-file is for --engine onnx.")
    if request.batch_size is not None and request.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {request.batch_size}.")
    if not 0 < request.threshold < 1:
        raise InputError(f"--threshold must lie between 0 and 1, got {request.threshold}.")
    parse_orientation(request.orientation)
    request.units()  # a finite intercept
    if request.smooth_slices < 0:
        raise InputError(f"--smooth-slices must be 0 or more, got {request.smooth_slices}.")
    if request.tilings is not None and request.tilings not in TILINGS:
        raise InputError(f"--tilings must be 1, 3 or 5, got {request.tilings}.")
    if batch:
        single = {
            "--preview": request.preview,
            "--report": request.report,
            "--uncertainty": request.uncertainty,
            "--dicom-seg": request.dicom_seg,
        }
        given = [name for name, value in single.items() if value is not None]
        if given:
            raise InputError(
                f"{request.scan} is a folder of scans, and {given[0]} names one file; use "
                "--report-dir and --preview-dir for a folder."
            )
        if request.shard is not None:
            from vetseg.inference.batch import shard_scans

            shard_scans([], *request.shard)  # checks the numbers before the model loads
        if request.out.exists() and not request.out.is_dir():
            raise InputError(f"Cannot write into {request.out}: it is a file, not a folder.")
        if any(request.out.name.lower().endswith(s) for s in MAP_SUFFIXES):
            raise InputError(
                f"{request.scan} is a folder of scans, so --out must be a folder, not "
                f"{request.out.name}."
            )
        if request.label_format is not None:
            suffix = "." + request.label_format.lstrip(".")
            if suffix not in MAP_SUFFIXES:
                raise InputError(
                    f"Unknown label map format {request.label_format!r}; use one of "
                    f"{', '.join(s.lstrip('.') for s in MAP_SUFFIXES)}."
                )
    else:
        if request.label_format is not None:
            raise InputError(
                "--format is for a folder of scans; for one scan the ending of --out decides."
            )
        if request.preview_dir is not None:
            raise InputError("--preview-dir is for a folder of scans; use --preview FILE.png.")
        if request.shard is not None:
            raise InputError(f"--shard is for a folder of scans; {request.scan} is one scan.")
        if request.report is not None and request.report_dir is not None:
            raise InputError("Give --report or --report-dir, not both.")


def _postprocess_config(request: SegmentRequest) -> PostprocessConfig | None:
    from vetseg.config import load_json
    from vetseg.inference.postprocess import PostprocessConfig

    if not request.postprocess:
        if request.postprocess_file is not None:
            raise InputError("Give --rules FILE or --no-postprocess, not both.")
        return None
    if request.postprocess_file is not None:
        return PostprocessConfig.from_json(load_json(request.postprocess_file))
    return PostprocessConfig()


def _progress(console: Console) -> Progress:
    # Shown on a terminal only: in a log file or a pipe a redrawn bar is noise.
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )


def run_segment(
    request: SegmentRequest, console: Console | None = None, errors: Console | None = None
) -> int:
    """Run ``vetseg segment``: one scan, or every scan of a folder.

    Args:
        request: the options.
        console: where results go (default: stdout).
        errors: where progress and failed scans go (default: stderr).

    Returns:
        The exit code: 0, or :data:`EXIT_SOME_FAILED` when a scan of a folder failed.

    Raises:
        VetsegError: bad input (unknown engine, option for the wrong mode, unreadable model or
            scan); nothing has been written then.
    """
    from vetseg.inference.batch import is_scan_folder, scan_name
    from vetseg.inference.pipeline import SegmentOutputs, segment_scan
    from vetseg.inference.segmenter import Segmenter

    console = console or Console()
    errors = errors or Console(stderr=True)
    if not request.scan.exists():
        raise InputError(f"Cannot read {request.scan}: no such file or folder.")
    batch = is_scan_folder(request.scan)
    _check_request(request, batch)
    postprocess = _postprocess_config(request)
    segmenter = Segmenter.load(
        request.model,
        engine=request.engine,
        onnx_path=request.onnx_file,
        threads=request.threads,
        precision=request.precision,
        say=lambda message: errors.print(f"note: {message}", highlight=False, soft_wrap=True),
        batch_size=request.batch_size,
        threshold=request.threshold,
        postprocess=postprocess,
        smooth_slices=request.smooth_slices,
        mirror=request.mirror,
        tilings=request.tilings,
    )
    if batch:
        return _run_batch(request, segmenter, console, errors)
    report = request.report
    if report is None and request.report_dir is not None:
        report = request.report_dir / scan_name(request.scan)
    outputs = SegmentOutputs(
        labels=request.out,
        report=report,
        preview=request.preview,
        uncertainty=request.uncertainty,
        dicom_seg=request.dicom_seg,
    )
    with _progress(errors) as bar:
        task = bar.add_task(f"segmenting {request.scan.name}", total=None)
        result = segment_scan(
            segmenter,
            request.scan,
            outputs,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            orientation=request.orientation,
            units=request.units(),
        )
    found = ", ".join(result.organs_found) or "none"
    console.print(
        f"wrote {request.out}: {len(result.organs_found)} organ(s) found: {found}",
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        organ_table(result.organ_stats, f"{result.slices} slices, {result.seconds:.1f} s")
    )
    for path in result.written[1:]:
        console.print(f"wrote {path}", highlight=False, soft_wrap=True)
    for note in result.notes:
        errors.print(f"note: {note}", highlight=False, soft_wrap=True)
    for warning in result.warnings:
        errors.print(f"warning: {warning}", highlight=False, soft_wrap=True)
    return 0


def _run_batch(
    request: SegmentRequest, segmenter: Segmenter, console: Console, errors: Console
) -> int:
    from vetseg.inference.batch import segment_folder

    suffix = "." + (request.label_format or "nii.gz").lstrip(".")
    with _progress(errors) as bar:
        scans = bar.add_task("scans", total=None)
        slices = bar.add_task("slices", total=None)

        def on_scan(index: int, count: int, entry: ScanEntry) -> None:
            bar.update(scans, completed=index, total=count, description=f"scan {entry.name}")
            bar.reset(slices, total=None)

        items = segment_folder(
            segmenter,
            request.scan,
            request.out,
            suffix=suffix,
            report_dir=request.report_dir,
            preview_dir=request.preview_dir,
            on_scan=on_scan,
            progress=lambda done, total: bar.update(slices, completed=done, total=total),
            orientation=request.orientation,
            shard=request.shard,
            units=request.units(),
        )
        bar.update(scans, completed=len(items))
    where = f"{request.scan}" + (
        f", shard {request.shard[0]}/{request.shard[1]}" if request.shard else ""
    )
    table = Table(title=f"{len(items)} scan(s) from {where}")
    for column in ("scan", "status", "slices", "seconds", "organs found / error"):
        table.add_column(column, justify="right" if column in ("slices", "seconds") else "left")
    for item in items:
        if item.ok and item.result is not None:
            organs = ", ".join(item.result.organs_found) or "none"
            table.add_row(
                item.entry.name, "ok", str(item.result.slices), f"{item.seconds:.1f}", organs
            )
        else:
            table.add_row(
                item.entry.name, "[red]FAILED[/red]", "", f"{item.seconds:.1f}", item.error
            )
    console.print(table)
    failed = [item for item in items if not item.ok]
    console.print(
        f"{len(items) - len(failed)} of {len(items)} scan(s) segmented into {request.out}",
        highlight=False,
        soft_wrap=True,
    )
    for item in items:
        for warning in item.result.warnings if item.result is not None else []:
            errors.print(f"warning: {warning}", highlight=False, soft_wrap=True)
    for item in failed:
        errors.print(f"failed: {item.entry.path}: {item.error}", highlight=False, soft_wrap=True)
    return EXIT_SOME_FAILED if failed else 0


def organ_table(stats: list[OrganStats], caption: str | None = None) -> Table:
    """The report rows as a rich table (empty organs shown as such)."""
    table = Table(caption=caption)
    table.add_column("organ")
    for column in ("volume (ml)", "mean HU", "sd HU", "confidence"):
        table.add_column(column, justify="right")

    def fmt(value: float, digits: int) -> str:
        return "-" if math.isnan(value) else f"{value:.{digits}f}"

    for row in stats:
        table.add_row(
            row.organ,
            fmt(row.volume_ml, 2) if row.voxels else "not found",
            fmt(row.mean_hu, 1),
            fmt(row.sd_hu, 1),
            fmt(row.confidence, 3),
        )
    return table


def run_export(model: Path, onnx: Path, console: Console | None = None) -> float:
    """Export a model to ONNX and check ONNX Runtime against PyTorch on random slices.

    Returns:
        The largest probability difference found (also printed).

    Raises:
        InputError: the target does not end in ``.onnx``, or the check fails (> 1e-3); the
            file is written only after the check passed.
    """
    from vetseg.fileutil import atomic_write_bytes
    from vetseg.inference.engines import OnnxEngine, export_onnx_bytes, probability_difference
    from vetseg.models.files import load_model

    console = console or Console()
    if Path(onnx).suffix.lower() != ".onnx":
        raise InputError(f"Cannot write {onnx}: the file name must end in .onnx.")
    network, info = load_model(Path(model))
    payload = export_onnx_bytes(network, info)
    difference = probability_difference(
        network,
        OnnxEngine(payload),
        info.preprocess.tile_size,
        channels=info.preprocess.in_channels,
    )
    if difference > 1e-3:
        raise InputError(
            f"ONNX Runtime's probabilities differ from PyTorch's by {difference:.2g} (> 1e-3) "
            f"for {model}, so {onnx} was not written."
        )
    atomic_write_bytes(Path(onnx), payload)
    console.print(
        f"wrote {onnx}: ONNX Runtime probabilities within {difference:.1e} of PyTorch's "
        f"({info.preprocess.tile_size} x {info.preprocess.tile_size} input, batch axis dynamic)",
        highlight=False,
        soft_wrap=True,
    )
    return difference


def run_info_engines(
    model: Path | None, threads: int | None = None, console: Console | None = None
) -> None:
    """``vetseg info --engines [MODEL]``: engines, versions and precisions of this machine;
    with a model, its bf16 accuracy check (cached, else run now) and what ``auto`` picks.

    Raises:
        VetsegError: an unreadable model.
    """
    from vetseg.inference.capabilities import bf16_native, machine_support, openvino_version
    from vetseg.inference.engines import ModelSource, checked_bf16, select_engine
    from vetseg.models.files import read_model_info, resolve_model_dir

    console = console or Console()
    support = machine_support()
    flags = ", ".join(support.bf16_flags) or "none"
    console.print(f"CPU: {support.cpu} (native bf16: {flags})", highlight=False)
    if support.openvino_capabilities:
        console.print(
            f"OpenVINO CPU capabilities: {', '.join(support.openvino_capabilities)}",
            highlight=False,
        )
    table = Table(title="engines")
    for column in ("engine", "version", "precisions", "note"):
        table.add_column(column)
    for engine in support.engines:
        table.add_row(
            engine.name,
            engine.version or "-",
            ", ".join(engine.precisions) or "-",
            engine.note,
        )
    console.print(table)
    if model is None:
        return
    model_dir = resolve_model_dir(model)
    info = read_model_info(model_dir)
    notes: list[str] = []
    source = ModelSource(info, model_dir=model_dir)
    if openvino_version() is not None and bf16_native():
        report = checked_bf16(source, threads, notes.append)[0]
        console.print(precision_table(report))
    picked = select_engine("auto", source, threads=threads, say=notes.append)
    for note in dict.fromkeys(notes):  # each once
        console.print(f"note: {note}", highlight=False, soft_wrap=True)
    console.print(
        f"--engine auto runs {model} in {picked.name} {getattr(picked, 'precision', 'fp32')}",
        highlight=False,
        soft_wrap=True,
    )


def precision_table(report: Any) -> Table:
    """A :class:`~vetseg.inference.precision.PrecisionReport` as a rich table."""

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    ref, cand = report.reference, report.candidate
    table = Table(title=f"{cand} vs {ref} on {report.slices} slices of {report.source}")
    for column in ("organ", f"Dice {ref}", f"Dice {cand}", "Dice change", "agreement Dice"):
        table.add_column(column, justify="left" if column == "organ" else "right")
    for organ in report.organs:
        table.add_row(
            organ.organ,
            fmt(organ.dice_reference),
            fmt(organ.dice_candidate),
            fmt(organ.dice_change),
            fmt(organ.dice_agreement),
        )
    verdict = "passed" if report.passed else "REFUSED"
    table.caption = (
        f"{verdict}: labels agree on {report.label_agreement:.4%} of voxels; {report.reason}"
    )
    return table
