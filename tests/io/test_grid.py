"""check_same_grid and read_label(reference=...): same voxels or a one-sentence error."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.io.helpers import OBLIQUE, make_meta
from vetseg.errors import GridMismatchError
from vetseg.io.image import ImageMeta, check_same_grid, read_label, write_image


def test_same_grid_within_float32_rounding() -> None:
    meta = make_meta()
    rounded = ImageMeta(
        spacing=tuple(np.float32(meta.spacing)),
        origin=tuple(np.float32(meta.origin)),
        direction=tuple(np.float32(meta.direction)),
    )
    check_same_grid((5, 7, 9), meta, (5, 7, 9), rounded, "ct.nii.gz", "seg.nii.gz")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"shape": (5, 7, 8)}, "sizes 9 x 7 x 5 and 8 x 7 x 5"),
        ({"spacing": (0.7, 1.3, 2.6)}, "spacings"),
        ({"origin": (-10.5, 20.25, 33.5)}, "origins"),
        ({"direction": (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)}, "orientations"),
    ],
)
def test_grid_mismatch_names_both_files(change: dict, words: str) -> None:
    meta = make_meta()
    shape = change.pop("shape", (5, 7, 9))
    other = replace(meta, **change)
    with pytest.raises(GridMismatchError) as caught:
        check_same_grid((5, 7, 9), meta, shape, other, "case1.nii.gz", "case1_seg.nii.gz")
    message = str(caught.value)
    assert "case1.nii.gz" in message and "case1_seg.nii.gz" in message
    assert words in message
    assert "\n" not in message and message.endswith(".")


def test_read_label_on_a_different_grid_raises(tmp_path: Path, label_volume: np.ndarray) -> None:
    meta = make_meta()
    write_image(label_volume, replace(meta, origin=(0.0, 0.0, 0.0)), tmp_path / "seg.nii.gz")
    with pytest.raises(GridMismatchError, match="scan.nii.gz"):
        read_label(
            tmp_path / "seg.nii.gz",
            reference=meta,
            reference_shape=label_volume.shape,
            reference_name="scan.nii.gz",
        )


def test_read_label_reorders_the_same_grid_stored_flipped(
    tmp_path: Path, label_volume: np.ndarray
) -> None:
    """The situation of the real seg_dicom_series.nii.gz: the DICOM grid with y stored flipped.

    Same voxels, same physical places, other array order: read_label hands the labels back in
    the reference's order instead of refusing them.
    """
    meta = ImageMeta((0.98, 0.98, 2.0), (-249.5, -437.5, -804.5))
    flipped_direction = (1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0)
    last_row = meta.index_to_physical((0, label_volume.shape[1] - 1, 0))
    stored_meta = ImageMeta(meta.spacing, tuple(last_row), flipped_direction)
    write_image(label_volume[:, ::-1, :], stored_meta, tmp_path / "seg.nii.gz")

    labels, labels_meta = read_label(
        tmp_path / "seg.nii.gz", reference=meta, reference_shape=label_volume.shape
    )
    np.testing.assert_array_equal(labels, label_volume)
    assert labels_meta == meta

    # A truly different grid is still refused, also when a flip is possible.
    write_image(label_volume, make_meta(OBLIQUE), tmp_path / "other.nii.gz")
    with pytest.raises(GridMismatchError):
        read_label(tmp_path / "other.nii.gz", reference=meta, reference_shape=label_volume.shape)
