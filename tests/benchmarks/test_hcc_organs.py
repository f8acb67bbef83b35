"""benchmarks/hcc_organs.py: the approximate reference and the scoring, on a synthetic volume
laid out as the HCC_009 series, with a model whose answer is known."""

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

import hcc_organs  # noqa: E402


def layout() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Fat with two bright kidneys (one with a dark sinus), a spleen, a bright liver beside the
    right kidney, bright oral contrast beside the spleen, two lung bases (one with a vessel), a
    small gas bubble and air around the body, in the series' layout; returns the image and the
    true masks."""
    z, y, x = np.mgrid[0:30, 0:420, 0:512]
    image = np.full(z.shape, -100, dtype=np.int16)
    right = (((y - 295) / 30.0) ** 2 + ((x - 160) / 25.0) ** 2 < 1.0) & (z < 20)
    left = (((y - 295) / 30.0) ** 2 + ((x - 355) / 25.0) ** 2 < 1.0) & (z >= 2) & (z < 18)
    sinus = (((y - 295) / 10.0) ** 2 + ((x - 375) / 8.0) ** 2 < 1.0) & left  # open to the side
    spleen = (((y - 260) / 80.0) ** 2 + ((x - 460) / 30.0) ** 2 < 1.0) & (z >= 10)
    stomach = (((y - 200) / 40.0) ** 2 + ((x - 400) / 20.0) ** 2 < 1.0) & (z >= 10)
    liver = (x < 120) & (y > 150) & (y < 400)  # touches the right kidney's box, not the kidney
    image[right | left | liver] = 190
    image[sinus] = -80
    image[spleen] = 130
    image[stomach] = 320  # positive oral contrast, next to the spleen
    lungs = (((y - 200) / 60.0) ** 2 + ((np.abs(x - 256) - 120) / 45.0) ** 2 < 1.0) & (z >= 22)
    image[lungs] = -850
    image[lungs & ((y - 200) ** 2 + (x - 136) ** 2 < 25)] = 40  # a vessel inside
    image[(((y - 120) / 8.0) ** 2 + ((x - 256) / 8.0) ** 2 < 1.0) & (z >= 20)] = -900  # gas
    image[:, :12] = -1000  # air in front of the body, touching the edge
    truth = {
        "kidney_right": right,
        "kidney_left": left & ~sinus,
        "spleen": spleen & ~stomach,
        "lungs": lungs,
    }
    return image, truth


def test_reference_finds_the_organs_not_their_neighbours() -> None:
    image, truth = layout()
    found = hcc_organs.approximate_organs(image)
    assert set(found) == {"kidney_right", "kidney_left", "spleen", "lungs"}
    for organ, mask in found.items():
        dice = 2 * (mask & truth[organ]).sum() / (mask.sum() + truth[organ].sum())
        assert dice > 0.95, organ
    assert not found["kidney_right"][:, :, :110].any()  # the liver stays out
    assert not (found["spleen"] & (image > 300)).any()  # so does the oral contrast
    # The kidneys' slices only: nothing above slice 24 even where a kidney continues.
    assert not found["kidney_right"][24:].any()
    # The lungs hold their vessel; the small gas bubble and the outer air stay out.
    assert found["lungs"][25, 200, 136]
    assert not found["lungs"][25, 120, 256]
    assert not found["lungs"][:, :12].any()


def test_reference_refuses_another_layout() -> None:
    with pytest.raises(ValueError, match="HCC_009"):
        hcc_organs.approximate_organs(np.zeros((10, 100, 100), dtype=np.int16))
    with pytest.raises(ValueError, match="nothing of 120-330 HU"):
        hcc_organs.approximate_organs(np.full((30, 420, 512), -100, dtype=np.int16))
    image, truth = layout()
    image[truth["lungs"]] = -100
    with pytest.raises(ValueError, match="no inner part below -400 HU"):
        hcc_organs.approximate_organs(image)


def test_scores_a_model_that_calls_everything_left_kidney(tmp_path: Path) -> None:
    image, _ = layout()
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
    out = tmp_path / "organs.json"
    hcc_organs.main([str(folder), "--scan", str(scan), "--out", str(out)])
    row = json.loads(out.read_text())["models"][str(folder)]
    found = hcc_organs.approximate_organs(image)
    reference_left = found["kidney_left"].sum()
    organs = row["organs"]
    assert organs["kidney_left"]["dice"] == pytest.approx(
        2 * reference_left / (reference_left + image.size), abs=1e-3
    )
    assert organs["kidney_left"]["reference_called"] == {"kidney_left": 1.0}
    # The spleen is never predicted: Dice 0, all of it called kidney_left.
    assert organs["spleen"]["dice"] == 0.0
    assert organs["spleen"]["reference_called"] == {"kidney_left": 1.0}
    # The tiny model has no right kidney: not scored, not counted in the kidneys' mean.
    assert organs["kidney_right"] is None
    assert row["kidney_mean_dice"] == organs["kidney_left"]["dice"]


def test_cut_field_keeps_the_patient_where_it_was_and_cuts_the_references_alike() -> None:
    from vetseg.io.image import ImageMeta

    image = np.arange(2 * 10 * 12, dtype=np.float32).reshape(2, 10, 12)
    meta = ImageMeta(spacing=(0.5, 0.5, 2.5), origin=(-3.0, -2.5, 7.0))
    reference = {"spleen": image > 100}
    cut, cut_meta, cut_reference = hcc_organs.cut_field(image, meta, reference, 3.0)
    assert cut.shape == (2, 6, 6) and cut_reference["spleen"].shape == (2, 6, 6)
    # Rows 2..7 and columns 3..8 of the original: the voxel's world position is unchanged.
    np.testing.assert_array_equal(cut, image[:, 2:8, 3:9])
    np.testing.assert_array_equal(cut_reference["spleen"], reference["spleen"][:, 2:8, 3:9])
    assert cut_meta.origin == (-3.0 + 3 * 0.5, -2.5 + 2 * 0.5, 7.0)
    with pytest.raises(ValueError, match="does not fit"):
        hcc_organs.cut_field(image, meta, reference, 6.0)


def test_resample_inplane_keeps_the_patient_and_the_organ_volumes() -> None:
    from vetseg.io.image import ImageMeta

    yy, xx = np.mgrid[0:40, 0:50]
    disc = (yy - 20) ** 2 + (xx - 24) ** 2 < 12**2
    image = np.stack([np.where(disc, 100.0, -50.0)] * 2).astype(np.float32)
    meta = ImageMeta(spacing=(0.75, 0.75, 2.5), origin=(-10.0, 5.0, 3.0))
    reference = {"spleen": np.stack([disc, disc])}
    fine, fine_meta, fine_reference = hcc_organs.resample_inplane(image, meta, reference, 0.5)
    assert fine.shape == (2, 60, 75) and fine_reference["spleen"].shape == (2, 60, 75)
    assert fine_meta.spacing == (0.5, 0.5, 2.5)
    # The first pixel's centre moves by half the change of pixel size; the field stays put.
    assert fine_meta.origin == pytest.approx((-10.0 - 0.125, 5.0 - 0.125, 3.0))
    area = reference["spleen"].sum() * 0.75**2
    assert fine_reference["spleen"].sum() * 0.5**2 == pytest.approx(area, rel=0.03)

    # The disc's centre in mm is where it was: exactly for the image (linear), within half an
    # input pixel for the reference (nearest sampling rounds its edges).
    def centre(weights: np.ndarray, grid) -> tuple[float, float]:
        ys, xs = np.mgrid[0 : weights.shape[0], 0 : weights.shape[1]]
        w = weights / weights.sum()
        x = grid.origin[0] + float((xs * w).sum()) * grid.spacing[0]
        return x, grid.origin[1] + float((ys * w).sum()) * grid.spacing[1]

    truth = (-10.0 + 24 * 0.75, 5.0 + 20 * 0.75)
    assert centre(fine[0] + 50.0, fine_meta) == pytest.approx(truth, abs=0.02)
    assert centre(fine_reference["spleen"][0].astype(float), fine_meta) == pytest.approx(
        truth, abs=0.375
    )
    assert fine[0][fine_reference["spleen"][0]].mean() > 90  # the image moved with it
    with pytest.raises(ValueError, match="positive"):
        hcc_organs.resample_inplane(image, meta, reference, 0.0)


def test_shift_organs_moves_only_the_named_organs() -> None:
    image = np.zeros((1, 3, 3), dtype=np.int16)
    reference = {"kidney_left": np.zeros((1, 3, 3), bool), "spleen": np.ones((1, 3, 3), bool)}
    reference["kidney_left"][0, 1, 1] = True
    shifted = hcc_organs.shift_organs(image, reference, ("kidney_left",), 60.0)
    assert shifted[0, 1, 1] == 60.0 and shifted.sum() == 60.0
    assert image.sum() == 0  # the scan itself is not changed
