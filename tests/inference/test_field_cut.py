"""A body cut by the scanner's field of view: counted per slice, and ``vetseg segment`` warns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.inference.test_cli_segment import run
from vetseg.config import PreprocessConfig
from vetseg.data.preprocess import slices_cut_by_field
from vetseg.inference.pipeline import field_cut_warning
from vetseg.io.image import ImageMeta, write_image

HU = PreprocessConfig(size=32)


def _patient(shape: tuple[int, int] = (100, 120), slices: int = 3) -> np.ndarray:
    """Air with a trunk (an ellipse of soft tissue, 80 x 60 px) in the middle."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    cy, cx = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    trunk = ((yy - cy) / 30) ** 2 + ((xx - cx) / 40) ** 2 <= 1
    image = np.where(trunk, 40.0, -1000.0).astype(np.float32)
    return np.repeat(image[None], slices, axis=0)


def test_a_trunk_inside_the_field_is_not_cut_and_one_cut_at_the_sides_is() -> None:
    volume = _patient()
    assert slices_cut_by_field(volume, HU) == 0
    cut = volume[:, :, 30:90]  # a field 60 px wide: the trunk's sides are cut away
    assert slices_cut_by_field(cut, HU) == 3
    assert slices_cut_by_field(cut[:, 20:, :], HU) == 3  # and at the back too


def test_arms_cut_by_the_field_do_not_count() -> None:
    volume = _patient()
    volume[:, 45:55, 0:8] = 30.0  # an arm beside the trunk, cut by the field's left edge
    volume[:, 45:55, 112:] = 30.0
    assert slices_cut_by_field(volume, HU) == 0


@pytest.mark.parametrize(("padding", "counted"), [(-3024.0, 3), (-2048.0, 3), (-1024.0, 0)])
def test_a_reconstruction_circle_cutting_the_trunk(padding: float, counted: int) -> None:
    """Outside the scanner's circle the file holds padding: a trunk cut by the circle is cut,
    unless the padding reads as air (-1024), which cannot be told apart from air."""
    volume = _patient()
    yy, xx = np.mgrid[:100, :120]
    outside = (yy - 49.5) ** 2 + (xx - 59.5) ** 2 > 35**2  # radius 35 px < the trunk's 40
    volume[:, outside] = padding
    assert slices_cut_by_field(volume, HU) == counted


def test_a_model_not_in_hu_is_not_checked() -> None:
    """8-bit micro-CT: air has no known value there, so nothing is counted, cut or not."""
    eight_bit = PreprocessConfig(size=32, window=(0.0, 255.0))
    volume = np.where(_patient() > 0, 120.0, 5.0).astype(np.float32)
    assert slices_cut_by_field(volume[:, :, 30:90], eight_bit) == 0
    assert slices_cut_by_field(_patient()[:, :, 30:90], HU) == 3


def test_the_warning_starts_at_a_tenth_of_the_slices() -> None:
    assert field_cut_warning(0, 50, "scan") == ""
    assert field_cut_warning(4, 50, "scan") == ""
    message = field_cut_warning(5, 50, "scan.nii.gz")
    assert message.startswith("scan.nii.gz: the body reaches the edge of the scanner's field")
    assert "on 5 of 50 slices" in message


def test_segment_warns_for_a_cut_scan_only(random_model_dir: Path, tmp_path: Path) -> None:
    meta = ImageMeta((0.8, 0.8, 2.0), (0.0, 0.0, 0.0))
    whole = write_image(_patient(), meta, tmp_path / "whole.nii.gz")
    cut = write_image(np.ascontiguousarray(_patient()[:, :, 30:90]), meta, tmp_path / "cut.nii.gz")
    code, _, stderr = run("segment", random_model_dir, whole, "--out", tmp_path / "w.nii.gz")
    assert code == 0, stderr
    assert "field of view" not in stderr
    report = tmp_path / "c_report"
    args = ["--out", tmp_path / "c.nii.gz", "--report", report]
    code, _, stderr = run("segment", random_model_dir, cut, *args)
    assert code == 0, stderr
    assert "warning:" in stderr and "reaches the edge of the scanner's field of view" in stderr
    assert (tmp_path / "c.nii.gz").exists()  # a warning, not a refusal
    warnings = json.loads((tmp_path / "c_report.json").read_text())["warnings"]
    assert len(warnings) == 1 and "on 3 of 3 slices" in warnings[0]
