"""benchmarks/real_series_spread.py on a model whose answer is known: liver everywhere."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.inference.conftest import tiny_info, tiny_network
from vetseg.io.image import ImageMeta, write_image
from vetseg.models.files import save_model

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import real_series_spread  # noqa: E402


def test_dice_before_and_after_postprocess_and_confident_misses(tmp_path: Path) -> None:
    model = tiny_network()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([4.0, -4.0, -4.0, -4.0]))  # liver everywhere
    folder = save_model(model, tmp_path / "liver_everywhere", tiny_info(model))
    data = tmp_path / "pairs"
    data.mkdir()
    image = np.full((4, 32, 32), 40, dtype=np.int16)
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[:, 4:12, 4:20] = 5  # TotalSegmentator liver: 512 voxels
    labels[:, 20:24, 20:24] = 1  # spleen, one part...
    labels[:, 26:30, 26:30] = 1  # ...and another
    meta = ImageMeta(spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0))
    write_image(image, meta, data / "scan.nii.gz")
    write_image(labels, meta, data / "scan_seg.nii.gz")
    (data / "labels.json").write_text(json.dumps({"1": "spleen", "5": "liver"}))
    out = tmp_path / "spread.json"
    real_series_spread.main(
        [str(folder), "--data", str(data), "--parts", "liver", "--out", str(out)]
    )
    result = json.loads(out.read_text())["scans"]["scan"][str(folder)]
    liver, spleen = result["organs"]["liver"], result["organs"]["spleen"]
    expected = 2 * 512 / (512 + image.size)
    assert liver["dice"] == pytest.approx(expected, abs=1e-4)
    assert liver["dice_before_postprocess"] == pytest.approx(expected, abs=1e-4)
    assert liver["confident_miss_share"] == 0.0
    # The spleen is never predicted: Dice 0, and its probability (sigmoid(-4)) < 0.1 everywhere.
    assert spleen == {"dice": 0.0, "dice_before_postprocess": 0.0, "confident_miss_share": 1.0}
    assert "kidney_left" not in result["organs"]  # not in the reference: not scored
    # One predicted liver part, the whole 8 ml volume, lying mostly in background.
    assert result["liver_parts_before_postprocess"] == [
        {"ml": 8.2, "lies_in": "background", "share": pytest.approx(0.84, abs=0.01)}
    ]


def test_refuses_a_folder_without_pairs(tmp_path: Path) -> None:
    (tmp_path / "labels.json").write_text("{}")
    with pytest.raises(SystemExit, match="no NAME.nii.gz"):
        real_series_spread.main(["model", "--data", str(tmp_path), "--out", str(tmp_path / "o")])
