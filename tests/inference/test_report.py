"""Report numbers on a known mask: volume from spacing, mean and sd HU, confidence; CSV, JSON."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from vetseg.inference.report import SegmentationReport, organ_statistics, report_paths
from vetseg.inference.segmenter import uncertainty_percent


def known_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.normal(50, 30, (20, 16, 16)).astype(np.int16)
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[2:12, 3:9, 4:14] = 1  # 10 * 6 * 10 = 600 voxels
    labels[14:17, 10:14, 0:5] = 2  # 3 * 4 * 5 = 60 voxels
    image[labels == 2] = 1000  # constant: sd exactly 0
    probability = np.full(image.shape, 200, dtype=np.uint8)
    probability[labels == 1] = 255
    return labels, image, probability


def test_volume_mean_and_sd_on_a_known_mask() -> None:
    labels, image, probability = known_case()
    spacing = (0.5, 0.8, 2.0)  # 0.8 mm^3 = 0.0008 ml per voxel
    rows = organ_statistics(
        labels, image, ("liver", "spleen", "heart"), spacing, probability=probability
    )
    liver, spleen, heart = rows
    assert (liver.organ, liver.label, liver.voxels) == ("liver", 1, 600)
    assert liver.volume_ml == pytest.approx(600 * 0.0008)
    assert spleen.volume_ml == pytest.approx(60 * 0.0008)
    inside = image[labels == 1].astype(np.float64)
    assert liver.mean_hu == pytest.approx(inside.mean(), abs=1e-9)
    assert liver.sd_hu == pytest.approx(inside.std(), abs=1e-6)
    assert spleen.mean_hu == 1000 and spleen.sd_hu == 0
    assert liver.confidence == pytest.approx(1.0)
    assert spleen.confidence == pytest.approx(200 / 255)
    assert heart.voxels == 0 and heart.volume_ml == 0
    assert math.isnan(heart.mean_hu) and math.isnan(heart.confidence)


def test_confidence_counts_only_voxels_the_model_gave_the_organ() -> None:
    labels, image, probability = known_case()
    model_labels = labels.copy()
    model_labels[5, 5, 5] = 0  # a hole post-processing filled: the model's probability there
    probability[5, 5, 5] = 0  # is not the liver's, so it must not count
    (liver,) = organ_statistics(
        labels,
        image,
        ("liver",),
        (1.0, 1.0, 1.0),
        probability=probability,
        model_labels=model_labels,
    )
    assert liver.voxels == 600
    assert liver.confidence == pytest.approx(1.0)


def test_integer_histogram_and_float_paths_give_the_same_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """int16 CT takes the (label, value) histogram path; float images, and integer ones too
    wide for a histogram, the weighted counts: the same numbers either way."""
    import vetseg.inference.report as report

    labels, image, probability = known_case()
    labels[0, 0, :4] = 9  # an id the organ list does not name: counted nowhere
    model_labels = labels.copy()
    model_labels[3, 4, 5:9] = 0
    organs = ("liver", "spleen", "heart")
    spacing = (1.0, 1.0, 1.0)

    def rows(img: np.ndarray, prob: np.ndarray) -> list[tuple[float, ...]]:
        stats = organ_statistics(
            labels, img, organs, spacing, probability=prob, model_labels=model_labels
        )
        return [(s.voxels, s.mean_hu, s.sd_hu, s.confidence) for s in stats]

    histogram = rows(image, probability)
    weighted = rows(image.astype(np.float32), probability.astype(np.float64) / 255.0)
    monkeypatch.setattr(report, "_HISTOGRAM_BINS", 16)  # integer, but too wide a range
    wide = rows(image, probability)
    assert histogram[0][0] == 600 and histogram[1][1] == 1000
    for a, b, c in zip(histogram, weighted, wide, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, equal_nan=True)
        np.testing.assert_allclose(a, c, rtol=1e-9, equal_nan=True)


def test_report_files_hold_the_numbers(tmp_path: Path) -> None:
    labels, image, probability = known_case()
    rows = organ_statistics(labels, image, ("liver", "spleen", "heart"), (1.0, 1.0, 1.0))
    report = SegmentationReport(scan="scan.nii.gz", organs=rows, spacing_mm=(1.0, 1.0, 1.0))
    csv_path, json_path = report.write(*report_paths(tmp_path / "case01"))
    assert (csv_path.name, json_path.name) == ("case01.csv", "case01.json")
    table = list(csv.DictReader(csv_path.open()))
    assert [r["organ"] for r in table] == ["liver", "spleen", "heart"]
    assert float(table[0]["volume_ml"]) == pytest.approx(0.6)
    assert table[2]["mean_hu"] == ""  # empty organ: empty cell, not "nan"
    data = json.loads(json_path.read_text())
    assert data["organs"][1]["mean_hu"] == 1000
    assert data["organs"][2]["mean_hu"] is None  # JSON has no NaN
    assert data["voxel_volume_ml"] == pytest.approx(0.001)


def test_report_prefix_may_end_in_csv_or_json(tmp_path: Path) -> None:
    assert report_paths(tmp_path / "r.csv") == (tmp_path / "r.csv", tmp_path / "r.json")
    assert report_paths(tmp_path / "r.v2") == (tmp_path / "r.v2.csv", tmp_path / "r.v2.json")


def test_uncertainty_is_zero_when_sure_and_full_at_the_threshold() -> None:
    probability = np.array([[[0, 255, 128, 64, 191]]], dtype=np.uint8)
    u = uncertainty_percent(probability)
    assert u.dtype == np.uint8
    assert u[0, 0, 0] == 0 and u[0, 0, 1] == 0  # sure background, sure organ
    assert u[0, 0, 2] == 100  # p = 0.5
    assert u[0, 0, 3] == u[0, 0, 4] and 50 < u[0, 0, 3] < 100  # symmetric about 0.5


def test_the_json_names_the_scan_relative_to_its_own_folder(tmp_path: Path) -> None:
    scan = tmp_path / "scans" / "rabbit.nii.gz"
    report = SegmentationReport(scan=str(scan), organs=[], spacing_mm=(1.0, 1.0, 1.0))
    _, json_path = report.write(*report_paths(tmp_path / "results" / "rabbit"))
    assert json.loads(json_path.read_text())["scan"] == "../scans/rabbit.nii.gz"
