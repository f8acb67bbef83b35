"""``--context-slices``: a transfer that feeds neighbouring slices, end to end on phantoms."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from tests.training.test_transfer_methods import FAST, setup  # noqa: F401 (a fixture)
from vetseg.cli import app
from vetseg.config import PreprocessConfig, StageConfig
from vetseg.errors import InputError
from vetseg.labels import CORE_ORGANS
from vetseg.models import HumanOrganNet
from vetseg.models.files import ModelInfo, load_model, new_model_id, save_model


@pytest.mark.slow
def test_cli_transfer_with_context_slices_trains_saves_and_evaluates(
    setup: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    from vetseg.training.stages import evaluate

    torch.set_num_threads(1)
    out = tmp_path / "m"
    args = ["transfer", str(setup["human"]), str(setup["rabbit"]), "--out", str(out)]
    args += ["--epochs", "2", "--freeze-epochs", "1", "--steps-per-epoch", "1", "--extend", "0"]
    args += ["--batch-size", "2", "--val-slices", "8", "--lr", "1e-3", "--context-slices", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "model.json").read_text())
    assert record["preprocess"]["context_slices"] == 1
    assert record["architecture"]["in_channels"] == 3
    assert record["training"]["config"]["preprocess"]["context_slices"] == 1
    model, info = load_model(out)
    assert model.in_channels == 3 and info.parent is not None
    scores = evaluate(out, setup["rabbit"], split="test", raw=True)
    assert set(scores["per_organ"]) == set(info.organs)


@pytest.mark.slow
def test_context_settings_that_cannot_work_are_refused(
    setup: dict[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    from vetseg.training.stages import transfer

    wide = StageConfig.transfer(**{**FAST.__dict__, "preprocess": PreprocessConfig(size=64,
                                   context_slices=2)})  # fmt: skip
    with pytest.raises(InputError, match="peer baseline takes one slice"):
        transfer(setup["human"], setup["rabbit"], tmp_path / "p", wide, method="peer")
    human = HumanOrganNet(len(CORE_ORGANS), in_channels=3)
    info = ModelInfo(
        model_id=new_model_id("human"),
        architecture=human.architecture(),
        organs=CORE_ORGANS,
        preprocess=PreprocessConfig(size=64, spacing=6.0, intensity=(50.0, 300.0),
                                    context_slices=1),
        stage="human",
    )  # fmt: skip
    save_model(human, tmp_path / "human3", info)
    with pytest.raises(InputError, match="takes 3 input channels"):
        transfer(tmp_path / "human3", setup["rabbit"], tmp_path / "x", wide)
    result = CliRunner().invoke(
        app, ["transfer", str(setup["human"]), str(setup["rabbit"]), "--out", str(tmp_path / "y"),
              "--context-slices", "9"],
    )  # fmt: skip
    assert result.exit_code != 0 and "context slices must be a whole number" in result.output
