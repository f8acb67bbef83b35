"""``transfer(method=...)``: vetseg, scratch, naive fine-tuning and the nnU-Net-style peer
trained with the same settings, saved, reloaded and evaluated (tiny phantoms, a step each)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vetseg.config import PreprocessConfig, StageConfig
from vetseg.errors import InputError
from vetseg.models import HumanOrganNet
from vetseg.models.files import ModelInfo, load_model, new_model_id, save_model

FAST = StageConfig.transfer(
    epochs=2, freeze_epochs=1, lr=1e-3, batch_size=2, steps_per_epoch=1, extend=0, val_slices=8,
    preprocess=PreprocessConfig(size=64),
)  # fmt: skip


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A human model (random weights: transfer only copies them) and 3 rabbit phantoms."""
    from vetseg.data.phantoms import write_phantom_dataset
    from vetseg.labels import CORE_ORGANS

    root = tmp_path_factory.mktemp("methods")
    torch.manual_seed(0)
    human = HumanOrganNet(len(CORE_ORGANS))
    info = ModelInfo(
        model_id=new_model_id("human"),
        architecture=human.architecture(),
        organs=CORE_ORGANS,
        # 6 mm: a rabbit at the species spacing (2.1 mm) fits one 64 px tile per slice.
        preprocess=PreprocessConfig(size=64, spacing=6.0, intensity=(50.0, 300.0)),
        stage="human",
        synthetic_data=True,
    )
    save_model(human, root / "human", info)
    write_phantom_dataset(root / "rabbit", "rabbit", 3, seed=2)
    return {"human": root / "human", "rabbit": root / "rabbit", "root": root}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "stage", "cls", "loss", "parent"),
    [
        ("naive", "naive", "HumanOrganNet", "bce_tversky", True),
        ("peer", "peer", "PeerUNet", "dice_ce", False),
    ],
)
def test_baselines_train_save_reload_and_evaluate(
    setup: dict[str, Path], tmp_path: Path, method: str, stage: str, cls: str, loss: str,
    parent: bool,
) -> None:  # fmt: skip
    from vetseg.training.stages import evaluate, transfer

    torch.set_num_threads(1)
    info = transfer(setup["human"], setup["rabbit"], tmp_path / "m", FAST, method=method,
                    progress=False)  # fmt: skip
    record = json.loads((tmp_path / "m" / "model.json").read_text())
    assert record["stage"] == stage and record["architecture"]["class"] == cls
    assert record["training"]["method"] == method
    assert record["training"]["config"]["loss"] == loss
    assert record["training"]["config"]["freeze_epochs"] == 0  # no freezing for a baseline
    assert (record["parent"] is not None) is parent
    assert info.preprocess.size == 64 and info.preprocess.spacing == pytest.approx(2.1)
    model, _ = load_model(tmp_path / "m")
    assert type(model).__name__ == cls
    result = evaluate(tmp_path / "m", setup["rabbit"], split="test", raw=True)
    assert set(result["per_organ"]) == set(info.organs)


@pytest.mark.slow
def test_scratch_is_seeded_whatever_the_rng_state(setup: dict[str, Path], tmp_path: Path) -> None:
    from vetseg.training.stages import transfer

    torch.set_num_threads(1)
    states = []
    for index, state in enumerate((1, 2)):
        torch.manual_seed(state)  # what ran before must not matter
        info = transfer(setup["human"], setup["rabbit"], tmp_path / f"s{index}", FAST,
                        from_scratch=True, progress=False)  # fmt: skip
        states.append(load_model(tmp_path / f"s{index}")[0].state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert info.training["method"] == "scratch" and info.stage == "scratch"


@pytest.mark.slow
def test_intensity_source_and_bad_methods(setup: dict[str, Path], tmp_path: Path) -> None:
    from vetseg.training.stages import transfer

    torch.set_num_threads(1)
    one = StageConfig.transfer(**{**FAST.__dict__, "epochs": 1, "freeze_epochs": 1})
    human = transfer(setup["human"], setup["rabbit"], tmp_path / "h", one, progress=False)
    assert human.preprocess.intensity == (50.0, 300.0)
    assert human.training["intensity_source"] == "human"
    animal = transfer(setup["human"], setup["rabbit"], tmp_path / "a", one, intensity="animal",
                      progress=False)  # fmt: skip
    assert animal.preprocess.intensity != (50.0, 300.0)
    assert animal.training["intensity_source"] == "animal"
    with pytest.raises(InputError, match="method 'unet'"):
        transfer(setup["human"], setup["rabbit"], tmp_path / "x", one, method="unet")
    with pytest.raises(InputError, match="contradicts"):
        transfer(setup["human"], setup["rabbit"], tmp_path / "x", one, method="peer",
                 from_scratch=True)  # fmt: skip
    with pytest.raises(InputError, match="intensity"):
        transfer(setup["human"], setup["rabbit"], tmp_path / "x", one, intensity="mouse")
