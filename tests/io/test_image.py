"""Round trips through every format, Slicer segment names, DICOM series, atomic writes."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from tests.io.helpers import OBLIQUE, PERMUTED, make_meta
from vetseg.errors import InputError
from vetseg.io.image import (
    ImageMeta,
    read_image,
    read_label,
    write_dicom_series,
    write_image,
)

FORMATS = (".nii", ".nii.gz", ".nrrd", ".seg.nrrd", ".mha", ".mhd")


def assert_same_geometry(a: ImageMeta, b: ImageMeta, atol: float = 1e-5) -> None:
    # NIfTI stores geometry as float32, hence a tolerance rather than exact equality.
    np.testing.assert_allclose(a.spacing, b.spacing, rtol=1e-6, atol=atol)
    np.testing.assert_allclose(a.origin, b.origin, atol=atol)
    np.testing.assert_allclose(a.direction, b.direction, atol=atol)


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("direction", [OBLIQUE, PERMUTED], ids=["oblique", "permuted"])
def test_image_round_trip(tmp_path: Path, ct_volume: np.ndarray, suffix: str, direction) -> None:
    meta = make_meta(direction)
    path = write_image(ct_volume, meta, tmp_path / f"scan{suffix}")
    array, back = read_image(path)
    assert array.dtype == np.int16
    np.testing.assert_array_equal(array, ct_volume)
    assert_same_geometry(back, meta)
    assert back.source == str(path)


@pytest.mark.parametrize("suffix", FORMATS)
def test_label_dtype_preserved(tmp_path: Path, label_volume: np.ndarray, suffix: str) -> None:
    meta = make_meta()
    write_image(label_volume, meta, tmp_path / f"a{suffix}")
    wide = label_volume.astype(np.uint16) * 300  # ids above 255 need uint16
    write_image(wide, meta, tmp_path / f"b{suffix}")
    as_int64 = label_volume.astype(np.int64)  # numpy's default is narrowed on writing
    write_image(as_int64, meta, tmp_path / f"c{suffix}")

    a, _ = read_label(tmp_path / f"a{suffix}")
    b, _ = read_label(tmp_path / f"b{suffix}")
    c, _ = read_label(tmp_path / f"c{suffix}")
    assert a.dtype == np.uint8 and b.dtype == np.uint16 and c.dtype == np.uint8
    np.testing.assert_array_equal(a, label_volume)
    np.testing.assert_array_equal(b, wide)
    np.testing.assert_array_equal(c, label_volume)


def test_float_image_round_trip(tmp_path: Path) -> None:
    values = np.random.default_rng(1).normal(size=(4, 5, 6)).astype(np.float32)
    write_image(values, make_meta(), tmp_path / "p.nii.gz")
    array, _ = read_image(tmp_path / "p.nii.gz")
    assert array.dtype == np.float32
    np.testing.assert_array_equal(array, values)


def test_seg_nrrd_segment_names_round_trip(tmp_path: Path, label_volume: np.ndarray) -> None:
    names = {1: "liver", 2: "spleen", 5: "kidney_left", 7: "heart"}  # 7 is absent: kept empty
    path = write_image(label_volume, make_meta(), tmp_path / "case.seg.nrrd", segment_names=names)
    labels, meta = read_label(path)
    np.testing.assert_array_equal(labels, label_volume)
    assert meta.names == names

    header = path.read_bytes().split(b"\n\n", 1)[0].decode()
    # The fields 3D Slicer reads to show the segments.
    assert "Segment0_Name:=liver" in header
    assert "Segment0_LabelValue:=1" in header
    assert "Segment0_Layer:=0" in header
    assert "Segment2_ID:=Segment_5" in header
    assert "Segment3_Extent:=0 -1 0 -1 0 -1" in header  # heart: empty
    assert "Segment1_Extent:=5 8 4 6 2 4" in header  # spleen: x 5-8, y 4-6, z 2-4
    assert "encoding: gzip" in header


def test_seg_nrrd_without_names_uses_meta_names(tmp_path: Path, label_volume: np.ndarray) -> None:
    meta = ImageMeta((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), segment_names=((1, "liver"),))
    path = write_image(label_volume, meta, tmp_path / "x.seg.nrrd")
    _, back = read_label(path)
    assert back.names == {1: "liver", 2: "label_2", 5: "label_5"}


def test_layered_slicer_segmentation_merges_to_one_label_map(tmp_path: Path) -> None:
    """Overlapping segments in two layers, both using label value 1, as Slicer writes them."""
    layer0 = np.zeros((4, 5, 6), dtype=np.uint8)
    layer1 = np.zeros((4, 5, 6), dtype=np.uint8)
    layer0[:, :2] = 1  # liver
    layer0[:, 4] = 3  # spleen
    layer1[:, 1:3] = 1  # tumour, overlapping the liver in row 1
    image = sitk.GetImageFromArray(np.stack([layer0, layer1], axis=-1), isVector=True)
    segments = [("liver", 1, 0), ("spleen", 3, 0), ("tumour", 1, 1)]
    for i, (name, value, layer) in enumerate(segments):
        image.SetMetaData(f"Segment{i}_Name", name)
        image.SetMetaData(f"Segment{i}_LabelValue", str(value))
        image.SetMetaData(f"Segment{i}_Layer", str(layer))
        image.SetMetaData(f"Segment{i}_ID", f"Segment_{i}")
    path = tmp_path / "layers.seg.nrrd"
    sitk.WriteImage(image, str(path), True)

    labels, meta = read_label(path)
    assert labels.shape == (4, 5, 6) and np.issubdtype(labels.dtype, np.integer)
    # The tumour's value 1 is taken by the liver, so it gets the next free id (4).
    assert meta.names == {1: "liver", 3: "spleen", 4: "tumour"}
    assert (labels[:, 0] == 1).all()
    assert (labels[:, 1:3] == 4).all()  # the later segment wins where they overlap
    assert (labels[:, 4] == 3).all()
    assert (labels[:, 3] == 0).all()


@pytest.mark.parametrize("direction", [OBLIQUE, (1, 0, 0, 0, 0, -1, 0, 1, 0)])
def test_dicom_series_round_trip(tmp_path: Path, ct_volume: np.ndarray, direction) -> None:
    meta = make_meta(direction)
    files = write_dicom_series(ct_volume, meta, tmp_path / "series")
    assert len(files) == ct_volume.shape[0]
    array, back = read_image(tmp_path / "series")
    np.testing.assert_array_equal(array, ct_volume)
    assert_same_geometry(back, meta, atol=1e-4)
    assert back.source_format == "DICOM"
    assert back.series_uid and back.series_uid.startswith("2.25.")
    assert len(back.sop_uids) == ct_volume.shape[0] and len(set(back.sop_uids)) == 5
    assert back.series_count == 1

    # One file of the series stands for the whole series.
    one, _ = read_image(files[2])
    np.testing.assert_array_equal(one, ct_volume)


def test_writing_a_dicom_series_leaves_the_locale_and_text_encoding_alone(
    tmp_path: Path, ct_volume: np.ndarray
) -> None:
    import locale

    ctype, encoding = locale.setlocale(locale.LC_CTYPE), locale.getpreferredencoding(False)
    write_dicom_series(ct_volume, make_meta(OBLIQUE), tmp_path / "series")
    # GDCM switched the C locale to "C": afterwards Python read and wrote text as ASCII.
    assert locale.setlocale(locale.LC_CTYPE) == ctype
    assert locale.getpreferredencoding(False) == encoding
    report = tmp_path / "report.md"
    report.write_text("volume 12.5 \u00b1 0.3 ml\n")
    assert report.read_text() == "volume 12.5 \u00b1 0.3 ml\n"


def test_dicom_left_handed_direction_keeps_physical_positions(
    tmp_path: Path, ct_volume: np.ndarray
) -> None:
    """DICOM cannot store det -1: the slices are reversed, every voxel keeps its position."""
    meta = make_meta(PERMUTED)
    write_dicom_series(ct_volume, meta, tmp_path / "series")
    array, back = read_image(tmp_path / "series")
    np.testing.assert_array_equal(array, ct_volume[::-1])
    last_slice = meta.index_to_physical((ct_volume.shape[0] - 1, 2, 3))
    np.testing.assert_allclose(back.index_to_physical((0, 2, 3)), last_slice, atol=1e-4)


def test_dicom_folder_with_two_series_reads_the_larger(
    tmp_path: Path, ct_volume: np.ndarray
) -> None:
    write_dicom_series(ct_volume[:3], make_meta(), tmp_path / "study" / "a_small")
    write_dicom_series(ct_volume, make_meta(), tmp_path / "study" / "b_large")
    array, meta = read_image(tmp_path / "study")
    assert array.shape[0] == 5
    assert meta.series_count == 2


def test_dicom_missing_slice_is_an_error(tmp_path: Path, ct_volume: np.ndarray) -> None:
    files = write_dicom_series(ct_volume, make_meta(), tmp_path / "series")
    files[2].unlink()
    with pytest.raises(InputError, match="unevenly spaced"):
        read_image(tmp_path / "series")


def test_empty_dicom_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(InputError, match="no DICOM image series"):
        read_image(tmp_path / "empty")


def test_read_label_rejects_images(tmp_path: Path, ct_volume: np.ndarray) -> None:
    write_image(ct_volume, make_meta(), tmp_path / "ct.nii.gz")
    with pytest.raises(InputError, match="negative values"):
        read_label(tmp_path / "ct.nii.gz")
    write_image(ct_volume.astype(np.float32) / 7, make_meta(), tmp_path / "f.nii.gz")
    with pytest.raises(InputError, match="non-integer"):
        read_label(tmp_path / "f.nii.gz")


def test_read_label_accepts_integral_floats(tmp_path: Path, label_volume: np.ndarray) -> None:
    write_image(label_volume.astype(np.float32), make_meta(), tmp_path / "f.nii.gz")
    labels, _ = read_label(tmp_path / "f.nii.gz")
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, label_volume)


# --------------------------------------------------------------------------- atomic writes
def _failing_writer(image: sitk.Image, filename: str, *args: object) -> None:
    """Write half a file, then fail, like a full disk in the middle of a write."""
    Path(filename).write_bytes(b"\x00" * 100)
    raise RuntimeError("Exception thrown in SimpleITK WriteImage: disk full")


@pytest.mark.parametrize("suffix", [".nii.gz", ".seg.nrrd", ".mhd"])
def test_failed_write_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, label_volume: np.ndarray, suffix: str
) -> None:
    monkeypatch.setattr(sitk, "WriteImage", _failing_writer)
    target = tmp_path / "out" / f"labels{suffix}"
    with pytest.raises(InputError, match="disk full") as caught:
        write_image(label_volume, make_meta(), target, segment_names={1: "liver"})
    assert str(target) in str(caught.value)
    assert not target.exists()
    out = tmp_path / "out"
    # No temporary file or folder left; atomic_path also removes the folder it made.
    assert not out.exists() if suffix != ".mhd" else list(out.iterdir()) == []


def test_failed_write_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, label_volume: np.ndarray
) -> None:
    target = write_image(label_volume, make_meta(), tmp_path / "labels.nii.gz")
    before = target.read_bytes()
    monkeypatch.setattr(sitk, "WriteImage", _failing_writer)
    with pytest.raises(InputError):
        write_image(label_volume * 0, make_meta(), target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.nii.gz"]


def test_mhd_writes_header_and_data_file(tmp_path: Path, ct_volume: np.ndarray) -> None:
    write_image(ct_volume, make_meta(), tmp_path / "deep" / "scan.mhd")
    names = sorted(p.name for p in (tmp_path / "deep").iterdir())
    assert names == ["scan.mhd", "scan.zraw"]  # compressed data, no staging folder left
    assert "ElementDataFile = scan.zraw" in (tmp_path / "deep" / "scan.mhd").read_text()


def test_write_rejects_unknown_suffix_and_wrong_rank(tmp_path: Path, ct_volume) -> None:
    with pytest.raises(InputError, match="unknown file type"):
        write_image(ct_volume, make_meta(), tmp_path / "scan.png")
    with pytest.raises(ValueError, match="3D"):
        write_image(ct_volume[0], make_meta(), tmp_path / "scan.nii.gz")


def test_meta_equality_ignores_provenance() -> None:
    a = ImageMeta([1, 2, 3], np.zeros(3), np.eye(3), source="a.nii")
    b = ImageMeta((1.0, 2.0, 3.0), (0.0, 0.0, 0.0), source="b.nii", series_uid="1.2")
    assert a == b and hash(a) == hash(b)
    with pytest.raises(ValueError, match="positive"):
        ImageMeta((1.0, 0.0, 1.0), (0.0, 0.0, 0.0))


def test_multi_member_gzip_nifti_is_complete(tmp_path: Path, ct_volume: np.ndarray) -> None:
    """bgzip-style files (several gzip members) fail the quick size check and are counted."""
    raw = write_image(ct_volume, make_meta(), tmp_path / "scan.nii").read_bytes()
    half = len(raw) // 2
    path = tmp_path / "scan.nii.gz"
    path.write_bytes(gzip.compress(raw[:half]) + gzip.compress(raw[half:]))
    array, _ = read_image(path)
    np.testing.assert_array_equal(array, ct_volume)
    path.write_bytes(gzip.compress(raw[:half]) + gzip.compress(raw[half:-200]))
    with pytest.raises(InputError, match="truncated"):
        read_image(path)
