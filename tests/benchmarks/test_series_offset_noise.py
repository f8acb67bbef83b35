"""benchmarks/series_offset_noise.py: the copies move only the origin; the summary's spread."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import series_offset_noise  # noqa: E402

from vetseg.io.image import ImageMeta, read_image, write_image  # noqa: E402


def test_copies_move_the_origin_by_fractions_of_a_pixel_and_nothing_else(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    image = np.arange(2 * 6 * 5, dtype=np.int16).reshape(2, 6, 5) - 1000
    labels = (image % 3).astype(np.uint8)
    meta = ImageMeta(spacing=(0.8, 0.6, 2.0), origin=(10.0, -4.0, 1.0))
    write_image(image, meta, base / "dicom_series.nii.gz")
    write_image(labels, meta, base / "dicom_series_seg.nii.gz")
    (base / "labels.json").write_text(json.dumps({"1": "liver", "2": "spleen"}))
    folders = series_offset_noise.shifted_copies(base, tmp_path / "copies")
    assert len(folders) == len(series_offset_noise.OFFSETS) == 6
    for folder, (dx, dy) in zip(folders, series_offset_noise.OFFSETS, strict=True):
        moved, moved_meta = read_image(folder / "dicom_series.nii.gz")
        seg, seg_meta = read_image(folder / "dicom_series_seg.nii.gz")
        assert np.array_equal(moved, image) and np.array_equal(seg, labels)
        assert moved_meta.origin == pytest.approx((10.0 + 0.8 * dx, -4.0 + 0.6 * dy, 1.0))
        assert seg_meta.origin == pytest.approx(moved_meta.origin)
        assert json.loads((folder / "labels.json").read_text())["1"] == "liver"


def test_summary_keeps_organs_scored_on_every_copy() -> None:
    rows = [{"liver": 0.9, "spleen": 0.5}, {"liver": 0.8}, {"liver": 0.7, "spleen": 0.6}]
    summary = series_offset_noise.summary(rows)
    assert list(summary) == ["liver"]
    assert summary["liver"] == {"mean": 0.8, "min": 0.7, "max": 0.9, "sd": 0.1}
