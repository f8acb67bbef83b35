"""``vetseg prepare`` and ``train-human`` from the slice cache, through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from vetseg.cli import app

runner = CliRunner()
FAST = ["--epochs", "1", "--spacing", "6", "--size", "64", "--batch-size", "4"]
FAST += ["--steps-per-epoch", "2", "--extend", "0"]


def _run(args: list[str], code: int = 0) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    return result.output


@pytest.fixture(scope="module")
def human(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prepare")
    _run(["phantoms", str(root / "human"), "--species", "human", "--cases", "3", "--seed", "1"])
    return root


def test_training_from_the_cache_gives_the_weights_of_training_from_scans(human: Path) -> None:
    torch.set_num_threads(2)
    out = _run(["prepare", str(human / "human"), "--out", str(human / "cache"), "--spacing", "6"])
    assert "3 cases" in out
    _run(["train-human", str(human / "human"), "--out", str(human / "decoded"), *FAST])
    _run(["train-human", str(human / "cache"), "--out", str(human / "cached"), *FAST])
    args = ["--cache", str(human / "cache")]
    _run(["train-human", str(human / "human"), "--out", str(human / "both"), *args, *FAST])
    decoded = load_file(human / "decoded" / "model.safetensors")
    for name in ("cached", "both"):
        weights = load_file(human / name / "model.safetensors")
        assert all(torch.equal(weights[k], decoded[k]) for k in decoded)


def test_a_cache_of_other_settings_is_refused_in_one_sentence(human: Path) -> None:
    cache = human / "cache6"
    _run(["prepare", str(human / "human"), "--out", str(cache), "--spacing", "6"])
    args = ["train-human", str(cache), "--out", str(human / "x"), *FAST, "--spacing", "5"]
    out = _run(args, code=2)
    assert "spacing 6 mm (this run: 5 mm)" in out and "Traceback" not in out
    assert not (human / "x" / "model.safetensors").exists()
    out = _run(["prepare", str(human / "human"), "--out", str(cache), "--spacing", "5"], code=2)
    assert "made with other settings" in out
