"""A PNG preview of a CT scan: axial, coronal and sagittal slices with the organ labels on top.

The volume is first turned to vetseg's canonical orientation (:func:`vetseg.io.to_canonical`),
so the panels are shown the way radiologists read them whatever the array order on disk: the
axial slice from the feet (patient's right on the image's left, anterior up), the coronal
slice from the front (head up, right on the left), the sagittal slice from the patient's
right (head up, anterior on the left). Each panel is resampled to square pixels from the voxel
spacing, so shapes keep their physical proportions. Slices pass through the centre of the
labelled voxels when there are labels, else through the middle of the volume.

Pillow only (no matplotlib): the preview is a few hundred kilobytes of PNG, written atomically.
"""

from __future__ import annotations

import colorsys
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from vetseg.errors import InputError
from vetseg.fileutil import atomic_path
from vetseg.io.image import ImageMeta, read_image, read_label, to_canonical
from vetseg.io.orientation import apply_orientation_override, posture_warning
from vetseg.labels import CORE_ORGANS

#: Soft-tissue window (W 400 / L 40): organs, fat and muscle apart; lungs black, bone white.
SOFT_TISSUE_WINDOW: tuple[float, float] = (-160.0, 240.0)
#: Layout in pixels: each panel's height; the caption band above the panels; the margin left of
#: the first panel; the gap between panels. Panels run axial, coronal, sagittal from the left.
PANEL_HEIGHT = 300
#: Widest panel in pixels; wider views keep their aspect at a smaller height.
MAX_PANEL_WIDTH = 3 * PANEL_HEIGHT
HEADER = 46
MARGIN = 10
GAP = 8
#: Opacity of the label colours over the CT.
OVERLAY_ALPHA = 0.38

_ORGAN_COLOURS: dict[str, tuple[int, int, int]] = {
    "liver": (222, 110, 60),
    "spleen": (170, 70, 200),
    "kidney_left": (250, 210, 40),
    "kidney_right": (60, 200, 90),
    "lungs": (70, 120, 255),
    "heart": (235, 40, 60),
    "bone": (0, 225, 225),
}
_BACKGROUND = (12, 12, 16)
_TEXT = (235, 235, 235)
_ACCENT = (255, 200, 60)


def organ_colour(label_id: int, name: str | None) -> tuple[int, int, int]:
    """The overlay colour of an organ: a fixed one for vetseg's organs, else one by id."""
    if name in _ORGAN_COLOURS:
        return _ORGAN_COLOURS[name]
    # Golden-ratio hues keep neighbouring ids apart.
    r, g, b = colorsys.hsv_to_rgb((label_id * 0.618034) % 1.0, 0.75, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def _window(ct: np.ndarray) -> tuple[float, float, str]:
    """The display window: soft tissue for HU data, else the 1-99.5 percentiles."""
    sample = ct[:: max(1, ct.shape[0] // 16)]
    lo, hi = float(sample.min()), float(sample.max())
    if lo < -500.0 and hi > 100.0:
        return SOFT_TISSUE_WINDOW[0], SOFT_TISSUE_WINDOW[1], "window W400 L40"
    p_lo, p_hi = (float(v) for v in np.percentile(sample, [1.0, 99.5]))
    if p_hi <= p_lo:
        p_hi = p_lo + 1.0
    return p_lo, p_hi, "window 1-99.5 percentile (not HU)"


def _slice_centre(shape: tuple[int, ...], labels: np.ndarray | None) -> tuple[int, int, int]:
    """Slice indices (z, y, x): the labelled voxels' centre of mass, or the volume's middle."""
    if labels is not None and labels.any():
        centre = ndimage.center_of_mass(labels > 0)
        return tuple(int(round(c)) for c in centre)  # type: ignore[return-value]
    return tuple(n // 2 for n in shape)  # type: ignore[return-value]


def _panel(
    ct2d: np.ndarray,
    labels2d: np.ndarray | None,
    pixel_mm: tuple[float, float],
    window: tuple[float, float],
    colours: Mapping[int, tuple[int, int, int]],
    height: int,
) -> Image.Image:
    """One slice as an RGB image of ``height`` pixels with square physical pixels.

    Args:
        ct2d: ``[rows, cols]`` intensities, already in display orientation.
        labels2d: matching label ids, or None.
        pixel_mm: (row, column) spacing in mm.
        window: display (low, high).
        colours: label id -> RGB.
        height: output height in pixels.
    """
    rows, cols = ct2d.shape
    width = max(1, int(round(height * (cols * pixel_mm[1]) / (rows * pixel_mm[0]))))
    if width > MAX_PANEL_WIDTH:
        # A thin stack (e.g. 20 slices of 2 mm) would give a coronal panel metres wide: draw it
        # at the true aspect within the width cap and centre it in a panel of full height.
        inner = _panel(
            ct2d,
            labels2d,
            pixel_mm,
            window,
            colours,
            max(1, int(round(height * MAX_PANEL_WIDTH / width))),
        )
        padded = Image.new("RGB", (inner.width, height), _BACKGROUND)
        padded.paste(inner, (0, (height - inner.height) // 2))
        return padded
    lo, hi = window
    grey = np.clip((ct2d.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0) * 255.0
    image = Image.fromarray(grey.astype(np.uint8)).resize((width, height), Image.BILINEAR)
    rgb = np.repeat(np.asarray(image, dtype=np.float32)[..., None], 3, axis=2)
    if labels2d is not None and labels2d.any():
        lab = np.asarray(
            Image.fromarray(labels2d.astype(np.int32)).resize((width, height), Image.NEAREST)
        )
        lut = np.zeros((int(lab.max()) + 1, 3), dtype=np.float32)
        for label_id, colour in colours.items():
            if label_id < len(lut):
                lut[label_id] = colour
        colour = lut[lab]
        inside = lab > 0
        rgb[inside] = (1.0 - OVERLAY_ALPHA) * rgb[inside] + OVERLAY_ALPHA * colour[inside]
        # A solid outline keeps small organs visible where the fill is faint.
        edge = inside & (ndimage.grey_erosion(lab, size=3) != ndimage.grey_dilation(lab, size=3))
        rgb[edge] = colour[edge]
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size only
        return ImageFont.load_default()


def _letters(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], marks: str) -> None:
    """Orientation letters on a panel: ``marks`` = left, right, top, bottom."""
    x0, y0, x1, y1 = box
    font = _font(14)
    places = [
        (x0 + 4, (y0 + y1) // 2, "lm"),
        (x1 - 4, (y0 + y1) // 2, "rm"),
        ((x0 + x1) // 2, y0 + 3, "mt"),
        ((x0 + x1) // 2, y1 - 3, "mb"),
    ]
    for (x, y, anchor), letter in zip(places, marks, strict=True):
        draw.text(
            (x, y),
            letter,
            fill=_ACCENT,
            font=font,
            anchor=anchor,
            stroke_width=2,
            stroke_fill=(0, 0, 0),
        )


def render_preview(
    ct: np.ndarray,
    meta: ImageMeta,
    labels: np.ndarray | None,
    organ_names: Mapping[int, str] | None,
    title: str | None = None,
) -> Image.Image:
    """Axial, coronal and sagittal slices side by side, with labels, legend and orientation.

    Args:
        ct: ``[z, y, x]`` volume as stored (any orientation; ``meta`` says which).
        meta: its geometry.
        labels: label ids on the same grid, or None.
        organ_names: label id -> name for the legend (default: :data:`CORE_ORGANS` order).
        title: first line of the caption (e.g. the file name; say SYNTHETIC where it is).

    Returns:
        An RGB image.
    """
    if ct.ndim != 3:
        raise ValueError(f"render_preview needs a 3D volume [z, y, x], got shape {ct.shape}")
    if labels is not None and labels.shape != ct.shape:
        raise ValueError(f"labels shape {labels.shape} differs from the scan's {ct.shape}")
    ct_c, meta_c = to_canonical(ct, meta)
    labels_c = to_canonical(labels, meta)[0] if labels is not None else None
    if organ_names is None:
        organ_names = {i + 1: name for i, name in enumerate(CORE_ORGANS)}
    present = [int(v) for v in np.unique(labels_c) if v > 0] if labels_c is not None else []
    colours = {i: organ_colour(i, organ_names.get(i)) for i in present}
    lo, hi, window_text = _window(ct_c)
    kz, ky, kx = _slice_centre(ct_c.shape, labels_c)
    dx, dy, dz = meta_c.spacing

    def cut(volume: np.ndarray | None, view: str) -> np.ndarray | None:
        if volume is None:
            return None
        if view == "axial":
            return volume[kz]  # rows anterior -> posterior, columns right -> left
        if view == "coronal":
            return volume[::-1, ky, :]  # rows superior -> inferior, columns right -> left
        return volume[::-1, :, kx]  # rows superior -> inferior, columns anterior -> posterior

    views = [
        ("axial", (dy, dx), "RLAP", f"axial {kz + 1}/{ct_c.shape[0]}"),
        ("coronal", (dz, dx), "RLSI", f"coronal {ky + 1}/{ct_c.shape[1]}"),
        ("sagittal", (dz, dy), "APSI", f"sagittal {kx + 1}/{ct_c.shape[2]}"),
    ]
    panels = [
        (
            _panel(cut(ct_c, v), cut(labels_c, v), mm, (lo, hi), colours, PANEL_HEIGHT),
            marks,
            caption,
        )
        for v, mm, marks, caption in views
    ]
    gap, margin, header, column = GAP, MARGIN, HEADER, 170
    width = sum(p.width for p, _, _ in panels) + gap * (len(panels) - 1) + 2 * margin
    width = max(width, 560)
    columns = max(1, (width - 2 * margin) // column)
    legend_rows = -(-len(present) // columns)
    footer = 26 + 20 * legend_rows
    height = header + PANEL_HEIGHT + footer
    canvas = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    draw.text((margin, 6), title or "CT preview", fill=_ACCENT if title else _TEXT, font=_font(16))
    shape_text = " x ".join(str(n) for n in ct.shape[::-1])
    spacing_text = " x ".join(f"{s:.3g}" for s in meta.spacing)
    draw.text(
        (margin, 27),
        f"{shape_text} voxels, {spacing_text} mm ({meta.orientation} on disk), {window_text}",
        fill=_TEXT,
        font=_font(12),
    )
    x = margin
    for panel, marks, caption in panels:
        canvas.paste(panel, (x, header))
        _letters(draw, (x, header, x + panel.width, header + panel.height), marks)
        draw.text((x + 2, header + panel.height + 4), caption, fill=_TEXT, font=_font(12))
        x += panel.width + gap
    y = header + PANEL_HEIGHT + 24
    for n, label_id in enumerate(present):
        lx = margin + (n % columns) * column
        ly = y + (n // columns) * 20
        draw.rectangle((lx, ly + 2, lx + 12, ly + 14), fill=colours[label_id])
        name = organ_names.get(label_id, f"label {label_id}")
        if len(name) > 20:  # keep to the legend's column
            name = name[:19] + "~"
        draw.text((lx + 18, ly), f"{label_id} {name}", fill=_TEXT, font=_font(12))
    return canvas


# --------------------------------------------------------------------------- files
def _dataset_json(*paths: Path | None) -> dict | None:
    """The ``dataset.json`` of the dataset a scan or label file belongs to, if any: in the
    file's folder, or one up when the folder is an MSD ``imagesTr``/``labelsTr``/``imagesTs``."""
    for path in paths:
        if path is None:
            continue
        folders = [path.parent]
        if path.parent.name in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            folders.append(path.parent.parent)
        for folder in folders:
            candidate = folder / "dataset.json"
            if candidate.is_file():
                try:
                    data = json.loads(candidate.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    return None
                return data if isinstance(data, dict) else None
    return None


def label_names(labels_path: Path, scan: Path | None, meta: ImageMeta) -> dict[int, str]:
    """Names for a label map's ids, from the first of: the ``labels`` of the MSD
    ``dataset.json`` the file belongs to, a ``labels.json`` beside it (``{"1": "spleen"}``),
    the file's own segment names (``.seg.nrrd``), else :data:`CORE_ORGANS` order.

    Args:
        labels_path: the label map file.
        scan: its scan (its dataset.json is used when the label file has none).
        meta: the label map's meta (for segment names).
    """
    dataset = _dataset_json(labels_path, scan)
    if dataset and isinstance(dataset.get("labels"), dict):
        names = {}
        for name, value in dataset["labels"].items():
            if isinstance(value, int) and value > 0:
                names[value] = str(name)
        if names:
            return names
    side = labels_path.parent / "labels.json"
    if side.is_file():
        try:
            raw = json.loads(side.read_text(encoding="utf-8"))
            return {int(k): str(v) for k, v in raw.items() if str(k).isdigit() and int(k) > 0}
        except (OSError, ValueError):
            pass
    if meta.names:
        return meta.names
    return {i + 1: name for i, name in enumerate(CORE_ORGANS)}


def preview_title(scan: Path, labels: Path | None = None) -> str:
    """The preview's title: the scan's name, and SYNTHETIC first when its MSD dataset's
    ``dataset.json`` says ``"synthetic": true``."""
    dataset = _dataset_json(scan, labels)
    if dataset and dataset.get("synthetic"):
        species = dataset.get("species") or "phantom"
        return f"SYNTHETIC ({species}, not a real scan): {scan.name}"
    return scan.name


def save_preview_file(
    scan: Path,
    out: Path,
    labels: Path | None = None,
    organ_names: Mapping[int, str] | None = None,
    orientation: str | None = None,
    warnings: list[str] | None = None,
) -> Path:
    """Read a scan (and its label map), render :func:`render_preview`, write a PNG atomically.

    The title names the scan and says SYNTHETIC when the scan's MSD dataset (``dataset.json``
    beside ``imagesTr``/``labelsTr``) is marked ``"synthetic": true``.

    Args:
        scan: a CT file or DICOM folder.
        out: the PNG to write.
        labels: a label map on the scan's voxel grid, or None.
        organ_names: label id -> name for the legend (e.g. a model's organs); default: found
            by :func:`label_names`.
        orientation: override of the scan header's direction (``--orientation``): the views
            and their letters follow it, so a user can try codes until the head is up.
        warnings: when given, the posture warning (if any) is appended to it.

    Returns:
        ``out``.

    Raises:
        InputError: unreadable files, ``out`` not a ``.png``.
        GridMismatchError: the label map is not on the scan's grid.
    """
    scan, out = Path(scan), Path(out)
    if out.suffix.lower() != ".png":
        raise InputError(f"Cannot write the preview {out}: the file name must end in .png.")
    ct, header_meta = read_image(scan)
    meta = apply_orientation_override(header_meta, orientation, ct.shape)
    if warnings is not None:
        warning = posture_warning(ct, meta, str(scan))
        warnings += [warning] if warning else []
    label_array = None
    names = None
    if labels is not None:
        labels = Path(labels)
        label_array, label_meta = read_label(
            labels, reference=header_meta, reference_shape=ct.shape, reference_name=scan
        )
        names = dict(organ_names) if organ_names else label_names(labels, scan, label_meta)
    image = render_preview(ct, meta, label_array, names, title=preview_title(scan, labels))
    with atomic_path(out, suffix=".png") as tmp:
        image.save(tmp, format="PNG", optimize=True)
    return out
