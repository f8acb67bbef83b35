"""benchmarks/weight_average.py: the average of a model and its fine-tune, with its lineage."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import weight_average  # noqa: E402

from vetseg.config import PreprocessConfig  # noqa: E402
from vetseg.models.files import ModelInfo, load_model, new_model_id, save_model  # noqa: E402
from vetseg.models.human import HumanOrganNet  # noqa: E402


def _save(folder: Path, seed: int, parent: str | None = None, organs=("liver", "bone"), **pre):
    torch.manual_seed(seed)
    net = HumanOrganNet(n_organs=len(organs)).eval()
    with torch.no_grad():  # batch-norm statistics must be averaged too: make them differ
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1.0, 1.0)
                module.running_var.uniform_(0.5, 2.0)
    preprocess = PreprocessConfig(size=64, spacing=3.0, intensity=(0.0, 100.0), **pre)
    info = ModelInfo(new_model_id("human"), net.architecture(), tuple(organs), preprocess, "human")
    info = dataclasses.replace(info, parent=parent, metrics={"val_mean_dice": 0.9})
    save_model(net, folder, info, half=True)
    (folder / "MADE_BY.txt").write_text(f"recipe {seed}\n")
    return info


def test_average_of_a_model_and_its_fine_tune(tmp_path: Path) -> None:
    a = _save(tmp_path / "a", 0)
    b = _save(tmp_path / "b", 1, parent=a.model_id)
    weight_average.main(
        [str(tmp_path / "a"), str(tmp_path / "b"), "--alpha", "0.25", "--dest", str(tmp_path / "c")]
    )
    net_a, _ = load_model(tmp_path / "a")
    net_b, _ = load_model(tmp_path / "b")
    net_c, c = load_model(tmp_path / "c")
    sa, sb, sc = net_a.state_dict(), net_b.state_dict(), net_c.state_dict()
    averaged = 0
    for name, value in sc.items():
        if value.is_floating_point():
            expected = (0.75 * sa[name] + 0.25 * sb[name]).half().float()
            assert torch.allclose(value, expected, atol=1e-3), name
            averaged += not torch.equal(sa[name], sb[name])
        else:
            assert torch.equal(value, sa[name]), name
    assert averaged > 100  # convolutions and batch-norm statistics, not a copy of one side
    assert c.model_id not in (a.model_id, b.model_id) and c.parent == a.model_id
    assert c.training["weight_average"]["of"] == [a.model_id, b.model_id]
    assert c.training["weight_average"]["alpha"] == 0.25
    assert c.metrics == {}  # A's training metrics do not describe the average
    assert c.weights_dtype == "float16"
    made_by = (tmp_path / "c" / "MADE_BY.txt").read_text()
    assert made_by.startswith("recipe 0\n") and "0.25 x " + b.model_id in made_by


def test_unrelated_or_mismatched_models_are_refused(tmp_path: Path, capsys) -> None:
    a = _save(tmp_path / "a", 0)
    _save(tmp_path / "stranger", 1)
    _save(tmp_path / "organs", 2, parent=a.model_id, organs=("liver", "spleen"))
    _save(tmp_path / "tile", 3, parent=a.model_id, tile=128)
    for other, message in (
        ("stranger", "was not fine-tuned from"),
        ("organs", "differ in organs"),
        ("tile", "preprocess differently: ['tile']"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            weight_average.main(
                [str(tmp_path / "a"), str(tmp_path / other), "--dest", str(tmp_path / "out")]
            )
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "out" / "model.safetensors").exists()


@pytest.mark.parametrize("alpha", ["0", "1", "1.5"])
def test_alpha_outside_zero_one_is_refused(tmp_path: Path, alpha: str) -> None:
    a = _save(tmp_path / "a", 0)
    _save(tmp_path / "b", 1, parent=a.model_id)
    with pytest.raises(SystemExit) as exit_info:
        weight_average.main(
            [
                str(tmp_path / "a"),
                str(tmp_path / "b"),
                "--alpha",
                alpha,
                "--dest",
                str(tmp_path / "c"),
            ]
        )
    assert exit_info.value.code == 2
    assert not (tmp_path / "c").exists()


def test_an_existing_destination_is_not_overwritten(tmp_path: Path) -> None:
    a = _save(tmp_path / "a", 0)
    _save(tmp_path / "b", 1, parent=a.model_id)
    _save(tmp_path / "c", 2)
    before = (tmp_path / "c" / "model.safetensors").read_bytes()
    with pytest.raises(SystemExit):
        weight_average.main(
            [str(tmp_path / "a"), str(tmp_path / "b"), "--dest", str(tmp_path / "c")]
        )
    assert (tmp_path / "c" / "model.safetensors").read_bytes() == before
