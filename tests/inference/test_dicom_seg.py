"""DICOM-SEG: valid (dciodvfy), readable, on the right slices, for a series written here and for
the real DICOM series in ../shared/data.

Every DICOM-SEG checked here holds segments: the models used find organs by construction (a
transparent intensity engine, or a head whose bias calls every voxel liver), so no check can pass
by validating nothing. The real series is anonymised with its SOP Instance, Series and Study
UIDs blanked, so no segmentation can reference it: vetseg refuses it (tested). The other tests
use a copy written to ``tmp_path`` with the UIDs restored by pydicom (SOP Instance UIDs from the
file meta header, which anonymisation left, new Study and Series UIDs); pixel data and geometry
are untouched.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import CTImageStorage, generate_uid
from typer.testing import CliRunner

from tests.inference.conftest import ORGANS, ramp_volume
from vetseg.cli import app
from vetseg.inference.dicom_seg import clean_source_header, complete_code_item, organ_code
from vetseg.inference.pipeline import SegmentOutputs, segment_scan
from vetseg.inference.segmenter import Segmenter
from vetseg.io.image import ImageMeta, read_image, read_label, write_dicom_series

realdata = pytest.mark.realdata
slow = pytest.mark.slow
needs_dciodvfy = pytest.mark.skipif(
    shutil.which("dciodvfy") is None,
    reason="dicom3tools' dciodvfy absent (apt install dicom3tools)",
)


@pytest.fixture(scope="module")
def real_series(shared_data: Path) -> Path:
    folder = shared_data / "human" / "totalseg_example" / "dicom_series"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    return folder


@pytest.fixture(scope="module")
def series_with_uids(real_series: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dicom") / "series"
    out.mkdir()
    study, series = generate_uid(), generate_uid()
    for path in sorted(real_series.iterdir()):
        ds = pydicom.dcmread(path)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.save_as(out / path.name)
    return out


def dciodvfy_errors(path: Path) -> list[str]:
    """Error lines of Debian's dicom3tools validator (warnings are allowed)."""
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    lines = (result.stdout + result.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]


@realdata
def test_dicom_seg_of_the_real_series(
    intensity_segmenter: Segmenter, series_with_uids: Path, tmp_path: Path
) -> None:
    outputs = SegmentOutputs(labels=tmp_path / "seg.nii.gz", dicom_seg=tmp_path / "seg.dcm")
    result = segment_scan(intensity_segmenter, series_with_uids, outputs)
    assert result.organs_found == ["liver", "spleen"]
    image, meta = read_image(series_with_uids)
    labels, _ = read_label(tmp_path / "seg.nii.gz", reference=meta, reference_shape=image.shape)

    seg = pydicom.dcmread(tmp_path / "seg.dcm")
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == meta.study_uid
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == meta.series_uid
    assert {i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence} == set(
        meta.sop_uids
    )
    names = [s.SegmentLabel for s in seg.SegmentSequence]
    codes = [s.SegmentedPropertyTypeCodeSequence[0].CodeValue for s in seg.SegmentSequence]
    assert names == ["liver", "spleen"] and codes == ["10200004", "78961009"]
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == (
        "SCT"
    )

    # Every frame lies on the source slice it names and holds that slice's labels.
    import highdicom as hd

    reread = hd.seg.segread(tmp_path / "seg.dcm")
    pixels = reread.get_pixels_by_source_instance(
        source_sop_instance_uids=list(meta.sop_uids), segment_numbers=[1, 2]
    )  # [slices, rows, columns, segments]
    assert np.array_equal(pixels[..., 0] == 1, labels == 1)
    assert np.array_equal(pixels[..., 1] == 1, labels == 2)


def _segments(path: Path) -> list[str]:
    return [s.SegmentLabel for s in pydicom.dcmread(path).SegmentSequence]


def test_dicom_seg_of_a_written_series_holds_every_organ_found(
    intensity_segmenter: Segmenter, tmp_path: Path
) -> None:
    meta = ImageMeta(spacing=(0.9, 0.9, 2.0), origin=(-20.0, 15.0, 40.0))
    files = write_dicom_series(ramp_volume((5, 24, 20), seed=3), meta, tmp_path / "series")
    frame_of_reference = generate_uid()  # a scanner writes one; SimpleITK's writer does not
    for path in files:
        ds = pydicom.dcmread(path)
        ds.FrameOfReferenceUID = frame_of_reference
        ds.save_as(path)
    outputs = SegmentOutputs(labels=tmp_path / "seg.nii.gz", dicom_seg=tmp_path / "seg.dcm")
    result = segment_scan(intensity_segmenter, tmp_path / "series", outputs)
    assert result.organs_found == ["liver", "spleen"]  # the engine's bright and dark blocks
    assert _segments(tmp_path / "seg.dcm") == ["liver", "spleen"]
    image, read_meta = read_image(tmp_path / "series")
    labels, _ = read_label(
        tmp_path / "seg.nii.gz", reference=read_meta, reference_shape=image.shape
    )
    import highdicom as hd

    pixels = hd.seg.segread(tmp_path / "seg.dcm").get_pixels_by_source_instance(
        source_sop_instance_uids=list(read_meta.sop_uids), segment_numbers=[1, 2]
    )
    assert np.array_equal(pixels[..., 0] == 1, labels == 1)
    assert np.array_equal(pixels[..., 1] == 1, labels == 2)
    if shutil.which("dciodvfy"):
        assert dciodvfy_errors(tmp_path / "seg.dcm") == []


@needs_dciodvfy
def test_dciodvfy_catches_an_invalid_file(tmp_path: Path) -> None:
    """The validator itself is not a check that cannot fail."""
    meta = ImageMeta(spacing=(0.9, 0.9, 2.0), origin=(0.0, 0.0, 0.0))
    (path,) = write_dicom_series(ramp_volume((1, 8, 8)), meta, tmp_path / "series")
    ds = pydicom.dcmread(path)
    del ds.Rows  # a type 1 attribute of the CT image
    ds.save_as(tmp_path / "broken.dcm")
    assert dciodvfy_errors(tmp_path / "broken.dcm") != []


@realdata
@needs_dciodvfy
def test_dciodvfy_reports_no_error(model_dir: Path, series_with_uids: Path, tmp_path: Path) -> None:
    out = tmp_path / "seg.dcm"
    result = CliRunner().invoke(
        app,
        ["segment", str(model_dir), str(series_with_uids), "--out", str(tmp_path / "s.nrrd")]
        + ["--dicom-seg", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert _segments(out) == ["liver"]  # the model calls every voxel liver: never empty
    assert dciodvfy_errors(out) == []


@realdata
def test_the_anonymised_series_is_refused_for_dicom_seg(
    model_dir: Path, real_series: Path, tmp_path: Path
) -> None:
    result = CliRunner().invoke(
        app,
        ["segment", str(model_dir), str(real_series), "--out", str(tmp_path / "s.nii.gz")]
        + ["--dicom-seg", str(tmp_path / "s.dcm")],
    )
    assert result.exit_code == 2
    assert "SOPInstanceUID" in result.stderr and "could not reference" in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


@realdata
def test_the_real_series_end_to_end(
    model_dir: Path, series_with_uids: Path, tmp_path: Path
) -> None:
    pytest.importorskip("vetseg.viz.preview")
    args = ["segment", str(model_dir), str(series_with_uids), "--out", str(tmp_path / "seg.nii.gz")]
    args += ["--dicom-seg", str(tmp_path / "seg.dcm"), "--report", str(tmp_path / "organs")]
    args += ["--preview", str(tmp_path / "preview.png")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for name in ("seg.nii.gz", "seg.dcm", "organs.csv", "organs.json", "preview.png"):
        assert (tmp_path / name).stat().st_size > 0
    image, meta = read_image(series_with_uids)
    labels, _ = read_label(tmp_path / "seg.nii.gz", reference=meta, reference_shape=image.shape)
    assert labels.shape == (20, 512, 512)
    if shutil.which("dciodvfy"):
        assert dciodvfy_errors(tmp_path / "seg.dcm") == []


def test_organ_codes() -> None:
    assert organ_code("kidney_left").code == ("18639004", "Left kidney")
    mandible = organ_code("mandible_right")
    assert mandible.code[0] == "91609006" and mandible.laterality == ("24028007", "Right")
    assert not organ_code("caecum_appendix").specific
    assert all(organ_code(o).specific for o in ORGANS)


def _code(value: str | None, scheme: str | None, meaning: str | None) -> pydicom.Dataset:
    item = pydicom.Dataset()
    for keyword, text in (
        ("CodeValue", value),
        ("CodingSchemeDesignator", scheme),
        ("CodeMeaning", meaning),
    ):
        if text is not None:
            setattr(item, keyword, text)
    return item


def test_clean_source_header_drops_incomplete_codes_and_bad_text() -> None:
    ds = pydicom.Dataset()
    ds.StudyInstanceUID = "1.2.3.4"
    ds.PatientID = "P" * 70  # LO holds 64 characters
    ds.AccessionNumber = "A1"
    ds.ProcedureCodeSequence = [
        _code("6500561", None, "CT, LUNG, MED, PLEURA W/CONTRAST"),  # as in hcc_tace_009
        _code("77477000", "SCT", "CT of abdomen"),
        _code("", "SCT", "no value"),
    ]
    ds.AnatomicRegionSequence = [_code("818981001", "SCT", None)]
    item = pydicom.Dataset()
    item.ConceptNameCodeSequence = [_code("1", "99X", "")]
    ds.RequestAttributesSequence = [item]

    notes = clean_source_header(ds)

    assert [i.CodeValue for i in ds.ProcedureCodeSequence] == ["77477000"]
    assert "AnatomicRegionSequence" not in ds  # no complete item left: the sequence goes
    assert "ConceptNameCodeSequence" not in ds.RequestAttributesSequence[0]  # nested too
    assert "PatientID" in ds and ds["PatientID"].is_empty  # emptied, still present (type 2)
    assert ds.AccessionNumber == "A1" and ds.StudyInstanceUID == "1.2.3.4"
    assert len(notes) == 4 and any("ProcedureCodeSequence" in n for n in notes)


def test_complete_code_item() -> None:
    assert complete_code_item(_code("10200004", "SCT", "Liver"))
    assert not complete_code_item(_code("10200004", None, "Liver"))
    assert not complete_code_item(_code("10200004", "SCT", None))
    urn = pydicom.Dataset()
    urn.URNCodeValue = "http://example.org/code"
    urn.CodeMeaning = "a URN code needs no scheme"
    assert complete_code_item(urn)


@needs_dciodvfy
def test_dicom_seg_of_a_source_with_an_incomplete_procedure_code_is_valid(
    intensity_segmenter: Segmenter, tmp_path: Path
) -> None:
    """The source fault of hcc_tace_009, on a written series: old code copied it (1 error)."""
    meta = ImageMeta(spacing=(0.9, 0.9, 2.0), origin=(-20.0, 15.0, 40.0))
    files = write_dicom_series(ramp_volume((4, 24, 20), seed=5), meta, tmp_path / "series")
    frame_of_reference = generate_uid()
    for path in files:
        ds = pydicom.dcmread(path)
        ds.FrameOfReferenceUID = frame_of_reference
        ds.ProcedureCodeSequence = [_code("6500561", None, "CT ABDOMEN W/CONTRAST")]
        ds.save_as(path)
    assert dciodvfy_errors(files[0]) != []  # the source itself is invalid
    outputs = SegmentOutputs(labels=tmp_path / "seg.nii.gz", dicom_seg=tmp_path / "seg.dcm")
    result = segment_scan(intensity_segmenter, tmp_path / "series", outputs)
    assert dciodvfy_errors(tmp_path / "seg.dcm") == []
    assert "ProcedureCodeSequence" not in pydicom.dcmread(tmp_path / "seg.dcm")
    assert any("ProcedureCodeSequence" in note for note in result.notes)
    assert pydicom.dcmread(files[0]).ProcedureCodeSequence[0].CodeValue == "6500561"  # untouched


def _every_real_series(shared_data: Path, tmp_path: Path) -> dict[str, Path]:
    """Every real DICOM series of ../shared/data, the blanked-UID one as a copy with UIDs."""
    human = shared_data / "human"
    found = {
        "hcc_tace_009/contrast_3phase": human / "hcc_tace_009" / "contrast_3phase",
        "hcc_tace_009/precontrast": human / "hcc_tace_009" / "precontrast",
    }
    blanked = human / "totalseg_example" / "dicom_series"
    if blanked.is_dir():
        out = tmp_path / "totalseg_with_uids"
        out.mkdir()
        study, series = generate_uid(), generate_uid()
        for path in sorted(blanked.iterdir()):
            ds = pydicom.dcmread(path)
            ds.SOPClassUID = CTImageStorage
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.save_as(out / path.name)
        found["totalseg_example/dicom_series (UIDs restored)"] = out
    return {name: folder for name, folder in found.items() if folder.is_dir()}


@realdata
@slow
@needs_dciodvfy
def test_every_real_dicom_series_gives_a_valid_dicom_seg(
    model_dir: Path, shared_data: Path, tmp_path: Path
) -> None:
    series = _every_real_series(shared_data, tmp_path)
    if len(series) < 3:
        pytest.skip(f"only {sorted(series)} of the three real DICOM series are present")
    errors = {}
    for k, (name, folder) in enumerate(series.items()):
        out = tmp_path / f"seg{k}.dcm"
        args = ["segment", str(model_dir), str(folder), "--out", str(tmp_path / f"s{k}.nrrd")]
        result = CliRunner().invoke(app, args + ["--dicom-seg", str(out)])
        assert result.exit_code == 0, result.output
        assert _segments(out) == ["liver"]  # never an empty segmentation
        errors[name] = dciodvfy_errors(out)
    assert errors == {name: [] for name in series}
