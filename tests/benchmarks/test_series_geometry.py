"""benchmarks/series_geometry.py: the copies change the grid, keep the patient and the label ids."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import series_geometry  # noqa: E402

from vetseg.io.image import ImageMeta, read_image, write_image  # noqa: E402


def _series(base: Path) -> tuple[np.ndarray, ImageMeta]:
    base.mkdir()
    image = np.full((2, 20, 20), -1000, dtype=np.int16)
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[:, 0:4, 0:4] = 1  # cut away by a centred 10 mm field
    labels[:, 8:12, 9:13] = 7  # kept whole
    image[labels > 0] = 50
    meta = ImageMeta(spacing=(1.0, 1.0, 2.0), origin=(-10.0, -10.0, 0.0))
    write_image(image, meta, base / "dicom_series.nii.gz")
    write_image(labels, meta, base / "dicom_series_seg.nii.gz")
    (base / "labels.json").write_text(json.dumps({"1": "liver", "7": "spleen"}))
    return labels, meta


def test_finer_pixels_and_a_cut_field_keep_ids_volumes_and_the_patients_place(
    tmp_path: Path,
) -> None:
    labels, meta = _series(tmp_path / "base")
    grid = series_geometry.geometry_copy(tmp_path / "base", tmp_path / "copy", 0.5, 10.0)
    seg, seg_meta = read_image(tmp_path / "copy" / "dicom_series_seg.nii.gz")
    image, image_meta = read_image(tmp_path / "copy" / "dicom_series.nii.gz")
    assert seg.shape == image.shape == (2, 20, 20)
    assert grid == {"shape": [2, 20, 20], "spacing_mm": [0.5, 0.5, 2.0], "field_mm": 10.0}
    assert seg_meta.spacing == pytest.approx((0.5, 0.5, 2.0))
    assert seg_meta.origin == pytest.approx(image_meta.origin)
    # label ids survive (not turned into a 0/1 mask); the organ outside the field is gone
    assert set(np.unique(seg)) == {0, 7}
    # the kept organ has the same volume (16 mm^2 per slice) and the same place in the patient
    assert (seg == 7).sum() * 0.25 == pytest.approx((labels == 7).sum() * 1.0)
    rows, cols = np.nonzero(seg[0] == 7)
    x = seg_meta.origin[0] + cols.mean() * 0.5
    y = seg_meta.origin[1] + rows.mean() * 0.5
    assert (x, y) == pytest.approx((-10.0 + 10.5, -10.0 + 9.5))
    assert np.median(image[seg == 7]) == pytest.approx(50.0)  # the image moved with it


def test_no_change_writes_the_series_as_it_was(tmp_path: Path) -> None:
    labels, meta = _series(tmp_path / "base")
    grid = series_geometry.geometry_copy(tmp_path / "base", tmp_path / "copy", None, None)
    seg, seg_meta = read_image(tmp_path / "copy" / "dicom_series_seg.nii.gz")
    assert np.array_equal(seg, labels) and seg_meta.origin == pytest.approx(meta.origin)
    assert grid["field_mm"] == 20.0
    assert json.loads((tmp_path / "copy" / "labels.json").read_text())["7"] == "spleen"
