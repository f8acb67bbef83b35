"""One scan in, every requested output out: label map, report, preview, uncertainty, DICOM-SEG.

:func:`segment_scan` is what ``vetseg segment`` runs for one scan (and, per scan, for a folder).
Every check that can fail on the user's input (output names, DICOM-SEG for a non-DICOM scan or
a series without UIDs) runs before the model does and before anything is written; every file is
written atomically.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vetseg.errors import InputError
from vetseg.inference.report import OrganStats, SegmentationReport, report_paths
from vetseg.inference.segmenter import Progress, Segmenter
from vetseg.io.units import ScanUnits

#: Extensions of a label map or uncertainty map vetseg writes.
MAP_SUFFIXES: tuple[str, ...] = (".seg.nrrd", ".nii.gz", ".nrrd", ".nii", ".mha", ".mhd")
#: Extensions of image files :func:`vetseg.io.image.read_image` reads that are not DICOM.
_NON_DICOM_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


@dataclass(frozen=True)
class SegmentOutputs:
    """Where the outputs of one scan go (None: not written).

    Attributes:
        labels: the label map (``.nii.gz``, ``.nii``, ``.nrrd``, ``.seg.nrrd``, ``.mha``).
        report: prefix of the report: ``PREFIX.csv`` and ``PREFIX.json``.
        preview: PNG with axial, coronal and sagittal slices and the label overlay.
        uncertainty: per-voxel uncertainty map (uint8, percent), same formats as ``labels``.
        dicom_seg: DICOM Segmentation object (DICOM series input only).
    """

    labels: Path
    report: Path | None = None
    preview: Path | None = None
    uncertainty: Path | None = None
    dicom_seg: Path | None = None


@dataclass
class ScanResult:
    """What one scan gave.

    Attributes:
        scan: the scan.
        written: files written, in order.
        organs_found: organs with at least one voxel.
        organ_stats: the report rows.
        slices: slices segmented.
        seconds: wall time, reading to the last file.
        step_seconds: wall time per step: ``read``, the segmenter's steps (``model``,
            ``postprocess``, ...), ``write`` (label map), ``outputs`` (every other file).
        notes: things the user should know (e.g. no DICOM-SEG because no organ was found).
        warnings: things that may make the result wrong (the body's long axis not across the
            slices: :func:`vetseg.io.orientation.posture_warning`; a body cut by the field of
            view: :func:`field_cut_warning`).
    """

    scan: Path
    written: list[Path] = field(default_factory=list)
    organs_found: list[str] = field(default_factory=list)
    organ_stats: list[OrganStats] = field(default_factory=list)
    slices: int = 0
    seconds: float = 0.0
    step_seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


#: Share of a scan's slices cut by the field of view from which ``vetseg segment`` warns.
CUT_WARN_SHARE = 0.1


def field_cut_warning(cut: int, slices: int, scan: str) -> str:
    """The warning for a scan whose body the field of view cuts on ``cut`` of its ``slices``
    (:func:`~vetseg.data.preprocess.slices_cut_by_field`), or ``""`` below
    :data:`CUT_WARN_SHARE` of them."""
    if cut == 0 or cut < CUT_WARN_SHARE * slices:
        return ""
    return (
        f"{scan}: the body reaches the edge of the scanner's field of view on {cut} of"
        f" {slices} slices (a field narrower than the body): organs there are segmented only"
        " inside the field, and less well near its edge (a real series cut to a 292 mm field"
        ' lost 0.1 of its spleen\'s Dice; README, "Where vetseg loses").'
    )


def _has_suffix(path: Path, suffixes: tuple[str, ...]) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) and len(name) > len(s) for s in suffixes)


def check_outputs(scan: Path, outputs: SegmentOutputs) -> None:
    """Refuse output names vetseg cannot write, and outputs that would overwrite the scan.

    Raises:
        InputError: one sentence naming the file and the problem.
    """
    kinds = ", ".join(MAP_SUFFIXES)
    if not _has_suffix(outputs.labels, MAP_SUFFIXES):
        raise InputError(
            f"Cannot write the label map {outputs.labels}: its name must end in one of {kinds}."
        )
    if outputs.uncertainty is not None and not _has_suffix(outputs.uncertainty, MAP_SUFFIXES):
        raise InputError(
            f"Cannot write the uncertainty map {outputs.uncertainty}: its name must end in one "
            f"of {kinds}."
        )
    if outputs.preview is not None and outputs.preview.suffix.lower() != ".png":
        raise InputError(f"Cannot write the preview {outputs.preview}: its name must end in .png.")
    if outputs.dicom_seg is not None and scan.is_file() and _has_suffix(scan, _NON_DICOM_SUFFIXES):
        raise InputError(
            f"Cannot write a DICOM-SEG for {scan}: it is not a DICOM series (a DICOM "
            "segmentation must reference DICOM source images)."
        )
    targets = [outputs.labels, outputs.uncertainty, outputs.preview, outputs.dicom_seg]
    if outputs.report is not None:
        targets += list(report_paths(outputs.report))
    resolved_scan = scan.resolve()
    for target in targets:
        if target is not None and target.resolve() == resolved_scan:
            raise InputError(f"Cannot write {target}: it is the scan being segmented.")


def segment_scan(
    segmenter: Segmenter,
    scan: str | Path,
    outputs: SegmentOutputs,
    *,
    progress: Progress | None = None,
    orientation: str | None = None,
    units: ScanUnits | None = None,
) -> ScanResult:
    """Read a scan, segment it and write every requested output.

    Args:
        segmenter: the loaded model (with its engine and post-processing rules).
        scan: NIfTI, NRRD, MHA file or DICOM series folder.
        outputs: where the outputs go.
        progress: called with ``(slices done, slices in all)`` after every batch.
        orientation: override of the header's direction (``--orientation``, see
            :func:`vetseg.io.orientation.apply_orientation_override`): the model and the
            preview see the scan so; the label map keeps the header's own geometry, so it lies
            on the scan in any viewer.
        units: intercept to add to the scan's values and whether to check that they are in
            the model's units (:mod:`vetseg.io.units`); None: as stored, checked.

    Returns:
        What was written and found.

    Raises:
        InputError: bad output names, unreadable scan, DICOM-SEG for a scan that cannot have
            one, values not in the model's units; raised before anything is written.
    """
    from vetseg.inference.dicom_seg import load_dicom_source
    from vetseg.io.image import read_scan, write_image
    from vetseg.io.orientation import apply_orientation_override, posture_warning

    started = time.perf_counter()
    scan = Path(scan)
    check_outputs(scan, outputs)
    volume, meta = read_scan(scan)
    volume = (units or ScanUnits()).apply(volume, segmenter.info.preprocess.window, str(scan))
    posed = apply_orientation_override(meta, orientation, volume.shape)
    source = load_dicom_source(meta) if outputs.dicom_seg is not None else None
    read_seconds = time.perf_counter() - started
    canonical = segmenter.info.preprocess.orientation
    warning = posture_warning(volume, posed, str(scan), canonical)
    prediction = segmenter.predict(
        volume, posed, keep_probability=outputs.uncertainty is not None, progress=progress
    )
    result = ScanResult(scan=scan, organ_stats=prediction.organ_stats, slices=volume.shape[0])
    result.warnings += [warning] if warning else []
    cut = field_cut_warning(prediction.cut_slices, prediction.slices, str(scan))
    result.warnings += [cut] if cut else []
    result.organs_found = [s.organ for s in prediction.organ_stats if s.voxels > 0]
    result.step_seconds = {"read": read_seconds, **prediction.seconds}

    written_at = time.perf_counter()
    write_image(prediction.labels, meta, outputs.labels, segment_names=segmenter.segment_names)
    result.written.append(outputs.labels)
    result.step_seconds["write"] = time.perf_counter() - written_at
    if outputs.uncertainty is not None:
        write_image(prediction.uncertainty(), meta, outputs.uncertainty)
        result.written.append(outputs.uncertainty)
    prediction.probability = None  # the uncertainty map was its only use
    if outputs.report is not None:
        report = build_report(
            segmenter, scan, meta.spacing, prediction.organ_stats, result.warnings
        )
        result.written += list(report.write(*report_paths(outputs.report)))
    if outputs.dicom_seg is not None and source is not None:
        if result.organs_found:
            from vetseg import __version__
            from vetseg.inference.dicom_seg import write_dicom_seg

            write_dicom_seg(
                prediction.labels,
                source,
                segmenter.organs,
                outputs.dicom_seg,
                model_id=segmenter.info.model_id,
                software_version=__version__,
            )
            result.written.append(outputs.dicom_seg)
            result.notes += [f"DICOM-SEG: {note} in the source headers" for note in source.notes]
        else:
            result.notes.append(
                f"no organ found, so no DICOM-SEG was written to {outputs.dicom_seg}"
            )
    if outputs.preview is not None:
        save_preview(segmenter, scan, volume, posed, prediction.labels, outputs.preview)
        result.written.append(outputs.preview)
    finished = time.perf_counter()
    result.step_seconds["outputs"] = finished - written_at - result.step_seconds["write"]
    result.seconds = finished - started
    return result


def build_report(
    segmenter: Segmenter,
    scan: Path,
    spacing: tuple[float, float, float],
    stats: list[OrganStats],
    warnings: list[str] | None = None,
) -> SegmentationReport:
    """The report of one scan: its organ rows, the model and settings that made them, and the
    ``warnings`` printed for it."""
    info = segmenter.info
    postprocess: dict[str, Any] | None = (
        segmenter.postprocess.to_json() if segmenter.postprocess is not None else None
    )
    return SegmentationReport(
        scan=str(scan),
        organs=stats,
        spacing_mm=spacing,
        model={
            "model_id": info.model_id,
            "stage": info.stage,
            "species": info.species,
            "synthetic_data": info.synthetic_data,
            "real_data": info.real_data,
        },
        settings={
            "engine": segmenter.engine.name,
            "precision": getattr(segmenter.engine, "precision", "fp32"),
            "threshold": segmenter.threshold,
            "batch_size": segmenter.batch_size,
            "postprocess": postprocess,
            "smooth_slices": segmenter.smooth_slices,
            "mirror": segmenter.mirror,
            "tilings": segmenter.tilings,
        },
        warnings=list(warnings or []),
    )


def save_preview(
    segmenter: Segmenter,
    scan: Path,
    volume: np.ndarray,
    meta: Any,
    labels: np.ndarray,
    out: Path,
) -> Path:
    """The three-view PNG of a scan with its new labels, written atomically."""
    from vetseg.fileutil import atomic_path
    from vetseg.viz.preview import render_preview

    title = f"{scan.name}: vetseg model {segmenter.info.model_id}"
    if segmenter.info.data_note:
        title += f" (trained on {segmenter.info.data_note})"
    image = render_preview(volume, meta, labels, segmenter.segment_names, title=title)
    with atomic_path(out, suffix=".png") as tmp:
        image.save(tmp, format="PNG")
    return out
