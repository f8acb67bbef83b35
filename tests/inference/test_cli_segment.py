"""``vetseg segment``: every input format, the outputs, bad input, and a folder of scans."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.inference.conftest import OBLIQUE, ORGANS, ramp_volume
from vetseg.cli import app
from vetseg.inference.batch import find_scans
from vetseg.inference.pipeline import SegmentOutputs, segment_scan
from vetseg.inference.postprocess import PostprocessConfig
from vetseg.inference.report import organ_statistics
from vetseg.inference.segmenter import Segmenter
from vetseg.io.image import ImageMeta, read_image, read_label, write_dicom_series, write_image


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def write_scan(tmp_path: Path, kind: str, volume: np.ndarray, meta: ImageMeta) -> Path:
    if kind == "dicom":
        write_dicom_series(volume, meta, tmp_path / "series")
        return tmp_path / "series"
    return write_image(volume, meta, tmp_path / f"scan{kind}")


@pytest.mark.parametrize(
    ("kind", "out_name"),
    [
        (".nii.gz", "seg.nii.gz"),
        (".nrrd", "seg.nrrd"),
        (".mha", "seg.nii.gz"),
        ("dicom", "seg.nii.gz"),
        (".nii", "seg.seg.nrrd"),
    ],
)
def test_each_format_gives_a_label_map_in_the_scans_geometry(
    model_dir: Path, tmp_path: Path, kind: str, out_name: str
) -> None:
    meta = OBLIQUE if kind != "dicom" else ImageMeta((0.9, 0.9, 2.0), (-20.0, 15.0, 40.0))
    scan = write_scan(tmp_path, kind, ramp_volume((5, 20, 24)), meta)
    out = tmp_path / "out" / out_name
    code, stdout, stderr = run("segment", model_dir, scan, "--out", out)
    assert code == 0, stderr
    assert f"wrote {out}" in stdout and "liver" in stdout
    image, image_meta = read_image(scan)
    labels, label_meta = read_label(out, reference=image_meta, reference_shape=image.shape)
    assert labels.shape == image.shape
    # NIfTI stores geometry as float32: equal to the scan's within that precision.
    for field in ("spacing", "origin", "direction"):
        assert getattr(label_meta, field) == pytest.approx(getattr(image_meta, field), abs=1e-5)
    assert (labels == 1).all()  # this model calls everything liver
    if out_name.endswith(".nrrd"):  # organ names travel with the label map
        assert read_image(out)[1].names.get(1) == "liver"


def test_report_uncertainty_and_label_map_agree(model_dir: Path, tmp_path: Path) -> None:
    volume = ramp_volume((6, 20, 20))
    meta = ImageMeta((0.5, 0.8, 2.0), (0.0, 0.0, 0.0))
    scan = write_image(volume, meta, tmp_path / "case.nii.gz")
    code, _, stderr = run(
        "segment",
        model_dir,
        scan,
        "--out",
        tmp_path / "seg.nii.gz",
        "--report-dir",
        tmp_path / "reports",
        "--uncertainty",
        tmp_path / "u.nii.gz",
    )
    assert code == 0, stderr
    data = json.loads((tmp_path / "reports" / "case.json").read_text())
    liver = data["organs"][0]
    assert liver["organ"] == "liver" and liver["voxels"] == volume.size
    assert liver["volume_ml"] == pytest.approx(volume.size * 0.5 * 0.8 * 2.0 / 1000)
    assert liver["mean_hu"] == pytest.approx(volume.mean(), abs=1e-4)
    assert liver["confidence"] == pytest.approx(1 / (1 + np.exp(-4.0)), abs=0.004)
    # The default engine, auto, keeps a small model (32 x 32, no model.onnx) in PyTorch.
    assert data["model"]["model_id"] and data["settings"]["engine"] == "torch"
    assert (tmp_path / "reports" / "case.csv").read_text().startswith("organ,label,voxels")
    uncertainty, _ = read_label(tmp_path / "u.nii.gz", reference=meta, reference_shape=volume.shape)
    assert uncertainty.dtype == np.uint8 and 0 < uncertainty.max() < 30  # p = 0.98 everywhere


def test_pipeline_cleans_masks_and_reports_on_the_cleaned_labels(
    intensity_segmenter: Segmenter, tmp_path: Path
) -> None:
    volume = ramp_volume((6, 24, 20))
    volume[3, 20, 2] = 2000  # one bright speck inside the dark corner...
    volume[3, 12, 15] = 2000  # ...and one alone: a second liver component
    meta = ImageMeta((1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    scan = write_image(volume, meta, tmp_path / "scan.nrrd")
    outputs = SegmentOutputs(labels=tmp_path / "seg.nrrd", report=tmp_path / "report")
    raw = segment_scan(intensity_segmenter, scan, outputs).organ_stats
    intensity_segmenter.postprocess = PostprocessConfig()
    result = segment_scan(intensity_segmenter, scan, outputs)
    labels, _ = read_label(tmp_path / "seg.nrrd")
    assert result.organs_found == ["liver", "spleen"]
    assert result.organ_stats[0].voxels < raw[0].voxels  # the lone speck is gone
    expected = organ_statistics(labels, volume, ORGANS, meta.spacing)
    assert [s.voxels for s in result.organ_stats] == [s.voxels for s in expected]
    assert result.organ_stats[0].mean_hu == pytest.approx(expected[0].mean_hu)
    assert (tmp_path / "report.csv").is_file() and (tmp_path / "report.json").is_file()


def assert_refused(code: int, stdout: str, stderr: str, words: str) -> None:
    assert code == 2
    assert stdout == ""
    assert stderr.startswith("error: ") and stderr.count("\n") == 1
    assert words in stderr and "Traceback" not in stderr


def test_bad_input_is_one_sentence_and_writes_nothing(model_dir: Path, tmp_path: Path) -> None:
    scan = write_image(ramp_volume(), OBLIQUE, tmp_path / "scan.nii.gz")
    out = tmp_path / "out"
    cases = [
        (
            ["segment", model_dir, scan, "--out", out / "s.nii.gz", "--dicom-seg", out / "s.dcm"],
            "not a DICOM series",
        ),
        (["segment", tmp_path, scan, "--out", out / "s.nii.gz"], "not a vetseg model folder"),
        (
            ["segment", model_dir, tmp_path / "none.nii.gz", "--out", out / "s.nii.gz"],
            "no such file",
        ),
        (["segment", model_dir, scan, "--out", out / "s.png"], "must end in one of"),
        (
            ["segment", model_dir, scan, "--out", out / "s.nii.gz", "--engine", "tpu"],
            "Unknown engine",
        ),
        (["segment", model_dir, scan, "--out", scan], "is the scan being segmented"),
        (
            ["segment", model_dir, tmp_path, "--out", out, "--preview", out / "p.png"],
            "names one file",
        ),
    ]
    for args, words in cases:
        assert_refused(*run(*args), words)
    assert not out.exists()


def test_a_folder_of_scans_survives_a_broken_one(model_dir: Path, tmp_path: Path) -> None:
    scans = tmp_path / "scans"
    meta = ImageMeta((1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
    write_image(ramp_volume((4, 16, 16)), meta, scans / "a.nii.gz")
    write_image(ramp_volume((5, 16, 16), seed=1), meta, scans / "b.mha")
    write_dicom_series(ramp_volume((4, 16, 16), seed=2), meta, scans / "patient" / "ct")
    broken = write_image(ramp_volume((4, 16, 16)), meta, scans / "broken.nii.gz")
    broken.write_bytes(broken.read_bytes()[:200])  # truncated mid-transfer
    (scans / "notes.txt").write_text("not a scan")
    out = tmp_path / "labels"
    code, stdout, stderr = run(
        "segment", model_dir, scans, "--out", out, "--report-dir", tmp_path / "reports"
    )
    assert code == 1  # documented: some scans failed, the others are done
    assert sorted(p.name for p in out.iterdir()) == [
        "a.nii.gz",
        "b.nii.gz",
        "patient_ct.nii.gz",
    ]
    assert "FAILED" in stdout and "3 of 4 scan(s)" in stdout
    assert "broken.nii.gz" in stderr and "truncated" in stderr
    assert (tmp_path / "reports" / "patient_ct.json").is_file()
    labels, _ = read_label(out / "b.nii.gz")
    assert labels.shape == (5, 16, 16)


def test_find_scans_names_and_skips(tmp_path: Path) -> None:
    meta = ImageMeta((1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    volume = ramp_volume((3, 8, 8))
    write_image(volume, meta, tmp_path / "case.nii.gz")
    write_image(volume, meta, tmp_path / "case.nrrd")
    write_image(volume.astype(np.uint8), meta, tmp_path / "old.seg.nrrd")
    write_image(volume, meta, tmp_path / "out" / "case.nii.gz")
    names = [e.name for e in find_scans(tmp_path, exclude=(tmp_path / "out",))]
    assert names == ["case_nii_gz", "case_nrrd"]


def test_shards_of_a_folder_are_disjoint_and_cover_it(model_dir: Path, tmp_path: Path) -> None:
    scans = tmp_path / "scans"
    meta = ImageMeta((1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
    for i, name in enumerate(["e", "a", "d", "b", "c"]):  # written out of order on purpose
        write_image(ramp_volume((3, 16, 16), seed=i), meta, scans / f"{name}.nii.gz")
    out = tmp_path / "labels"  # one --out folder shared by all shards, as a SLURM array would
    written = []
    for index in range(3):
        before = set(out.iterdir()) if out.exists() else set()
        code, stdout, _ = run("segment", model_dir, scans, "--out", out, "--shard", f"{index}/3")
        assert code == 0, stdout
        assert f"shard {index}/3" in stdout
        written.append(sorted(p.name for p in set(out.iterdir()) - before))
    # Sorted by name, every 3rd scan: deterministic, disjoint, complete.
    assert written == [["a.nii.gz", "d.nii.gz"], ["b.nii.gz", "e.nii.gz"], ["c.nii.gz"]]
    # More shards than scans: an empty shard is not an error.
    code, stdout, _ = run("segment", model_dir, scans, "--out", tmp_path / "x", "--shard", "7/8")
    assert code == 0 and "0 of 0 scan(s)" in stdout


@pytest.mark.parametrize("shard", ["3/3", "-1/2", "1/0", "a/b", "2"])
def test_bad_shards_are_one_sentence(model_dir: Path, tmp_path: Path, shard: str) -> None:
    scans = tmp_path / "scans"
    write_image(
        ramp_volume((3, 16, 16)), ImageMeta((1.0, 1.0, 2.0), (0.0, 0.0, 0.0)), scans / "a.nii.gz"
    )
    code, _, stderr = run("segment", model_dir, scans, "--out", tmp_path / "o", "--shard", shard)
    assert code == 2 and "--shard" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "o").exists()
    code, _, stderr = run(
        "segment", model_dir, scans / "a.nii.gz", "--out", tmp_path / "a.nii.gz", "--shard", "0/2"
    )
    assert code == 2 and "--shard is for a folder of scans" in stderr
