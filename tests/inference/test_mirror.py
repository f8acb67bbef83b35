"""Mirror test-time augmentation (``Segmenter(mirror=True)``, ``vetseg segment --mirror``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.inference.conftest import ramp_volume
from tests.inference.test_cli_segment import run
from vetseg.config import PreprocessConfig
from vetseg.inference.segmenter import Segmenter
from vetseg.io.image import ImageMeta, read_label, write_image
from vetseg.models.files import ModelInfo, new_model_id

ORGANS = ("liver", "kidney_left", "kidney_right")


class PointEngine:
    """Logits from each pixel alone: liver never, kidney_left 2x, kidney_right -x + 1
    (x: the normalised image). A pixelwise "network" makes the mirrored pass's answer known."""

    name = "point"

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, batch: np.ndarray, release: bool = False) -> np.ndarray:
        self.calls += 1
        x = batch[:, 0]
        logits = np.full((x.shape[0], len(ORGANS), *x.shape[1:]), -20.0, dtype=np.float32)
        logits[:, 1] = 2.0 * x
        logits[:, 2] = 1.0 - x
        return logits


class ShiftEngine(PointEngine):
    """Not pixelwise and not symmetric: kidney_left also sees the pixel to its right."""

    def __call__(self, batch: np.ndarray, release: bool = False) -> np.ndarray:
        logits = super().__call__(batch, release)
        logits[:, 1] += 3.0 * np.roll(batch[:, 0], -1, axis=-1)
        return logits


def _segmenter(mirror: bool, engine: PointEngine | None = None) -> tuple[Segmenter, PointEngine]:
    preprocess = PreprocessConfig(size=32, spacing=1.0, intensity=(0.0, 200.0))
    info = ModelInfo(new_model_id("test"), {"class": "PointEngine"}, ORGANS, preprocess, "test")
    engine = engine or PointEngine()
    return Segmenter(None, info, batch_size=8, engine=engine, mirror=mirror), engine


def _logit(p: np.ndarray) -> np.ndarray:
    p = p.astype(np.float64)
    return np.log(p / (1.0 - p))


def test_the_mirrored_answer_comes_back_aligned_with_paired_organs_swapped() -> None:
    """With a pixelwise network, mirroring the slice, mirroring the answer back and swapping
    kidney_left and kidney_right gives each kidney the mean of the two kidneys' logits at the
    same pixel; a missed swap or a misaligned flip would not (the volume is not symmetric)."""
    volume = ramp_volume((3, 24, 20)).astype(np.float32)
    assert not np.array_equal(volume, volume[..., ::-1])
    single, _ = _segmenter(False)
    both, engine = _segmenter(True)
    plain = _logit(single.probabilities_canonical(volume, (1.0, 1.0)))
    mirrored = _logit(both.probabilities_canonical(volume, (1.0, 1.0)))
    expected = (plain[:, 1] + plain[:, 2]) / 2.0
    np.testing.assert_allclose(mirrored[:, 1], expected, atol=1e-3)
    np.testing.assert_allclose(mirrored[:, 2], expected, atol=1e-3)
    np.testing.assert_allclose(mirrored[:, 0], plain[:, 0], atol=1e-3)  # unpaired: unchanged
    assert engine.calls == 2  # the network runs twice per batch


def test_mirroring_a_mirrored_scan_gives_the_mirrored_answer_with_sides_swapped() -> None:
    """The augmented answer is left-right equivariant: the mirror image gets the mirror of the
    probabilities, kidney_left and kidney_right exchanged (whatever the network: here one that
    is itself not equivariant, as the last lines show)."""
    volume = ramp_volume((3, 24, 20)).astype(np.float32)
    mirror = np.ascontiguousarray(volume[..., ::-1])
    swap = [0, 2, 1]
    segmenter, _ = _segmenter(True, ShiftEngine())
    answer = segmenter.probabilities_canonical(volume, (1.0, 1.0))
    on_mirror = segmenter.probabilities_canonical(mirror, (1.0, 1.0))
    np.testing.assert_allclose(on_mirror, answer[:, swap, :, ::-1], atol=1e-5)
    assert np.abs(answer[:, 1] - answer[:, 2]).max() > 0.2  # the two sides do differ
    single, _ = _segmenter(False, ShiftEngine())
    plain = single.probabilities_canonical(volume, (1.0, 1.0))
    plain_mirror = single.probabilities_canonical(mirror, (1.0, 1.0))
    assert np.abs(plain_mirror - plain[:, swap, :, ::-1]).max() > 0.1


def test_segment_mirror_reaches_the_segmenter_and_the_report(
    random_model_dir: Path, tmp_path: Path
) -> None:
    volume = ramp_volume((4, 20, 20))
    meta = ImageMeta((0.8, 0.8, 2.0), (0.0, 0.0, 0.0))
    scan = write_image(volume, meta, tmp_path / "case.nii.gz")
    for flag in ("", "--mirror"):
        out = tmp_path / f"out{flag}"
        args = [random_model_dir, scan, "--out", out / "seg.nii.gz", "--report", out / "r.json"]
        code, _, stderr = run("segment", *args, *([flag] if flag else []))
        assert code == 0, stderr
        assert json.loads((out / "r.json").read_text())["settings"]["mirror"] is bool(flag)
        labels, _ = read_label(out / "seg.nii.gz", reference=meta, reference_shape=volume.shape)
        assert labels.shape == volume.shape
