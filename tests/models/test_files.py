"""Model files: safetensors + model.json round trip, lineage, and refusal of anything else."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from vetseg.config import PreprocessConfig
from vetseg.errors import ModelFileError
from vetseg.models.animal import AnimalOrganNet
from vetseg.models.files import (
    META_NAME,
    WEIGHTS_NAME,
    ModelInfo,
    load_model,
    new_model_id,
    read_model_info,
    save_model,
)
from vetseg.models.human import HumanOrganNet


def _tiny_animal() -> AnimalOrganNet:
    torch.manual_seed(0)
    human = HumanOrganNet(n_organs=3, decoder_channels=(32, 24, 16, 16))
    return AnimalOrganNet.from_human(human, n_organs=2, refine_blocks=1)


def _info(model: torch.nn.Module, parent: str | None = "human-x") -> ModelInfo:
    return ModelInfo(
        model_id=new_model_id("transfer"),
        architecture=model.architecture(),
        organs=("liver", "spleen"),
        preprocess=PreprocessConfig(size=64),
        stage="transfer",
        species="rabbit",
        parent=parent,
        training={"split": {"train": ["a"], "val": ["b"], "test": []}},
        metrics={"val_mean_dice": 0.5},
        synthetic_data=True,
    )


def test_round_trip_gives_the_same_outputs(tmp_path: Path) -> None:
    model = _tiny_animal().eval()
    save_model(model, tmp_path / "m", _info(model))
    loaded, info = load_model(tmp_path / "m")
    assert isinstance(loaded, AnimalOrganNet) and not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    x = torch.randn(1, 1, 64, 64)
    assert torch.equal(model(x), loaded(x))
    assert info.parent == "human-x" and info.organs == ("liver", "spleen")
    assert info.preprocess.size == 64 and info.synthetic_data
    meta = json.loads((tmp_path / "m" / META_NAME).read_text())
    assert meta["organ_ids"] == {"liver": 1, "spleen": 2}
    assert meta["training"]["split"]["val"] == ["b"]


def test_data_note_says_what_the_training_data_was(tmp_path: Path) -> None:
    model = _tiny_animal().eval()
    info = _info(model)
    assert info.data_note == "SYNTHETIC data"
    mixed = dataclasses.replace(info, real_data=True)
    save_model(model, tmp_path / "m", mixed)
    _, loaded = load_model(tmp_path / "m")
    assert loaded.real_data and loaded.data_note == "synthetic and real data"
    assert dataclasses.replace(info, synthetic_data=False, real_data=True).data_note == ""


def test_half_precision_file_is_smaller_and_close(tmp_path: Path) -> None:
    model = _tiny_animal().eval()
    save_model(model, tmp_path / "f32", _info(model))
    save_model(model, tmp_path / "f16", _info(model), half=True)
    size32 = (tmp_path / "f32" / WEIGHTS_NAME).stat().st_size
    size16 = (tmp_path / "f16" / WEIGHTS_NAME).stat().st_size
    assert size16 < 0.6 * size32
    loaded, info = load_model(tmp_path / "f16")
    assert info.weights_dtype == "float16"
    x = torch.randn(1, 1, 64, 64)
    assert torch.allclose(model(x), loaded(x), atol=5e-2)


@pytest.mark.parametrize("name", ["model.pt", "weights.pth", "last.ckpt", "model.pkl"])
def test_pickled_checkpoints_are_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    torch.save({"x": torch.zeros(1)}, path)
    with pytest.raises(ModelFileError, match="refusing to load a pickled checkpoint"):
        load_model(path)


def test_other_files_and_incomplete_folders_are_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelFileError, match="not a vetseg model"):
        load_model(tmp_path / "notes.txt")
    with pytest.raises(ModelFileError, match="no such model"):
        load_model(tmp_path / "missing")
    model = _tiny_animal()
    save_model(model, tmp_path / "m", _info(model))
    (tmp_path / "m" / META_NAME).unlink()
    with pytest.raises(ModelFileError, match="model.json is missing"):
        load_model(tmp_path / "m")


def test_tampered_or_corrupt_weights_are_refused(tmp_path: Path) -> None:
    model = _tiny_animal()
    save_model(model, tmp_path / "m", _info(model))
    weights = tmp_path / "m" / WEIGHTS_NAME
    payload = bytearray(weights.read_bytes())
    payload[-10] ^= 0xFF
    weights.write_bytes(bytes(payload))
    with pytest.raises(ModelFileError, match="checksum"):
        load_model(tmp_path / "m")
    weights.write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="safetensors"):
        load_model(tmp_path / "m", check_hash=False)


def test_weights_that_do_not_fit_the_architecture_are_refused(tmp_path: Path) -> None:
    model = _tiny_animal()
    save_model(model, tmp_path / "m", _info(model))
    meta_path = tmp_path / "m" / META_NAME
    meta = json.loads(meta_path.read_text())
    meta["architecture"]["decoder_channels"] = [48, 24, 16, 16]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="shape"):
        load_model(tmp_path / "m")
    meta["architecture"]["n_organs"] = 5  # the description's own organs disagree
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="names 2 organs but its architecture has 5"):
        read_model_info(tmp_path / "m")
    meta["format"] = "something-else"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="not a vetseg model description"):
        read_model_info(tmp_path / "m")


def test_training_data_is_recorded_relative_to_the_model_and_old_absolute_paths_still_read(
    tmp_path: Path,
) -> None:
    from vetseg.models.files import relative_path

    model = _tiny_animal()
    info = _info(model)
    data = tmp_path / "datasets" / "rabbits"
    data.mkdir(parents=True)
    info.training["data"] = relative_path(data, tmp_path / "models" / "m")
    assert info.training["data"] == "../../datasets/rabbits"
    save_model(model, tmp_path / "models" / "m", info)
    assert read_model_info(tmp_path / "models" / "m").training_data == data.resolve()
    # The pair moves as a whole: the record stays right.
    (tmp_path / "moved").mkdir()
    for part in ("models", "datasets"):
        (tmp_path / part).rename(tmp_path / "moved" / part)
    moved = read_model_info(tmp_path / "moved" / "models" / "m")
    assert moved.training_data == (tmp_path / "moved" / "datasets" / "rabbits").resolve()
    # A model.json written before records an absolute path, which is read as it is.
    meta_path = tmp_path / "moved" / "models" / "m" / META_NAME
    meta = json.loads(meta_path.read_text())
    meta["training"]["data"] = "/elsewhere/data"
    meta_path.write_text(json.dumps(meta))
    assert read_model_info(meta_path.parent).training_data == Path("/elsewhere/data")
