"""``vetseg info``: what a scan or label map is, in numbers a radiologist checks first.

:func:`describe` gathers shape, spacing, orientation, intensity range, whether the volume
looks like CT in Hounsfield units or like a label map, and for a label map the ids present
with voxel counts, volumes and names from the best-fitting vocabulary.
:func:`format_description` turns that into text for the terminal.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vetseg.io.image import ImageMeta, read_image
from vetseg.io.units import AIR_HU
from vetseg.labels import CORE_ORGANS, TOTALSEG_V2

#: At most this many distinct values for a volume to count as a label map.
MAX_LABELS = 256
# Label maps are piecewise constant: most foreground voxels equal their x-neighbour, while
# intensity images are noisy. Measured on ../shared/data: label maps 0.82-0.95 (the 3 mm
# TotalSegmentator map with thin ribs is the lowest), micro-CT 0.10-0.21. Midway between.
_CONSTANT_NEIGHBOUR_FRACTION = 0.5
# Raw CT values (HU + 1024): cortical bone lies above this; 8-bit and most other images do not.
_RAW_BONE = 1200.0


def describe(path: str | Path, orientation: str | None = None) -> dict[str, Any]:
    """Facts about one scan or label map.

    Args:
        path: anything :func:`vetseg.io.image.read_image` reads.
        orientation: override of the header's direction (``--orientation``); the geometry
            shown is then the overridden one, and ``orientation_override`` says so.

    Returns:
        A JSON-friendly dict: ``path``, ``format``, ``shape`` (array ``[z, y, x]``), ``size``
        ``(x, y, z)``, ``spacing`` / ``origin`` (mm, x, y, z), ``direction``, ``orientation``
        (e.g. ``"LPS"``, ``"RAS"``), ``field_of_view_mm``, ``dtype``, ``min``, ``max``,
        ``mean``, ``kind`` (``"label map"``, ``"CT (HU)"`` or ``"image"``), ``kind_reason``,
        and for a label map ``labels`` (one dict per id: ``id``, ``name``, ``voxels``,
        ``volume_ml``) with ``label_names_source``; for DICOM ``series_uid`` and
        ``series_count``; ``posture`` (the long-axis check of :mod:`vetseg.io.orientation`:
        ``extents_mm`` along the canonical slice, row and column axes, ``suggestion``) and
        ``posture_warning`` (``""`` when the slices cut across the body).

    Raises:
        InputError: the file cannot be read (see ``read_image``).
    """
    path = Path(path)
    from vetseg.io.orientation import apply_orientation_override, check_posture

    array, meta = read_image(path)
    meta = apply_orientation_override(meta, orientation, array.shape)
    size = tuple(int(s) for s in array.shape[::-1])
    info: dict[str, Any] = {
        "path": str(path),
        "format": meta.source_format or "unknown",
        "shape": [int(s) for s in array.shape],
        "size": list(size),
        "spacing": list(meta.spacing),
        "origin": list(meta.origin),
        "direction": list(meta.direction),
        "orientation": meta.orientation,
        "field_of_view_mm": [float(n * s) for n, s in zip(size, meta.spacing, strict=True)],
        "dtype": str(array.dtype),
        "min": _number(array.min()) if array.size else None,
        "max": _number(array.max()) if array.size else None,
        "mean": float(array.mean(dtype=np.float64)) if array.size else None,
    }
    if orientation is not None:
        info["orientation_override"] = meta.orientation
    if meta.source_format == "DICOM":
        info["series_uid"] = meta.series_uid
        info["series_count"] = meta.series_count

    counts = _label_counts(array)
    kind, reason = _classify(array, counts, meta)
    info["kind"] = kind
    info["kind_reason"] = reason
    posture = check_posture(array, meta, threshold=0 if kind == "label map" else None)
    if posture is not None:
        info["posture"] = {
            "extents_mm": list(posture.extents_mm),
            "long_axis_mm": posture.long_axis_mm,
            "tilt_deg": posture.tilt_deg,
            "suggestion": posture.suggestion,
        }
        info["posture_warning"] = posture.message(str(path))
    if kind == "label map" and counts is not None:
        names, source = _label_names(path, meta, [i for i in counts if i != 0])
        voxel_ml = float(np.prod(meta.spacing)) / 1000.0
        info["labels"] = [
            {
                "id": label_id,
                "name": names.get(label_id, "background" if label_id == 0 else None),
                "voxels": n,
                "volume_ml": n * voxel_ml,
            }
            for label_id, n in counts.items()
        ]
        info["label_names_source"] = source
    return info


def _number(value: Any) -> int | float:
    return int(value) if np.issubdtype(type(value), np.integer) else float(value)


def _label_counts(array: np.ndarray) -> dict[int, int] | None:
    """Voxels per value for non-negative integer volumes with at most MAX_LABELS values."""
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool) or not array.size:
        return None
    if int(array.min()) < 0 or int(array.max()) > 65535:
        return None
    total = np.zeros(int(array.max()) + 1, dtype=np.int64)
    # Slice by slice, so that a large volume is never copied whole to int64.
    for plane in array:
        total += np.bincount(plane.ravel(), minlength=total.size)
    present = np.nonzero(total)[0]
    if present.size > MAX_LABELS:
        return None
    return {int(i): int(total[i]) for i in present}


def _constant_neighbour_fraction(array: np.ndarray) -> float:
    """Fraction of foreground voxels whose x-neighbour has the same value."""
    left, right = array[..., :-1], array[..., 1:]
    foreground = (left != 0) | (right != 0)
    n = int(foreground.sum())
    if n == 0:
        return 1.0
    return float(((left == right) & foreground).sum()) / n


def _classify(array: np.ndarray, counts: dict[int, int] | None, meta: ImageMeta) -> tuple[str, str]:
    """``("label map" | "CT (HU)" | "image", why)``."""
    if meta.segment_names:
        return "label map", "it carries segment names"
    if counts is not None:
        smooth = _constant_neighbour_fraction(array)
        if smooth >= _CONSTANT_NEIGHBOUR_FRACTION:
            return (
                "label map",
                f"{len(counts)} distinct non-negative integers, piecewise constant "
                f"({smooth:.0%} of foreground voxels equal their neighbour)",
            )
    low = float(array.min()) if array.size else 0.0
    if low <= AIR_HU:
        return "CT (HU)", f"values reach {low:.0f}, air in Hounsfield units"
    why = f"no values below {AIR_HU:.0f}, so not Hounsfield units (air would be)"
    if low >= 0.0 and float(array.max()) >= _RAW_BONE:
        # 0 .. ~4095 with bone above ~1200: a CT stored as the scanner's raw values.
        why += (
            "; if it is a CT stored as raw scanner values, HU = value - 1024 (vetseg segment"
            " --rescale-intercept -1024)"
        )
    return "image", why


def _read_vocabulary(file: Path) -> dict[int, str] | None:
    """Label names from a ``labels.json`` (``{"1": "liver"}``) or MSD/nnU-Net ``dataset.json``."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, Mapping):
        return None
    if file.name == "dataset.json":
        data = data.get("labels")
        if not isinstance(data, Mapping):
            return None
    names: dict[int, str] = {}
    for key, value in data.items():
        # MSD: {"1": "liver"}; nnU-Net v2: {"liver": 1}.
        if str(key).lstrip("-").isdigit() and isinstance(value, str):
            names[int(key)] = value
        elif isinstance(value, int) and not isinstance(value, bool):
            names[value] = str(key)
    return names or None


def _label_names(path: Path, meta: ImageMeta, ids: list[int]) -> tuple[dict[int, str], str]:
    """Names for the ids present, and where they came from (saying when it is a guess)."""
    if meta.segment_names and all(i in meta.names for i in ids):
        return meta.names, "segment names in the file"
    folder = path if path.is_dir() else path.parent
    candidates = [
        folder / "labels.json",
        folder / "dataset.json",
        folder.parent / "labels.json",
        folder.parent / "dataset.json",
    ]
    for candidate in candidates:
        if candidate.is_file():
            names = _read_vocabulary(candidate)
            if names and all(i in names for i in ids):
                return names, f"{candidate.name} in {candidate.parent}"
    if all(1 <= i <= len(CORE_ORGANS) for i in ids):
        core = {i + 1: name for i, name in enumerate(CORE_ORGANS)}
        return core, "vetseg core organs (a guess from the ids)"
    if all(i in TOTALSEG_V2 for i in ids):
        return dict(TOTALSEG_V2), "TotalSegmentator v2 (a guess from the ids)"
    return {}, "unknown (no labels.json or dataset.json beside the file)"


def format_description(d: Mapping[str, Any]) -> str:
    """Readable multi-line text of a :func:`describe` result."""

    def triple(values: Any, digits: int = 3) -> str:
        return " x ".join(f"{v:.{digits}f}".rstrip("0").rstrip(".") for v in values)

    lines = [f"{d['path']}  ({d['format']})"]
    if d.get("series_uid") is not None:
        series = d["series_uid"] or "(removed by anonymisation)"
        extra = f", largest of {d['series_count']} series" if d.get("series_count", 0) > 1 else ""
        lines.append(f"  DICOM series     {series}{extra}")
    rows = [
        ("size (x, y, z)", " x ".join(str(s) for s in d["size"]) + " voxels"),
        ("array [z, y, x]", " x ".join(str(s) for s in d["shape"]) + f"  {d['dtype']}"),
        ("spacing", triple(d["spacing"], 4) + " mm"),
        ("field of view", triple(d["field_of_view_mm"], 1) + " mm"),
        ("origin", ", ".join(f"{v:.2f}" for v in d["origin"]) + " mm (LPS)"),
        ("orientation", f"{d['orientation']} (letters the x, y, z axes point to)"),
    ]
    if d.get("orientation_override"):
        rows[-1] = ("orientation", f"{d['orientation']} (given by --orientation, not the header)")
    posture = d.get("posture")
    if posture:
        extents = " x ".join(f"{v:.1f}" for v in posture["extents_mm"])
        rows.append(
            (
                "body extent",
                f"{extents} mm along slice, row, column axes; long axis "
                f"{posture['long_axis_mm']:.1f} mm, {posture['tilt_deg']:.0f} deg from the "
                "slice axis",
            )
        )
    if d.get("min") is not None:
        rows.append(
            ("values", f"min {_short(d['min'])}, max {_short(d['max'])}, mean {d['mean']:.4g}")
        )
    rows.append(("looks like", f"{d['kind']}: {d['kind_reason']}"))
    lines += [f"  {name:<16} {value}" for name, value in rows]
    labels = d.get("labels")
    if labels:
        organs = [row for row in labels if row["id"] != 0]
        lines.append(f"  labels           {len(organs)} ids, names from {d['label_names_source']}")
        lines.append(f"    {'id':>5}  {'name':<32} {'voxels':>11} {'volume ml':>10}")
        for row in labels:
            name = row["name"] or "?"
            lines.append(
                f"    {row['id']:>5}  {name:<32} {row['voxels']:>11} {row['volume_ml']:>10.2f}"
            )
    return "\n".join(lines)


def _short(value: int | float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.4g}"
