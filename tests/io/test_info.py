"""describe / format_description: kind of volume, labels with counts and honest name sources."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.io.helpers import make_meta
from vetseg.io.image import ImageMeta, write_dicom_series, write_image
from vetseg.io.info import describe, format_description

RAS = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


def test_ct_volume(tmp_path: Path, ct_volume: np.ndarray) -> None:
    meta = ImageMeta((0.5, 0.5, 2.0), (0.0, 0.0, 0.0), RAS)
    d = describe(write_image(ct_volume, meta, tmp_path / "ct.nii.gz"))
    assert d["kind"] == "CT (HU)"
    assert d["shape"] == [5, 7, 9] and d["size"] == [9, 7, 5]
    assert d["orientation"] == "RAS"
    assert d["min"] == int(ct_volume.min()) and d["max"] == int(ct_volume.max())
    assert d["mean"] == pytest.approx(float(ct_volume.mean()))
    assert d["field_of_view_mm"] == pytest.approx([4.5, 3.5, 10.0])
    assert "labels" not in d
    text = format_description(d)
    assert "RAS" in text and "0.5 x 0.5 x 2 mm" in text and "CT (HU)" in text


def test_noisy_uint8_image_is_not_a_label_map(tmp_path: Path) -> None:
    """Rescaled micro-CT (uint8 0..255, few distinct values) must not pass for labels."""
    image = np.random.default_rng(0).integers(0, 200, size=(6, 20, 20)).astype(np.uint8)
    d = describe(write_image(image, make_meta(), tmp_path / "head.nii.gz"))
    assert d["kind"] == "image"
    assert "not Hounsfield" in d["kind_reason"] and "rescale" not in d["kind_reason"]


def test_raw_scanner_values_get_the_intercept_hint(tmp_path: Path, ct_volume: np.ndarray) -> None:
    """A CT stored as raw values (HU + 1024, unsigned): not HU, and info says how to read it."""
    hu = ct_volume.astype(np.int32)
    hu[0, 0, :3] = (-1000, 700, 1500)  # air, bone, dense bone
    raw = (hu + 1024).clip(0, 4095).astype(np.uint16)
    d = describe(write_image(raw, make_meta(), tmp_path / "raw.nii.gz"))
    assert d["kind"] == "image"
    assert (
        "HU = value - 1024" in d["kind_reason"] and "--rescale-intercept -1024" in d["kind_reason"]
    )
    assert (
        describe(write_image(hu.astype(np.int16), make_meta(), tmp_path / "hu.nii.gz"))["kind"]
        == "CT (HU)"
    )


def test_label_map_names_from_labels_json(tmp_path: Path, label_volume: np.ndarray) -> None:
    (tmp_path / "labels.json").write_text(json.dumps({"1": "skin", "2": "skeleton", "5": "cere"}))
    meta = ImageMeta((0.2, 0.2, 0.5), (0.0, 0.0, 0.0))
    d = describe(write_image(label_volume, meta, tmp_path / "atlas.nii.gz"))
    assert d["kind"] == "label map"
    assert d["label_names_source"].startswith("labels.json")
    rows = {row["id"]: row for row in d["labels"]}
    assert rows[1]["name"] == "skin" and rows[5]["name"] == "cere"
    assert rows[1]["voxels"] == int((label_volume == 1).sum())
    assert rows[2]["volume_ml"] == pytest.approx((label_volume == 2).sum() * 0.02 / 1000)
    assert rows[0]["name"] == "background"
    text = format_description(d)
    assert "skeleton" in text and "3 ids" in text


def test_msd_dataset_json_in_the_parent_folder(tmp_path: Path, label_volume: np.ndarray) -> None:
    labels = {"background": 0, "liver": 1, "spleen": 2, "tumour": 5}  # nnU-Net v2 style
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": labels}))
    d = describe(write_image(label_volume, make_meta(), tmp_path / "labelsTr" / "c1.nii.gz"))
    assert {row["id"]: row["name"] for row in d["labels"]}[5] == "tumour"
    assert d["label_names_source"].startswith("dataset.json")


def test_vocabulary_guesses_say_so(tmp_path: Path, label_volume: np.ndarray) -> None:
    d = describe(write_image(label_volume, make_meta(), tmp_path / "a.nii.gz"))
    assert "core organs" in d["label_names_source"] and "guess" in d["label_names_source"]
    assert {row["id"]: row["name"] for row in d["labels"]}[5] == "lungs"

    big = label_volume * 20  # ids 20, 40, 100: TotalSegmentator ids
    d = describe(write_image(big, make_meta(), tmp_path / "b.nii.gz"))
    assert "TotalSegmentator" in d["label_names_source"]
    assert {row["id"]: row["name"] for row in d["labels"]}[20] == "colon"


def test_seg_nrrd_names_win(tmp_path: Path, label_volume: np.ndarray) -> None:
    path = tmp_path / "x.seg.nrrd"
    write_image(label_volume, make_meta(), path, segment_names={1: "a", 2: "b", 5: "c"})
    d = describe(path)
    assert d["label_names_source"] == "segment names in the file"
    assert [row["name"] for row in d["labels"]] == ["background", "a", "b", "c"]


def test_dicom_series_info(tmp_path: Path, ct_volume: np.ndarray) -> None:
    write_dicom_series(ct_volume, make_meta(), tmp_path / "series")
    d = describe(tmp_path / "series")
    assert d["format"] == "DICOM" and d["series_uid"].startswith("2.25.")
    assert "DICOM series" in format_description(d)
