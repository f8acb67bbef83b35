"""--smooth-slices: organ probabilities averaged across neighbouring slices; consistency."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.inference.conftest import IntensityEngine, ramp_volume
from vetseg.cli import app
from vetseg.inference.consistency import neighbour_dice, slice_consistency
from vetseg.inference.segmenter import Segmenter, slice_weights
from vetseg.io.image import ImageMeta, read_label, write_image
from vetseg.models.files import load_model

SPACING = (1.0, 1.0)


def segmenter(model_dir: Path, smooth: int, batch_size: int = 2) -> Segmenter:
    model, info = load_model(model_dir)
    return Segmenter(
        model, info, batch_size=batch_size, engine=IntensityEngine(), smooth_slices=smooth
    )


def reference_smoothing(probs: np.ndarray, radius: int, threshold: float = 0.5) -> np.ndarray:
    """The same thing written plainly: a weighted mean over the slices that exist."""
    weights = slice_weights(radius)
    total = probs.shape[0]
    labels = np.zeros((total, *probs.shape[2:]), dtype=np.uint8)
    for k in range(total):
        near = range(max(0, k - radius), min(total, k + radius + 1))
        w = np.array([weights[abs(j - k)] for j in near])
        mean = np.tensordot(w / w.sum(), probs[list(near)], axes=1)
        best = mean.argmax(axis=0)
        labels[k] = np.where(mean.max(axis=0) > threshold, best + 1, 0)
    return labels


def test_slice_weights_are_binomial() -> None:
    np.testing.assert_array_equal(slice_weights(1), [2, 1])
    np.testing.assert_array_equal(slice_weights(2), [6, 4, 1])


@pytest.mark.parametrize(("radius", "slices", "batch"), [(1, 7, 2), (2, 7, 3), (2, 2, 4)])
def test_streamed_smoothing_equals_the_plain_weighted_mean(
    model_dir: Path, radius: int, slices: int, batch: int
) -> None:
    volume = ramp_volume((slices, 24, 20), seed=radius).astype(np.float32)
    volume[slices // 2, :8] += 900  # one slice unlike its neighbours
    plain = segmenter(model_dir, 0, batch)
    probs = plain.probabilities_canonical(volume, SPACING)
    smoothed = segmenter(model_dir, radius, batch)
    labels, prob = smoothed.segment_canonical(volume, spacing_yx=SPACING)
    expected = reference_smoothing(probs, radius)
    assert np.mean(labels == expected) > 0.999  # float sums in another order: ties at 0.5
    assert not np.array_equal(labels, plain.segment_canonical(volume, spacing_yx=SPACING)[0])
    assert prob.dtype == np.uint8 and prob.max() > 200


def test_smoothing_fills_a_slice_that_decided_alone(model_dir: Path) -> None:
    volume = np.full((9, 24, 20), -50.0, dtype=np.float32)
    volume[:, :, :10] = 400.0  # bright left half: liver in every slice
    volume[4, :12, :10] = -50.0  # one slice where half of it did not come out
    raw, _ = segmenter(model_dir, 0).segment_canonical(volume, spacing_yx=SPACING)
    smooth, _ = segmenter(model_dir, 2).segment_canonical(volume, spacing_yx=SPACING)
    assert not (raw[4, :12, :10] == 1).any()  # the slice decided alone
    # Weights 6, 4, 1: the neighbours' 10/16 outvote the slice's 6/16.
    assert (smooth[4, :, :10] == 1).all()
    assert neighbour_dice(raw, 1) < 0.95 < neighbour_dice(smooth, 1) == pytest.approx(1.0)


def test_neighbour_dice_and_consistency() -> None:
    steady = np.zeros((4, 6, 6), dtype=np.uint8)
    steady[:, 1:4, 1:4] = 1
    flicker = steady.copy()
    flicker[1::2] = 0
    assert neighbour_dice(steady, 1) == 1.0 and neighbour_dice(flicker, 1) == 0.0
    assert neighbour_dice(steady, 2) is None  # never present
    result = slice_consistency(flicker, steady, ["liver", "spleen"])
    assert result["liver"] == {"prediction": 0.0, "reference": 1.0, "gap": 1.0}
    assert result["spleen"]["gap"] is None


def test_cli_smooth_slices(model_dir: Path, tmp_path: Path) -> None:
    scan = write_image(
        ramp_volume((6, 24, 20)), ImageMeta((1.0, 1.0, 2.0), (0.0, 0.0, 0.0)), tmp_path / "s.nii"
    )
    out = tmp_path / "seg.nii.gz"
    args = ["segment", str(model_dir), str(scan), "--out", str(out), "--smooth-slices", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (read_label(out)[0] == 1).all()  # the liver-everywhere model, smoothed: still all
    args[-1] = "-1"
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "--smooth-slices" in result.stderr
