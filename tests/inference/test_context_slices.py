"""Models with neighbouring slices as input channels: model.json, engines, what they are fed."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.inference.conftest import ORGANS, ramp_volume, tiny_info
from vetseg.data.context import neighbour_indices
from vetseg.data.preprocess import to_model_grid
from vetseg.errors import ModelFileError
from vetseg.inference.engines import OnnxEngine, export_onnx_bytes, probability_difference
from vetseg.inference.segmenter import Segmenter
from vetseg.models.animal import AnimalOrganNet
from vetseg.models.files import load_model, read_model_info, save_model
from vetseg.models.human import HumanOrganNet
from vetseg.workflow.prelabel import uncertainty_score

SPACING = (1.0, 1.0)


def wide_network(context: int = 1, seed: int = 3) -> AnimalOrganNet:
    torch.manual_seed(seed)
    human = HumanOrganNet(n_organs=2, decoder_channels=(32, 24, 16, 16))
    return AnimalOrganNet.from_human(
        human, n_organs=len(ORGANS), refine_blocks=1, in_channels=1 + 2 * context
    ).eval()


@pytest.fixture(scope="module")
def wide_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved 3-channel model (random weights; all stem channels non-zero)."""
    model = wide_network()
    with torch.no_grad():
        model.stem[0].weight.normal_(0, 0.3)
    info = tiny_info(model)
    info.preprocess = dataclasses.replace(info.preprocess, context_slices=1)
    return save_model(model, tmp_path_factory.mktemp("wide") / "model", info)


class RecordingEngine:
    """Records every batch it is given; logits from the batch's first channel."""

    name = "recording"

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []

    def __call__(self, batch: np.ndarray, release: bool = False) -> np.ndarray:
        self.batches.append(np.array(batch))
        logits = np.full((batch.shape[0], len(ORGANS), *batch.shape[2:]), -5.0, np.float32)
        logits[:, 0] = batch[:, 0]
        return logits


def test_model_json_round_trip(wide_dir: Path) -> None:
    model, info = load_model(wide_dir)
    assert info.preprocess.context_slices == 1 and info.preprocess.in_channels == 3
    assert model.in_channels == 3
    record = json.loads((wide_dir / "model.json").read_text())
    assert record["preprocess"]["context_slices"] == 1
    assert record["architecture"]["in_channels"] == 3


def test_an_old_model_json_loads_as_one_channel(model_dir: Path, tmp_path: Path) -> None:
    import shutil

    old = tmp_path / "old"
    shutil.copytree(model_dir, old)
    record = json.loads((old / "model.json").read_text())
    record["preprocess"].pop("context_slices", None)
    record["architecture"].pop("in_channels", None)
    (old / "model.json").write_text(json.dumps(record))
    model, info = load_model(old)
    assert info.preprocess.context_slices == 0 and model.in_channels == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"context_slices": 9}, "context slices must be a whole number from 0 to 8"),
        ({"context_slices": -1}, "context slices must be a whole number from 0 to 8"),
        ({"context_slices": 0}, "takes 3 input channel"),
        ({"context_slices": 2}, "takes 3 input channel"),
    ],
)
def test_inconsistent_or_bad_context_in_model_json_is_refused(
    wide_dir: Path, tmp_path: Path, change: dict, message: str
) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(wide_dir, bad)
    record = json.loads((bad / "model.json").read_text())
    record["preprocess"].update(change)
    (bad / "model.json").write_text(json.dumps(record))
    with pytest.raises(ModelFileError, match=message):
        read_model_info(bad)


def test_onnx_export_agrees_with_torch(wide_dir: Path) -> None:
    model, info = load_model(wide_dir)
    engine = OnnxEngine(export_onnx_bytes(model, info))
    for batch in (1, 3):
        assert probability_difference(model, engine, 32, batch=batch, seed=batch, channels=3) < 1e-3


def test_openvino_agrees_with_torch(wide_dir: Path) -> None:
    pytest.importorskip("openvino")
    from vetseg.inference.openvino_engine import open_openvino

    model, info = load_model(wide_dir)
    payload = export_onnx_bytes(model, info)
    engine = open_openvino(info, "fp32", onnx=lambda: payload, threads=1)
    assert engine is not None
    assert probability_difference(model, engine, 32, batch=2, channels=3) < 1e-4


@pytest.mark.parametrize(("slices", "batch", "smooth"), [(7, 2, 0), (5, 3, 1), (1, 4, 0)])
def test_the_segmenter_feeds_each_slice_with_its_neighbours(
    wide_dir: Path, slices: int, batch: int, smooth: int
) -> None:
    model, info = load_model(wide_dir)
    engine = RecordingEngine()
    segmenter = Segmenter(model, info, batch_size=batch, engine=engine, smooth_slices=smooth)
    volume = ramp_volume((slices, 24, 20), seed=slices).astype(np.float32)
    segmenter.segment_canonical(volume, spacing_yx=SPACING)
    fed = np.concatenate(engine.batches)
    image, _ = to_model_grid(volume, SPACING, info.preprocess)
    expected = image[neighbour_indices(np.arange(slices), slices, 1)]
    assert fed.shape == (slices, 3, 32, 32)
    np.testing.assert_allclose(fed, expected, atol=1e-6)


def test_engines_label_alike_and_entropy_runs(wide_dir: Path) -> None:
    volume = ramp_volume((5, 40, 36), seed=2)
    labels = {}
    for engine in ("torch", "onnx"):
        segmenter = Segmenter.load(wide_dir, engine=engine, batch_size=2)
        labels[engine] = segmenter.segment_canonical(volume, spacing_yx=SPACING)[0]
    assert np.mean(labels["torch"] == labels["onnx"]) > 0.999
    model, info = load_model(wide_dir)
    entropy = uncertainty_score(model, info.preprocess, volume, batch_size=2)
    assert np.isfinite(entropy) and entropy >= 0
