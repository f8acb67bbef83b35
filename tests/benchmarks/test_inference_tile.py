"""benchmarks/inference_tile.py --set: a model re-tiled is a new model with the same weights."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import inference_tile  # noqa: E402

from vetseg.config import PreprocessConfig  # noqa: E402
from vetseg.models.files import ModelInfo, load_model, new_model_id, save_model  # noqa: E402
from vetseg.models.human import HumanOrganNet  # noqa: E402


def _model(folder: Path) -> ModelInfo:
    net = HumanOrganNet(n_organs=2).eval()
    preprocess = PreprocessConfig(size=64, spacing=3.0, intensity=(0.0, 100.0))
    info = ModelInfo(
        new_model_id("human"), net.architecture(), ("liver", "bone"), preprocess, "human"
    )
    save_model(net, folder, info, half=True)
    (folder / "MADE_BY.txt").write_text("recipe\n")
    (folder / "openvino-fp32.blob").write_bytes(b"compiled for 64 px")
    return info


def test_set_in_place_keeps_the_weights_under_a_new_id_with_its_lineage(tmp_path: Path) -> None:
    folder = tmp_path / "human_model"
    before = _model(folder)
    net_before, _ = load_model(folder)
    inference_tile.main([str(folder), "--set", "96", "--dest", str(folder)])
    net_after, after = load_model(folder)
    assert after.preprocess.tile == 96 and after.preprocess.size == 64
    assert after.model_id != before.model_id and after.parent == before.model_id
    assert after.training["inference_tile"]["weights_of"] == before.model_id
    assert after.weights_dtype == "float16"
    for name, tensor in net_before.state_dict().items():
        assert torch.equal(tensor, net_after.state_dict()[name]), name
    made_by = (folder / "MADE_BY.txt").read_text()
    assert made_by.startswith("recipe\n") and "run on 96 px tiles" in made_by
    assert not (folder / "openvino-fp32.blob").exists()  # compiled for the old tile
    assert sorted(p.name for p in tmp_path.iterdir()) == ["human_model"]  # no staging left


def test_set_to_another_folder_leaves_the_source_alone(tmp_path: Path) -> None:
    before = _model(tmp_path / "a")
    source_json = (tmp_path / "a" / "model.json").read_text()
    inference_tile.main([str(tmp_path / "a"), "--set", "128", "--dest", str(tmp_path / "b")])
    assert (tmp_path / "a" / "model.json").read_text() == source_json
    _, copy = load_model(tmp_path / "b")
    assert copy.parent == before.model_id and copy.preprocess.tile_size == 128
