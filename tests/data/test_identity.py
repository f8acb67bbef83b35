"""Case identity by content (vetseg.data.identity) and its record in splits.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from vetseg.data.datasets import (
    load_case,
    open_dataset,
    read_split_hashes,
    read_splits,
    write_splits,
)
from vetseg.data.identity import KnownCases
from vetseg.errors import InputError

SHAPE = (5, 12, 14)  # z, y, x


def _scan(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1000, 1000, size=SHAPE).astype(np.int16)


def _write(path: Path, array: np.ndarray, spacing=(0.8, 0.8, 2.0), direction=None) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    if direction is not None:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path))


def _pair(folder: Path, name: str, array: np.ndarray, ending: str = ".nii.gz", **geometry) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    _write(folder / f"{name}{ending}", array, **geometry)
    _write(folder / f"{name}_seg{ending}", (array > 500).astype(np.uint8), **geometry)


def _digests(folder: Path) -> dict[str, str]:
    dataset = open_dataset(folder, organs=("liver",))
    return {c.case_id: load_case(dataset, c).digest for c in dataset.cases}


def test_the_same_scan_has_one_digest_under_any_name_format_or_axis_order(tmp_path: Path) -> None:
    scan = _scan(0)
    _pair(tmp_path / "a", "rabbit_001", scan)
    _pair(tmp_path / "b", "lab_rabbit_001", scan, ending=".nrrd")
    # Stored with x and y swapped on disk, the header saying so: the same voxels in space.
    swapped = (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    _pair(tmp_path / "c", "other", np.swapaxes(scan, 1, 2).copy(), direction=swapped)
    (digest_a,) = _digests(tmp_path / "a").values()
    assert _digests(tmp_path / "b") == {"lab_rabbit_001": digest_a}
    assert list(_digests(tmp_path / "c").values()) == [digest_a]


def test_another_scan_or_another_spacing_has_another_digest(tmp_path: Path) -> None:
    _pair(tmp_path / "a", "x", _scan(0))
    _pair(tmp_path / "b", "x", _scan(1))  # same name, another scan
    _pair(tmp_path / "c", "x", _scan(0), spacing=(0.8, 0.8, 2.5))
    digests = [_digests(tmp_path / k)["x"] for k in "abc"]
    assert len(set(digests)) == 3


def test_known_cases_match_by_digest_and_fall_back_to_names() -> None:
    split = {
        "train": ["a", "b"], "val": ["c"], "test": ["d"],
        "hashes": {"a": "h_a", "c": "h_c", "d": "h_d"},
    }  # fmt: skip
    known = KnownCases.from_split(split)
    assert known == KnownCases(hashes=frozenset({"h_a", "h_c"}), names=frozenset({"b"}))
    assert known.contains("renamed", "h_c") and known.contains("b", None)
    assert not known.contains("a", "h_other")  # a name alone does not match a digested case
    assert not known.contains("d", "h_d")  # test cases are not seen
    assert not KnownCases() and (KnownCases() | known) == known


def test_splits_json_records_digests_and_old_files_still_read(tmp_path: Path) -> None:
    splits = {"train": ["a", "b"], "val": ["c"], "test": ["d"]}
    path = tmp_path / "splits.json"
    write_splits(path, splits, {"a": "1", "b": "2", "c": "3", "d": "4"})
    assert read_splits(path) == splits
    assert read_split_hashes(path) == {"a": "1", "b": "2", "c": "3", "d": "4"}
    path.write_text(json.dumps(splits))  # written before digests were recorded
    assert read_splits(path) == splits and read_split_hashes(path) == {}
    with pytest.raises(InputError, match="no split"):
        write_splits(path, splits, {"zz": "1"})
