"""PNG previews: physical proportions, orientation, overlay colours, titles and file handling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vetseg.errors import GridMismatchError, InputError
from vetseg.io.image import ImageMeta, orientation_matrix, read_label, write_image
from vetseg.viz.preview import (
    GAP,
    HEADER,
    MARGIN,
    PANEL_HEIGHT,
    label_names,
    preview_title,
    render_preview,
    save_preview_file,
)

# x 1 mm, y 2 mm, z 4 mm: a volume 30 x 40 x 40 mm (x, y, z) on a 30 x 20 x 10 grid.
META = ImageMeta((1.0, 2.0, 4.0), (-15.0, -20.0, 100.0))
SHAPE = (10, 20, 30)


def volume() -> tuple[np.ndarray, np.ndarray]:
    """Soft tissue with a bright block on the patient's left-anterior-superior side, labelled."""
    ct = np.full(SHAPE, 40, dtype=np.int16)
    ct[:, :, :2] = -1000
    ct[6:9, 2:8, 18:27] = 400  # superior, anterior, left (high x)
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[6:9, 2:8, 18:27] = 3
    return ct, labels


def panel_boxes() -> list[tuple[int, int]]:
    """(left, right) pixel columns of the axial, coronal and sagittal panels of ``volume()``."""
    widths = [round(PANEL_HEIGHT * 30 / 40)] * 2 + [round(PANEL_HEIGHT * 40 / 40)]
    boxes, x = [], MARGIN
    for w in widths:
        boxes.append((x, x + w))
        x += w + GAP
    return boxes


def panels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)[HEADER : HEADER + PANEL_HEIGHT]


def test_panels_keep_physical_proportions() -> None:
    ct, labels = volume()
    image = render_preview(ct, META, labels, None, title="t")
    right = panel_boxes()[-1][1]
    assert image.size[0] == right + MARGIN
    # The panel strip holds no background colour between a panel's edges.
    strip = panels(image)
    for left, right in panel_boxes():
        assert (strip[:, left:right].max(axis=2) > 20).mean() > 0.5


def test_overlay_is_coloured_where_the_labels_are() -> None:
    ct, labels = volume()
    with_labels = panels(render_preview(ct, META, labels, {3: "kidney_left"}))
    without = panels(render_preview(ct, META, None, None))
    left, right = panel_boxes()[0]
    axial = with_labels[:, left:right]
    colourful = (axial.max(axis=2) - axial.min(axis=2)) > 40
    assert colourful.mean() > 0.02  # the labelled block is tinted
    plain = without[25:-25, left + 25 : right - 25]  # inside the orientation letters
    assert np.array_equal(plain[..., 0], plain[..., 1])  # grey CT only
    assert np.array_equal(plain[..., 1], plain[..., 2])


def test_radiological_orientation_whatever_the_order_on_disk() -> None:
    ct, labels = volume()
    lps = render_preview(ct, META, labels, None)
    # The same voxels stored with x and y reversed (RAS), as many NIfTI files are.
    ras_meta = ImageMeta(
        META.spacing,
        (META.origin[0] + 29.0, META.origin[1] + 38.0, META.origin[2]),
        tuple(orientation_matrix("RAS").ravel()),
    )
    ras = render_preview(
        np.ascontiguousarray(ct[:, ::-1, ::-1]),
        ras_meta,
        np.ascontiguousarray(labels[:, ::-1, ::-1]),
        None,
    )
    assert np.array_equal(panels(lps), panels(ras))

    strip = panels(lps).max(axis=2)
    strip[:25], strip[-25:] = 0, 0  # hide the orientation letters at the panels' edges
    (a0, a1), (c0, c1), _ = panel_boxes()
    axial, coronal = strip[:, a0 + 25 : a1 - 25] > 200, strip[:, c0 + 25 : c1 - 25] > 200
    cols, rows = np.nonzero(axial.any(axis=0))[0], np.nonzero(axial.any(axis=1))[0]
    assert cols.mean() > axial.shape[1] / 2  # patient's left on the image's right
    assert rows.mean() < axial.shape[0] / 2  # anterior at the top
    assert np.nonzero(coronal.any(axis=1))[0].mean() < coronal.shape[0] / 2  # head at the top


def test_save_preview_file_with_dataset_names_and_synthetic_title(tmp_path: Path) -> None:
    ct, labels = volume()
    root = tmp_path / "ds"
    scan = write_image(ct, META, root / "imagesTr" / "case_0000.nii.gz")
    label_file = write_image(labels, META, root / "labelsTr" / "case.nii.gz")
    (root / "dataset.json").write_text(
        json.dumps({"labels": {"background": 0, "kidney_left": 3}, "synthetic": True})
    )
    out = save_preview_file(scan, tmp_path / "p.png", labels=label_file)
    assert out == tmp_path / "p.png" and out.stat().st_size > 1000
    with Image.open(out) as png:
        assert png.format == "PNG" and png.size[0] == panel_boxes()[-1][1] + MARGIN
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file
    assert preview_title(scan, label_file).startswith("SYNTHETIC")
    assert label_names(label_file, scan, read_label(label_file)[1]) == {3: "kidney_left"}


def test_names_from_labels_json_and_plain_title(tmp_path: Path) -> None:
    ct, labels = volume()
    scan = write_image(ct, META, tmp_path / "ct.nii.gz")
    label_file = write_image(labels, META, tmp_path / "seg.nii.gz")
    assert preview_title(scan, label_file) == "ct.nii.gz"
    meta = read_label(label_file)[1]
    assert label_names(label_file, scan, meta)[3] == "kidney_left"  # CORE_ORGANS order
    (tmp_path / "labels.json").write_text(json.dumps({"3": "kidney_right"}))
    assert label_names(label_file, scan, meta) == {3: "kidney_right"}


def test_label_map_on_another_grid_is_refused(tmp_path: Path) -> None:
    ct, labels = volume()
    scan = write_image(ct, META, tmp_path / "ct.nii.gz")
    moved = ImageMeta(META.spacing, (0.0, 0.0, 0.0))
    label_file = write_image(labels, moved, tmp_path / "seg.nii.gz")
    with pytest.raises(GridMismatchError, match="not on the same voxel grid"):
        save_preview_file(scan, tmp_path / "p.png", labels=label_file)
    with pytest.raises(InputError, match=r"\.png"):
        save_preview_file(scan, tmp_path / "p.jpg")
    assert not (tmp_path / "p.png").exists() and not (tmp_path / "p.jpg").exists()


def test_non_hu_images_get_a_percentile_window() -> None:
    ct = np.random.default_rng(0).integers(0, 256, size=SHAPE).astype(np.uint8)
    strip = panels(render_preview(ct, META, None, None))
    left, right = panel_boxes()[0]
    grey = strip[:, left:right, 0]
    assert grey.std() > 20  # not all white, as a -160..240 window would make it
