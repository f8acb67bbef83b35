"""Scans in the wrong units: a HU model given raw scanner values is refused, with the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.inference.conftest import ramp_volume
from vetseg.cli import app
from vetseg.errors import InputError
from vetseg.io.image import ImageMeta, read_image, write_image
from vetseg.io.units import ScanUnits, expects_hu, units_problem

HU = (-1000.0, 1000.0)
META = ImageMeta((0.8, 0.8, 2.0), (0.0, 0.0, 0.0))


def raw_values(volume: np.ndarray) -> np.ndarray:
    """What a file that skips the DICOM rescale stores: HU + 1024, unsigned."""
    return (volume.astype(np.int32) + 1024).clip(0, 4095).astype(np.uint16)


def test_a_hu_model_needs_air_and_other_models_are_not_checked() -> None:
    scan = ramp_volume((3, 16, 16))  # HU, air in one voxel per slice
    assert units_problem(scan, HU) is None
    problem = units_problem(raw_values(scan), HU)
    assert problem is not None
    assert f"lowest value is {int(raw_values(scan).min())}" in problem
    assert "--rescale-intercept" in problem and "-1024" in problem
    assert "--skip-units-check" in problem
    # A soft-tissue crop in HU has no air either: the same refusal, with its way out.
    assert units_problem(np.full((2, 8, 8), 40, np.int16), HU) is not None
    # 8-bit micro-CT models (window 0..255): no claim about their scans' units.
    assert not expects_hu((0.0, 255.0)) and expects_hu((-1024.0, 3071.0))
    assert units_problem(raw_values(scan), (0.0, 255.0)) is None
    # One voxel of air anywhere is enough.
    one = np.full((2, 8, 8), 40, np.int16)
    one[1, 7, 7] = -1000
    assert units_problem(one, HU) is None


def test_the_intercept_turns_raw_values_back_into_hu() -> None:
    scan = ramp_volume((3, 16, 16))
    fixed = ScanUnits(rescale_intercept=-1024.0).apply(raw_values(scan), HU, "scan")
    assert fixed.dtype == np.float32
    np.testing.assert_array_equal(fixed, scan.astype(np.float32))
    with pytest.raises(InputError, match="scan: its lowest value is 24,"):
        ScanUnits().apply(raw_values(scan), HU, "scan")
    kept = ScanUnits(check=False).apply(raw_values(scan), HU, "scan")
    assert kept.dtype == np.uint16  # unchanged: no intercept
    with pytest.raises(InputError, match="must be a number"):
        ScanUnits(rescale_intercept=float("nan"))


def run(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def test_segment_refuses_raw_values_and_the_intercept_gives_the_hu_answer(
    random_model_dir: Path, tmp_path: Path
) -> None:
    hu = ramp_volume((4, 24, 20))
    hu_scan = write_image(hu, META, tmp_path / "hu.nii.gz")
    raw_scan = write_image(raw_values(hu), META, tmp_path / "raw.nii.gz")
    code, _, err = run("segment", random_model_dir, hu_scan, "--out", tmp_path / "hu_seg.nii.gz")
    assert code == 0, err

    refused = tmp_path / "refused.nii.gz"
    code, _, err = run("segment", random_model_dir, raw_scan, "--out", refused)
    assert (
        code == 2
        and "lowest value is 24," in err
        and "--rescale-intercept" in " ".join(err.split())
    )
    assert not refused.exists()  # nothing written

    fixed = tmp_path / "fixed.nii.gz"
    code, _, err = run(
        "segment", random_model_dir, raw_scan, "--out", fixed, "--rescale-intercept", "-1024"
    )
    assert code == 0, err
    np.testing.assert_array_equal(read_image(fixed)[0], read_image(tmp_path / "hu_seg.nii.gz")[0])

    code, _, err = run(
        "segment", random_model_dir, raw_scan, "--out", tmp_path / "s.nii.gz", "--skip-units-check"
    )
    assert code == 0, err and (tmp_path / "s.nii.gz").is_file()


def test_a_folder_reports_the_raw_scan_and_segments_the_rest(
    random_model_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "scans"
    hu = ramp_volume((3, 20, 20))
    write_image(hu, META, folder / "good.nii.gz")
    write_image(raw_values(hu), META, folder / "raw.nii.gz")
    out = tmp_path / "out"
    code, stdout, err = run("segment", random_model_dir, folder, "--out", out)
    assert code == 1, err
    assert (out / "good.nii.gz").is_file() and not (out / "raw.nii.gz").exists()
    assert "lowest value is 24," in " ".join(stdout.split())
