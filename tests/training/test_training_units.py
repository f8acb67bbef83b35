"""Training refuses cases that are not in the model's units (a HU model's cases show air)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from vetseg.cli import app
from vetseg.io.units import training_units_problem

runner = CliRunner()
FAST = ["--epochs", "1", "--spacing", "6", "--size", "64", "--batch-size", "4"]
FAST += ["--steps-per-epoch", "1", "--extend", "0", "--val-slices", "2"]


def _run(args: list[str], code: int = 0) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    return result.output


def _store_raw_values(image: Path) -> None:
    """Rewrite a CT as the scanner's raw values (HU + 1024), as some exports leave it."""
    volume = sitk.ReadImage(str(image))
    sitk.WriteImage(sitk.Cast(volume, sitk.sitkFloat32) + 1024.0, str(image))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("units")
    _run(["phantoms", str(root / "human"), "--species", "human", "--cases", "3", "--seed", "1"])
    _run(["phantoms", str(root / "rabbit"), "--species", "rabbit", "--cases", "3", "--seed", "2"])
    for species in ("human", "rabbit"):
        shutil.copytree(root / species, root / f"{species}_raw")
        _store_raw_values(root / f"{species}_raw" / "imagesTr" / f"{species}_001_0000.nii.gz")
    return root


def test_only_cases_without_air_are_named_and_only_for_a_hu_model() -> None:
    lowest = {"a": -1024.0, "b": 0.0, "c": None, "d": -600.0}
    problem = training_units_problem(lowest, (-1000.0, 1000.0))
    assert problem is not None
    assert problem.startswith("1 of 4 cases show no air: b (lowest 0)")
    assert "--skip-units-check" in problem and "-1024" in problem
    assert training_units_problem({"a": -1024.0, "c": None}, (-1000.0, 1000.0)) is None
    # A model in other units (8-bit micro-CT) says nothing about air.
    assert training_units_problem({"b": 0.0}, (0.0, 255.0)) is None


def test_train_human_refuses_a_raw_valued_case_and_writes_nothing(data: Path) -> None:
    out = data / "refused"
    text = _run(["train-human", str(data / "human_raw"), "--out", str(out), *FAST], code=2)
    assert "human_001 (lowest" in text and "1 of 3 cases show no air" in text
    assert "Traceback" not in text
    assert not (out / "model.safetensors").exists()
    # The same data in HU trains.
    _run(["train-human", str(data / "human"), "--out", str(data / "hu"), *FAST])
    assert (data / "hu" / "model.safetensors").is_file()


def test_skip_units_check_trains_on_the_same_cases(data: Path) -> None:
    out = data / "skipped"
    _run(["train-human", str(data / "human_raw"), "--out", str(out), *FAST, "--skip-units-check"])
    assert (out / "model.safetensors").is_file()


def test_a_slice_cache_records_each_case_s_lowest_value_and_is_checked(data: Path) -> None:
    cache = data / "cache_raw"
    text = _run(["prepare", str(data / "human_raw"), "--out", str(cache), "--spacing", "6"])
    assert "warning: train-human will refuse this cache: 1 of 3 cases show no air" in text
    text = _run(["train-human", str(cache), "--out", str(data / "c"), *FAST], code=2)
    assert "human_001 (lowest" in text and "human_000" not in text


def test_transfer_refuses_raw_valued_animal_cases(data: Path) -> None:
    human = data / "hu"
    if not (human / "model.safetensors").is_file():
        _run(["train-human", str(data / "human"), "--out", str(human), *FAST])
    fast = ["--epochs", "1", "--freeze-epochs", "0", "--batch-size", "4", "--extend", "0"]
    fast += ["--steps-per-epoch", "1", "--val-slices", "2", "--spacing", "2"]
    args = ["transfer", str(human), str(data / "rabbit_raw"), "--out", str(data / "t"), *fast]
    text = _run(args, code=2)
    assert "rabbit_001 (lowest" in text and not (data / "t" / "model.safetensors").exists()
    _run([*args, "--skip-units-check"])
    assert (data / "t" / "model.safetensors").is_file()


def test_refine_and_rl_tune_refuse_raw_valued_cases_too(data: Path) -> None:
    from vetseg.config import StageConfig
    from vetseg.errors import InputError
    from vetseg.training.stages import refine

    animal = data / "t"
    if not (animal / "model.safetensors").is_file():
        test_transfer_refuses_raw_valued_animal_cases(data)
    config = StageConfig(epochs=1, batch_size=2, steps_per_epoch=1, extend=0, val_slices=2)
    with pytest.raises(InputError, match="rabbit_001 \\(lowest"):
        refine(animal, data / "rabbit_raw", data / "r", config, progress=False)
    assert not (data / "r" / "model.safetensors").exists()
    args = ["rl-tune", str(animal), str(data / "rabbit_raw"), "--out", str(data / "rl")]
    args += ["--steps", "1", "--batch-size", "2", "--samples-per-image", "1"]
    text = _run(args, code=2)
    assert "rabbit_001 (lowest" in text and not (data / "rl" / "model.safetensors").exists()
    _run([*args, "--skip-units-check"])
    assert (data / "rl" / "model.safetensors").is_file()
