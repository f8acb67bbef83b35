"""The reader on real scans in ../shared/data (skipped when the folder is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vetseg.errors import GridMismatchError
from vetseg.io.image import check_same_grid, read_image, read_label, to_canonical

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def totalseg(shared_data: Path) -> Path:
    return shared_data / "human" / "totalseg_example"


@pytest.fixture(scope="module")
def dicom_ct(totalseg: Path) -> tuple[np.ndarray, object]:
    return read_image(totalseg / "dicom_series")


def test_dicom_series(dicom_ct) -> None:
    ct, meta = dicom_ct
    assert ct.shape == (20, 512, 512)
    np.testing.assert_allclose(meta.spacing, (0.977, 0.977, 2.0), atol=1e-3)
    assert meta.source_format == "DICOM" and len(meta.dicom_files) == 20
    assert np.median(ct) < -500  # mostly air around the body, in HU


def test_dicom_labels_line_up(totalseg: Path, dicom_ct) -> None:
    """seg_dicom_series.nii.gz stores the DICOM grid with the y axis flipped (LAS, origin at
    the last row): same voxels, so read_label reorders it instead of refusing it."""
    ct, meta = dicom_ct
    path = totalseg / "seg_dicom_series.nii.gz"
    raw, raw_meta = read_image(path)
    assert raw_meta.orientation == "LAS" and meta.orientation == "LPS"
    with pytest.raises(GridMismatchError):
        check_same_grid(raw.shape, raw_meta, ct.shape, meta, path.name, "dicom_series")

    seg, seg_meta = read_label(path, reference=meta, reference_shape=ct.shape)
    assert seg.shape == ct.shape and seg_meta == meta
    names = {int(k): v for k, v in json.loads((totalseg / "labels.json").read_text()).items()}
    assert names[5] == "liver"
    assert 0 <= np.median(ct[seg == 5]) <= 200
    vertebrae = np.isin(seg, [i for i, n in names.items() if n.startswith("vertebrae_")])
    assert (ct[vertebrae] > 150).mean() > 0.5  # bone where the labels say bone
    # Without the reorder the same check fails: the labels would sit mirrored on the scan.
    assert (ct[np.isin(raw, [32, 33])] > 150).mean() < 0.1


def test_nifti_ct_and_labels(totalseg: Path) -> None:
    ct, meta = read_image(totalseg / "ct.nii.gz")
    seg, _ = read_label(totalseg / "seg.nii.gz", reference=meta, reference_shape=ct.shape)
    assert seg.dtype == np.uint8
    np.testing.assert_allclose(meta.spacing, (3.0, 3.0, 3.0), atol=1e-4)
    assert 0 <= np.median(ct[seg == 5]) <= 200
    lungs = (seg >= 10) & (seg <= 14)
    assert lungs.sum() > 0 and np.median(ct[lungs]) < -500


def test_mouse_template(shared_data: Path) -> None:
    folder = shared_data / "mouse" / "template"
    ct, meta = read_image(folder / "template_ct.nii.gz")
    seg, _ = read_label(folder / "template_seg.nii.gz", reference=meta, reference_shape=ct.shape)
    assert ct.shape == (114, 206, 130)
    assert set(np.unique(seg).tolist()) == {0, 1, 2, 3, 15, 21}


def test_digimouse_long_axis_becomes_axis_0(shared_data: Path) -> None:
    labels, meta = read_label(shared_data / "mouse" / "digimouse" / "labels.nii.gz")
    assert labels.shape == (104, 496, 190)  # stored with the long axis second
    canonical, canonical_meta = to_canonical(labels, meta)
    assert canonical.shape[0] == 496
    np.testing.assert_array_equal(canonical_meta.direction_matrix, np.eye(3))
    # LPS: axis 0 runs inferior -> superior, so the brain lies above (cranial to) the bladder.
    z = np.arange(496)[:, None, None]
    brain = np.isin(canonical, [4, 5, 6, 7, 8, 10])
    bladder = canonical == 13
    assert np.mean(np.broadcast_to(z, canonical.shape)[brain]) > np.mean(
        np.broadcast_to(z, canonical.shape)[bladder]
    )
