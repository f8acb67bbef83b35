"""benchmarks/hcc_kidneys.py: the approximate kidney reference and the scoring, on a synthetic
volume laid out as the HCC_009 series, with a model whose answer is known."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.inference.conftest import ORGANS, tiny_info, tiny_network
from vetseg.io.image import ImageMeta, write_image
from vetseg.models.files import save_model

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import hcc_kidneys  # noqa: E402


def layout() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fat with two bright kidneys (one with a dark sinus) and a bright liver beside the right
    one, in the series' layout; returns the image and the true kidney masks."""
    z, y, x = np.mgrid[0:30, 0:360, 0:512]
    image = np.full(z.shape, -100, dtype=np.int16)
    right = (((y - 295) / 30.0) ** 2 + ((x - 160) / 25.0) ** 2 < 1.0) & (z < 20)
    left = (((y - 295) / 30.0) ** 2 + ((x - 355) / 25.0) ** 2 < 1.0) & (z >= 2) & (z < 18)
    sinus = (((y - 295) / 10.0) ** 2 + ((x - 375) / 8.0) ** 2 < 1.0) & left  # open to the side
    liver = (x < 120) & (y > 150)  # touches the right kidney's box, not the kidney
    image[right | left | liver] = 190
    image[sinus] = -80
    return image, right, left & ~sinus


def test_reference_finds_the_kidneys_not_the_liver_beside_them() -> None:
    image, right, left = layout()
    found = hcc_kidneys.approximate_kidneys(image)
    for organ, truth in (("kidney_right", right), ("kidney_left", left)):
        mask = found[organ]
        dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
        assert dice > 0.95, organ
        assert not mask[:, :, :110].any()  # the liver stays out
    # The box's slices only: nothing above slice 24 even where a kidney continues.
    assert not found["kidney_right"][24:].any()


def test_reference_refuses_another_layout() -> None:
    with pytest.raises(ValueError, match="HCC_009"):
        hcc_kidneys.approximate_kidneys(np.zeros((10, 100, 100), dtype=np.int16))
    with pytest.raises(ValueError, match="no bright part"):
        hcc_kidneys.approximate_kidneys(np.full((30, 360, 512), -100, dtype=np.int16))


def test_scores_a_model_that_calls_everything_left_kidney(tmp_path: Path) -> None:
    image, right, left = layout()
    model = tiny_network()
    index = ORGANS.index("kidney_left")
    with torch.no_grad():
        model.head.weight.zero_()
        bias = torch.full((len(ORGANS),), -4.0)
        bias[index] = 4.0
        model.head.bias.copy_(bias)
    folder = save_model(model, tmp_path / "left_everywhere", tiny_info(model))
    scan = tmp_path / "scan.nii.gz"
    write_image(image, ImageMeta(spacing=(1.0, 1.0, 2.5), origin=(0.0, 0.0, 0.0)), scan)
    out = tmp_path / "kidneys.json"
    hcc_kidneys.main([str(folder), "--scan", str(scan), "--out", str(out)])
    row = json.loads(out.read_text())["models"][str(folder)]
    found = hcc_kidneys.approximate_kidneys(image)
    reference_left = found["kidney_left"].sum()
    kidneys = row["kidneys"]
    assert kidneys["kidney_left"]["dice"] == pytest.approx(
        2 * reference_left / (reference_left + image.size), abs=1e-3
    )
    assert kidneys["kidney_left"]["reference_called"] == {"kidney_left": 1.0}
    # The tiny model has no right kidney: not scored, not counted in the mean.
    assert kidneys["kidney_right"] is None
    assert row["mean_dice"] == kidneys["kidney_left"]["dice"]
