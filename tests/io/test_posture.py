"""Orientation override and posture check: known content, SimpleITK's convention, real mice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from vetseg.cli import app
from vetseg.errors import InputError
from vetseg.io.image import ImageMeta, orientation_matrix, read_image, to_canonical, write_image
from vetseg.io.orientation import apply_orientation_override, check_posture, parse_orientation

IDENTITY = ImageMeta(spacing=(0.5, 0.7, 1.1), origin=(3.0, -2.0, 5.0))


def rod(shape: tuple[int, int, int], axis: int, value: float = 200.0) -> np.ndarray:
    """``[z, y, x]`` zeros with an ellipsoid whose long axis is numpy axis ``axis``."""
    grid = np.indices(shape).astype(float)
    radii = [s / 8 for s in shape]
    radii[axis] = shape[axis] * 0.45
    centres = [(s - 1) / 2 for s in shape]
    inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centres, radii, strict=True)) <= 1
    return np.where(inside, value, 0.0).astype(np.float32)


def test_override_pir_puts_known_content_where_the_letters_say() -> None:
    """PIR: array x runs to posterior, y to inferior, z to right (letters name where TO)."""
    array = np.zeros((4, 5, 6), dtype=np.int16)  # [z, y, x]
    array[0, 0, 5] = 1  # at the far end of x: most posterior
    array[0, 4, 0] = 2  # at the far end of y: most inferior
    array[3, 0, 0] = 3  # at the far end of z: most to the right
    meta = apply_orientation_override(IDENTITY, "pir", array.shape)
    np.testing.assert_array_equal(meta.direction_matrix, orientation_matrix("PIR"))
    assert meta.orientation == "PIR" and meta.spacing == IDENTITY.spacing
    # The volume's centre stays where the header put it.
    centre = [(s - 1) / 2 for s in array.shape]
    np.testing.assert_allclose(meta.index_to_physical(centre), IDENTITY.index_to_physical(centre))

    canonical, canonical_meta = to_canonical(array, meta)  # LPS: [z to S, y to P, x to L]
    assert canonical.shape == (5, 6, 4)  # slices along the old y, rows along x, columns along z
    assert np.argwhere(canonical == 1)[0][1] == 5  # posterior: the last row
    assert np.argwhere(canonical == 2)[0][0] == 0  # inferior: the first slice
    assert np.argwhere(canonical == 3)[0][2] == 0  # right: the first column (x runs to L)
    assert canonical_meta.spacing == (1.1, 0.5, 0.7)  # (x, y, z): old z, old x, old y


@pytest.mark.parametrize("code", ["PIR", "RSP", "LIA", "SAR"])
def test_override_agrees_with_simpleitk_dicomorient(code: str) -> None:
    """The same code given to SimpleITK's DICOMOrient's convention gives the same volume."""
    rng = np.random.default_rng(1)
    array = rng.integers(0, 100, size=(3, 4, 5)).astype(np.int16)
    meta = apply_orientation_override(IDENTITY, code, array.shape)
    image = sitk.GetImageFromArray(array)
    image.SetDirection(orientation_matrix(code).ravel().tolist())
    assert (
        sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection()) == code
    )
    expected = sitk.GetArrayFromImage(sitk.DICOMOrient(image, "LPS"))
    np.testing.assert_array_equal(to_canonical(array, meta)[0], expected)


def test_bad_codes_are_one_sentence() -> None:
    assert parse_orientation(None) is None and parse_orientation(" rsp ") == "RSP"
    for bad in ("XYZ", "LLS", "LP", "LPSA"):
        with pytest.raises(InputError, match="not an orientation code"):
            apply_orientation_override(IDENTITY, bad, (2, 2, 2))


@pytest.mark.parametrize("axis", [1, 2])
def test_posture_check_suggests_a_code_that_works(axis: int) -> None:
    shape = (20, 24, 28)
    array = rod(shape, axis)
    meta = ImageMeta(spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    check = check_posture(array, meta)
    assert check is not None and not check.ok and check.long_axis == axis
    # 1st to 99th percentile: a little under the ellipsoid's full length, far over its width.
    assert 0.8 * shape[axis] * 0.9 < check.long_axis_mm <= shape[axis] * 0.9
    message = check.message("scan.nii.gz")
    assert f"--orientation {check.suggestion}" in message and "head or a limb" in message
    fixed = apply_orientation_override(meta, check.suggestion, shape)
    after = check_posture(array, fixed)
    assert after is not None and after.ok and after.long_axis == 0
    # A proper rotation: left and right keep their sides.
    assert np.linalg.det(fixed.direction_matrix) == pytest.approx(np.linalg.det(np.eye(3)))


def test_posture_check_is_quiet_for_a_body_along_the_slices_or_a_ball() -> None:
    meta = ImageMeta(spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    along = check_posture(rod((30, 20, 20), 0), meta)
    assert along is not None and along.ok and along.message("x") == ""
    ball = np.zeros((20, 20, 20), dtype=np.float32)
    ball[np.sum((np.indices(ball.shape) - 9.5) ** 2, axis=0) < 49] = 100
    assert check_posture(ball, meta).ok  # type: ignore[union-attr]
    assert check_posture(np.zeros((4, 4, 4)), meta) is None  # nothing to measure


def test_an_oblique_body_is_said_to_be_beyond_any_code() -> None:
    z, y, x = (
        np.indices((40, 40, 20)).astype(float) - np.array([19.5, 19.5, 9.5])[:, None, None, None]
    )
    along = (z + y) / np.sqrt(2)  # 45 degrees between the slice and row axes
    across = (z - y) / np.sqrt(2)
    array = np.where((along / 18) ** 2 + (across / 4) ** 2 + (x / 4) ** 2 <= 1, 100.0, 0.0)
    meta = ImageMeta(spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    check = check_posture(array, meta)
    assert check is not None and check.oblique
    assert check.oblique_deg == pytest.approx(45, abs=3)
    assert "obliquely, 4" in check.message("s") and "only swaps and flips" in check.message("s")


def test_cli_info_and_preview_take_the_override(tmp_path: Path) -> None:
    scan = tmp_path / "rod.nii.gz"
    write_image(rod((16, 18, 30), 2), ImageMeta((1.0, 1.0, 1.0), (0.0, 0.0, 0.0)), scan)
    runner = CliRunner()
    result = runner.invoke(app, ["info", str(scan)])
    assert result.exit_code == 0, result.output
    # x and z swap letters, x reversed so that the rotation stays proper: IPL.
    assert "warning:" in result.stderr and "--orientation IPL" in result.stderr
    result = runner.invoke(app, ["info", str(scan), "--orientation", "IPL"])
    assert result.exit_code == 0 and "warning:" not in result.stderr
    assert "IPL (given by --orientation" in result.stdout
    result = runner.invoke(app, ["info", str(scan), "--orientation", "SPQ"])
    assert result.exit_code == 2 and "not an orientation code" in result.stderr
    pytest.importorskip("vetseg.viz.preview")
    result = runner.invoke(app, ["preview", str(scan), "--out", str(tmp_path / "p.png")])
    assert result.exit_code == 0 and "--orientation IPL" in result.stderr
    out = tmp_path / "q.png"
    result = runner.invoke(app, ["preview", str(scan), "--out", str(out), "--orientation", "IPL"])
    assert result.exit_code == 0 and "warning" not in result.stderr and out.stat().st_size > 0


# --------------------------------------------------------------------------- real mice
@pytest.fixture(scope="module")
def mouse(shared_data: Path) -> Path:
    folder = shared_data / "mouse"
    if not (folder / "heads").is_dir():
        pytest.skip(f"{folder} is absent")
    return folder


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["A_J_", "C3H_HEOUJ_"])
def test_mouse_heads_along_the_wrong_axis_are_flagged(mouse: Path, name: str) -> None:
    """Identity headers; these two heads' long axes lie nearest x and y (measured)."""
    array, meta = read_image(mouse / "heads" / f"{name}.nii.gz")
    assert meta.orientation == "LPS"  # the header says nothing about the animal
    check = check_posture(array, meta)
    assert check is not None and not check.ok
    assert 18 < check.long_axis_mm < 26  # a mouse skull is about 22 mm long
    after = check_posture(array, apply_orientation_override(meta, check.suggestion, array.shape))
    assert after is not None and after.ok
    # These heads also lie 35-45 degrees off every array axis: said, with what would help.
    assert (
        after.oblique and "obliquely" in after.message(name) and "resample" in after.message(name)
    )


@pytest.mark.realdata
def test_a_mouse_head_along_the_slices_is_not_flagged(mouse: Path) -> None:
    array, meta = read_image(mouse / "heads" / "AKR_J_.nii.gz")
    check = check_posture(array, meta)
    assert check is not None and check.ok and check.tilt_deg < 30
    assert not check.oblique and check.message("AKR_J") == ""


@pytest.mark.realdata
def test_template_long_axis_and_the_code_that_fits_its_anatomy(mouse: Path) -> None:
    """The template's header (RAS) puts its 29 mm y axis anterior; it is the long axis."""
    array, meta = read_image(mouse / "template" / "template_ct.nii.gz")
    check = check_posture(array, meta)
    assert check is not None and check.long_axis == 1 and check.suggestion == "RIA"
    # RSP (read off the preview) also puts the nose up and the mandibles ventral (anterior):
    labels, _ = read_image(mouse / "template" / "template_seg.nii.gz")
    posed = apply_orientation_override(meta, "RSP", array.shape)
    assert check_posture(array, posed).ok  # type: ignore[union-attr]
    canonical, _ = to_canonical(labels, posed)  # [z to S, y to P, x to L]
    right, left, brain = (np.argwhere(canonical == i).mean(axis=0) for i in (2, 21, 15))
    assert right[2] < left[2]  # the right mandible on the right
    assert right[1] < brain[1]  # mandibles ventral (anterior) to the brain
    assert right[0] > brain[0]  # and rostral (the nose up, superior)


@pytest.mark.realdata
def test_digimouse_atlas_header_is_right_and_a_lost_header_is_caught(mouse: Path) -> None:
    path = mouse / "digimouse" / "labels.nii.gz"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    labels, meta = read_image(path)
    check = check_posture(labels, meta, threshold=0)
    assert check is not None and check.ok and check.long_axis_mm > 60  # a whole mouse
    lost = apply_orientation_override(meta, "LPS", labels.shape)  # an identity header
    wrong = check_posture(labels, lost, threshold=0)
    assert wrong is not None and wrong.long_axis == 1 and wrong.suggestion is not None
    fixed = apply_orientation_override(meta, wrong.suggestion, labels.shape)
    assert check_posture(labels, fixed, threshold=0).ok  # type: ignore[union-attr]


def test_a_trunk_cut_at_both_ends_of_the_slice_axis_is_not_flagged() -> None:
    """Clinical CT covers less length than width: the body runs on beyond both end slices."""
    meta = ImageMeta(spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    z, y, x = np.indices((20, 40, 60)).astype(float)
    trunk = np.where(((y - 19.5) / 15) ** 2 + ((x - 29.5) / 27) ** 2 <= 1, 50.0, -1000.0)
    check = check_posture(trunk, meta)
    assert check is not None and check.cut_through and check.ok and check.message("ct") == ""
    # The same cross-section rolled off at both ends is a body that fits: flagged.
    fits = trunk.copy()
    fits[:3] = fits[-3:] = -1000.0
    flagged = check_posture(fits, meta)
    assert flagged is not None and not flagged.cut_through and not flagged.ok


@pytest.mark.realdata
@pytest.mark.parametrize(
    "scan",
    [
        "totalseg_example/ct_first30.nii.gz",
        "totalseg_example/dicom_series",
        "hcc_tace_009/contrast_3phase",
        "hcc_tace_009/precontrast",
    ],
)
def test_real_human_ct_is_not_flagged(shared_data: Path, scan: str) -> None:
    """Partial trunk scans, correct headers: wider than long, and no false warning."""
    path = shared_data / "human" / scan
    if not path.exists():
        pytest.skip(f"{path} is absent")
    array, meta = read_image(path)
    check = check_posture(array, meta)
    assert check is not None and check.cut_through and check.message(scan) == ""
    assert max(check.extents_mm[1:]) > check.extents_mm[0]  # the trap: wider than long
