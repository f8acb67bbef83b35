"""Shifted tilings (``PreprocessConfig.tilings``, ``Segmenter(tilings=)``, ``vetseg segment
--tilings``): several grids of tiles per slice, their logits averaged."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from tests.inference.conftest import ramp_volume, tiny_network
from tests.inference.test_cli_segment import run
from vetseg.config import PreprocessConfig
from vetseg.errors import InputError
from vetseg.inference.segmenter import Segmenter
from vetseg.io.image import ImageMeta, write_image
from vetseg.models.files import ModelInfo, new_model_id, read_model_info, save_model

ORGANS = ("liver", "spleen")
PHYSICAL = PreprocessConfig(size=32, spacing=1.0, intensity=(0.0, 200.0))


class CountingEngine:
    """Pixelwise logits (liver 4x, spleen -4x of the normalised image), or, with
    ``positional``, plus a ramp over the tile: an answer that depends on where a pixel sits
    in its tile, as a real network's does a little. Counts the tiles it is given."""

    name = "counting"

    def __init__(self, positional: bool = False) -> None:
        self.tiles = 0
        self.positional = positional

    def __call__(self, batch: np.ndarray, release: bool = False) -> np.ndarray:
        self.tiles += batch.shape[0]
        x = batch[:, 0]
        logits = np.stack([4.0 * x, -4.0 * x], axis=1).astype(np.float32)
        if self.positional:
            ramp = np.linspace(-1.0, 1.0, x.shape[-1], dtype=np.float32)
            logits[:, 0] += 2.0 * ramp[None, :, None] * ramp[None, None, :]
        return logits


def _segmenter(preprocess: PreprocessConfig, engine: CountingEngine, **kwargs) -> Segmenter:
    info = ModelInfo(new_model_id("test"), {"class": "Counting"}, ORGANS, preprocess, "test")
    return Segmenter(None, info, batch_size=8, engine=engine, **kwargs)


def _volume() -> np.ndarray:
    """Air around a 50 x 60 px body with a bright and a dark half."""
    volume = np.full((3, 80, 90), -1000.0, dtype=np.float32)
    volume[:, 15:65, 15:75] = 150.0
    volume[:, 15:65, 45:75] = -150.0
    return volume


def test_more_grids_run_more_tiles_and_a_pixelwise_answer_does_not_change() -> None:
    volume = _volume()
    answers, tiles = {}, {}
    for tilings in (1, 3, 5):
        engine = CountingEngine()
        segmenter = _segmenter(PHYSICAL, engine, tilings=tilings)
        assert segmenter.tilings == tilings
        answers[tilings] = segmenter.probabilities_canonical(volume, (1.0, 1.0))
        tiles[tilings] = engine.tiles
    assert tiles[3] == 3 * tiles[1] and tiles[5] == 5 * tiles[1]
    body = (slice(None), slice(None), slice(15, 65), slice(15, 75))
    np.testing.assert_allclose(answers[3][body], answers[1][body], atol=1e-5)
    np.testing.assert_allclose(answers[5][body], answers[1][body], atol=1e-5)


def test_a_position_dependent_answer_is_averaged_over_the_grids() -> None:
    volume = _volume()
    one = _segmenter(PHYSICAL, CountingEngine(True), tilings=1)
    five = _segmenter(PHYSICAL, CountingEngine(True), tilings=5)
    a = one.probabilities_canonical(volume, (1.0, 1.0))[:, 0, 15:65, 15:75]
    b = five.probabilities_canonical(volume, (1.0, 1.0))[:, 0, 15:65, 15:75]
    assert np.abs(a - b).max() > 0.05


def test_the_models_own_tilings_is_the_default_and_an_argument_overrides_it() -> None:
    own = dataclasses.replace(PHYSICAL, tilings=3)
    assert _segmenter(own, CountingEngine()).tilings == 3
    assert _segmenter(own, CountingEngine(), tilings=1).tilings == 1
    assert _segmenter(PHYSICAL, CountingEngine()).tilings == 1


@pytest.mark.parametrize("tilings", [0, 2, 4, 6, True, 3.0])
def test_a_bad_number_of_tilings_is_refused(tilings: object) -> None:
    with pytest.raises(InputError, match="tilings must be one of 1, 3, 5"):
        dataclasses.replace(PHYSICAL, tilings=tilings)
    with pytest.raises(InputError, match="tilings must be one of 1, 3, 5"):
        _segmenter(PHYSICAL, CountingEngine(), tilings=tilings)


def test_shifted_tilings_need_a_pixel_spacing() -> None:
    with pytest.raises(InputError, match="shifted tilings need a model with a pixel spacing"):
        PreprocessConfig(size=32, tilings=3)


def test_tilings_round_trip_in_model_json_and_old_files_have_one(tmp_path: Path) -> None:
    preprocess = dataclasses.replace(PHYSICAL, tilings=5)
    info = ModelInfo(new_model_id("test"), {"class": "Counting"}, ORGANS, preprocess, "test")
    record = info.to_json()
    assert ModelInfo.from_json(record, tmp_path).preprocess.tilings == 5
    record["preprocess"].pop("tilings")  # a model.json written before the field existed
    assert ModelInfo.from_json(record, tmp_path).preprocess.tilings == 1


@pytest.fixture(scope="module")
def physical_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved model with random weights that works at 1 mm pixels and runs 3 grids."""
    model = tiny_network(seed=1)
    info = ModelInfo(
        model_id=new_model_id("test"),
        architecture=model.architecture(),
        organs=("liver", "spleen", "kidney_left", "kidney_right"),
        preprocess=PreprocessConfig(size=32, spacing=1.0, intensity=(0.0, 200.0), tilings=3),
        stage="test",
    )
    return save_model(model, tmp_path_factory.mktemp("model") / "physical", info)


def test_segment_tilings_reaches_the_segmenter_and_the_report(
    physical_model_dir: Path, tmp_path: Path
) -> None:
    volume = ramp_volume((3, 40, 40))
    volume[:, :4] = -1000.0  # air: a HU scan
    scan = write_image(volume, ImageMeta((0.8, 0.8, 2.0), (0.0, 0.0, 0.0)), tmp_path / "c.nii.gz")
    assert read_model_info(physical_model_dir).preprocess.tilings == 3
    for flag, expected in (([], 3), (["--tilings", "5"], 5), (["--tilings", "1"], 1)):
        out = tmp_path / f"out{expected}"
        args = [physical_model_dir, scan, "--out", out / "seg.nii.gz", "--report", out / "r.json"]
        code, _, stderr = run("segment", *args, *flag)
        assert code == 0, stderr
        assert json.loads((out / "r.json").read_text())["settings"]["tilings"] == expected
    out = tmp_path / "bad"
    code, _, stderr = run("segment", physical_model_dir, scan, "--out", out, "--tilings", "2")
    assert code == 2 and "--tilings must be 1, 3 or 5, got 2" in stderr
    assert not out.exists()


def test_segment_tilings_on_a_legacy_model_is_refused_in_one_sentence(
    random_model_dir: Path, tmp_path: Path
) -> None:
    volume = ramp_volume((3, 20, 20))
    scan = write_image(volume, ImageMeta((0.8, 0.8, 2.0), (0.0, 0.0, 0.0)), tmp_path / "c.nii.gz")
    out = tmp_path / "seg.nii.gz"
    code, _, stderr = run("segment", random_model_dir, scan, "--out", out, "--tilings", "3")
    assert code == 2 and "shifted tilings need a model with a pixel spacing" in stderr
    assert "Traceback" not in stderr and not out.exists()
