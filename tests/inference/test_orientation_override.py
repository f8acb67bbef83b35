"""`vetseg segment --orientation`: the model sees the override, files keep the header."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from vetseg.cli import app
from vetseg.inference.pipeline import SegmentOutputs, segment_scan
from vetseg.inference.segmenter import Segmenter
from vetseg.io.image import ImageMeta, read_image, read_label, write_image
from vetseg.io.orientation import apply_orientation_override

HEADER = ImageMeta(spacing=(2.0, 2.0, 2.0), origin=(-30.0, 10.0, 4.0))


def body_along_x(shape: tuple[int, int, int] = (10, 12, 36)) -> np.ndarray:
    """int16 HU: air, and a body (soft tissue with a bright and a dark part) along array x."""
    rng = np.random.default_rng(4)
    volume = np.full(shape, -1000.0) + rng.normal(0, 10, shape)
    z, y, x = np.indices(shape)
    body = ((z - 4.5) / 4) ** 2 + ((y - 5.5) / 5) ** 2 <= 1
    body &= (x > 1) & (x < shape[2] - 2)
    volume[body] = 40 + rng.normal(0, 10, int(body.sum()))
    volume[body & (x < shape[2] // 3)] += 300
    return volume.astype(np.int16)


def test_segment_uses_the_override_and_writes_on_the_header_grid(
    intensity_segmenter: Segmenter, tmp_path: Path
) -> None:
    scan = tmp_path / "scan.nii.gz"
    volume = body_along_x()
    write_image(volume, HEADER, scan)

    plain = segment_scan(intensity_segmenter, scan, SegmentOutputs(labels=tmp_path / "a.nii.gz"))
    assert len(plain.warnings) == 1 and "--orientation IPL" in plain.warnings[0]

    outputs = SegmentOutputs(labels=tmp_path / "b.nii.gz", preview=tmp_path / "b.png")
    posed = segment_scan(intensity_segmenter, scan, outputs, orientation="IPL")
    assert posed.warnings == []  # the body now runs across the slices
    labels, label_meta = read_label(tmp_path / "b.nii.gz")
    assert label_meta == HEADER  # the label map lies on the user's scan as the header says
    expected = intensity_segmenter.predict(
        volume, apply_orientation_override(HEADER, "IPL", volume.shape)
    ).labels
    np.testing.assert_array_equal(labels, expected)
    without, _ = read_label(tmp_path / "a.nii.gz")
    assert not np.array_equal(labels, without)  # the model did see other slices
    assert read_image(scan)[1] == HEADER  # the scan itself is untouched


def test_cli_segment_orientation(model_dir: Path, tmp_path: Path) -> None:
    scan = tmp_path / "scan.nii.gz"
    write_image(body_along_x(), HEADER, scan)
    runner = CliRunner()
    out = tmp_path / "seg.nii.gz"
    result = runner.invoke(app, ["segment", str(model_dir), str(scan), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stderr and "--orientation IPL" in result.stderr
    args = ["segment", str(model_dir), str(scan), "--out", str(out), "--orientation", "IPL"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and "warning" not in result.stderr
    bad = tmp_path / "bad.nii.gz"
    args = ["segment", str(model_dir), str(scan), "--out", str(bad), "--orientation", "up"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "not an orientation code" in result.stderr
    assert not bad.exists()
