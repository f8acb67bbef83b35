"""``vetseg info`` on good and bad input: bad input is exit 2 and one sentence, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from vetseg.cli import app
from vetseg.errors import GridMismatchError
from vetseg.io.image import ImageMeta, read_image, read_label, write_image

META = ImageMeta((0.8, 0.8, 2.0), (10.0, -20.0, 30.0))


def noisy_volume(shape: tuple[int, int, int] = (8, 32, 32)) -> np.ndarray:
    # Noise compresses badly, so half of the .nii.gz file really is half of the data.
    return np.random.default_rng(0).integers(-1000, 1000, size=shape).astype(np.int16)


def run_info(path: Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["info", str(path)])
    return result.exit_code, result.stdout, result.stderr


def assert_one_sentence_error(path: Path, words: str) -> None:
    code, out, err = run_info(path)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("error: ")  # a single line
    assert path.name in err and words in err
    assert "Traceback" not in err


def test_info_on_a_label_map(tmp_path: Path) -> None:
    labels = np.zeros((6, 10, 12), dtype=np.uint8)
    labels[1:5, 2:8, 3:9] = 1
    labels[2:4, 4:6, 4:6] = 2
    code, out, err = run_info(write_image(labels, META, tmp_path / "seg.nii.gz"))
    assert code == 0 and err == ""
    assert "label map" in out and "liver" in out and "spleen" in out
    assert "0.8 x 0.8 x 2 mm" in out


def test_missing_file(tmp_path: Path) -> None:
    assert_one_sentence_error(tmp_path / "nothere.nii.gz", "no such file")


def test_unknown_format(tmp_path: Path) -> None:
    path = tmp_path / "scan.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0 not a CT")
    assert_one_sentence_error(path, "unknown file type")


def test_truncated_nifti(tmp_path: Path) -> None:
    path = write_image(noisy_volume(), META, tmp_path / "ct.nii.gz")
    data = path.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(data[: len(data) // 2])
    # ITK alone would read this file and fill the missing half with zeros.
    assert_one_sentence_error(cut, "truncated")


def test_truncated_uncompressed_nifti(tmp_path: Path) -> None:
    path = write_image(noisy_volume(), META, tmp_path / "ct.nii")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert_one_sentence_error(path, "truncated")


def test_corrupt_bytes(tmp_path: Path) -> None:
    path = tmp_path / "scan.nrrd"
    path.write_bytes(np.random.default_rng(1).bytes(4000))
    assert_one_sentence_error(path, "corrupt")


def test_2d_image(tmp_path: Path) -> None:
    path = tmp_path / "slice.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(noisy_volume()[0]), str(path))
    assert_one_sentence_error(path, "2D image")


def test_4d_image(tmp_path: Path) -> None:
    path = tmp_path / "perfusion.nii.gz"
    image = sitk.JoinSeries([sitk.GetImageFromArray(noisy_volume((4, 6, 6)))] * 3)
    sitk.WriteImage(image, str(path))
    assert_one_sentence_error(path, "4D image")
    array, meta = read_image(path, expect_3d=False)  # asked for, a 4D image is fine
    assert array.shape == (3, 4, 6, 6) and len(meta.spacing) == 3


def test_image_and_label_on_different_grids(tmp_path: Path) -> None:
    image_path = write_image(noisy_volume(), META, tmp_path / "case7.nii.gz")
    shifted = ImageMeta(META.spacing, (10.0, -20.0, 36.0))
    label_path = write_image(np.ones((8, 32, 32), np.uint8), shifted, tmp_path / "case7_seg.nrrd")
    image, meta = read_image(image_path)
    with pytest.raises(GridMismatchError) as caught:
        read_label(label_path, reference=meta, reference_shape=image.shape)
    message = str(caught.value)
    assert "case7.nii.gz" in message and "case7_seg.nrrd" in message
    assert "origins" in message and "\n" not in message


def test_native_library_chatter_stays_off_the_terminal(tmp_path: Path) -> None:
    """MetaIO prints its own complaint on a truncated .mha to fd 2; the user sees one line."""
    path = write_image(noisy_volume(), META, tmp_path / "ct.mha")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "-m", "vetseg.cli", "info", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "ct.mha" in done.stderr
    assert "M_ReadElementsData" not in done.stderr and "Traceback" not in done.stderr
