"""benchmarks/intensity_gap.py: organ HU statistics of a dataset with known values."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import intensity_gap  # noqa: E402


def test_organ_statistics_read_the_hu_inside_each_label(tmp_path: Path) -> None:
    from vetseg.data.phantoms.dataset import write_msd_dataset
    from vetseg.io.image import ImageMeta

    image = np.full((4, 8, 8), -1000, dtype=np.int16)
    labels = np.zeros((4, 8, 8), dtype=np.uint8)
    image[:, :4] = np.arange(4 * 4 * 8, dtype=np.int16).reshape(4, 4, 8)  # organ 1: 0..127
    labels[:, :4] = 1
    image[:, 4:6] = -500  # organ 2: all -500
    labels[:, 4:6] = 2
    meta = ImageMeta((1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
    write_msd_dataset(tmp_path / "d", [("c", image, labels, meta)], ("liver", "lungs"), {})
    stats = intensity_gap.organ_statistics(tmp_path / "d", ("liver", "lungs", "spleen"))
    assert set(stats) == {"liver", "lungs"}  # spleen has no voxel: not reported
    assert stats["liver"]["voxels"] == 128
    assert stats["liver"]["median_hu"] == pytest.approx(63.5)
    assert stats["liver"]["p25_hu"] < stats["liver"]["median_hu"] < stats["liver"]["p75_hu"]
    assert stats["lungs"] == {
        "voxels": 64, "median_hu": -500.0, "p10_hu": -500.0, "p25_hu": -500.0,
        "p75_hu": -500.0, "p90_hu": -500.0,
    }  # fmt: skip
