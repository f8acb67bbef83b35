"""vetseg demo --rounds: the loop on (tiny) phantoms, the vet played by the true labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.workflow.helpers import META, phantom, tiny_model
from vetseg.config import AugmentConfig, StageConfig
from vetseg.io.image import write_image
from vetseg.labels import CORE_ORGANS
from vetseg.workflow.demo_rounds import RoundsConfig, label_dice, run_demo_rounds
from vetseg.workflow.workspace import Workspace


def _msd(folder: Path, prefix: str, seeds: range) -> Path:
    """A tiny MSD-layout dataset with CORE_ORGANS names (liver 1, spleen 2 drawn)."""
    for seed in seeds:
        image, labels = phantom(seed)
        write_image(image, META, folder / "imagesTr" / f"{prefix}_{seed:03d}_0000.nii.gz")
        write_image(labels, META, folder / "labelsTr" / f"{prefix}_{seed:03d}.nii.gz")
    names = {"background": 0, **{o: i + 1 for i, o in enumerate(CORE_ORGANS)}}
    (folder / "dataset.json").write_text(json.dumps({"labels": names, "synthetic": True}))
    return folder


def test_label_dice_averages_organs_present() -> None:
    truth = np.zeros((1, 4, 4), np.uint8)
    truth[0, :2] = 1
    prediction = truth.copy()
    assert label_dice(prediction, truth, 2) == 1.0  # organ 2 absent in both: not counted
    prediction[0, 0] = 2
    assert label_dice(prediction, truth, 2) == pytest.approx(np.mean([2 * 4 / 12, 0.0]))


@pytest.mark.slow
def test_one_round_prints_heldout_prelabel_dice_and_effort(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    labelled = _msd(out / "data" / "rabbit_labelled", "rabbit", range(3))
    held_out = _msd(out / "data" / "rabbit_heldout", "rabbit", range(50, 52))
    _msd(out / "data" / "rabbit_pool", "rabbit", range(100, 103))  # the pool exists: reused
    tiny_model(out / "models" / "rabbit_transfer", organs=CORE_ORGANS)
    config = RoundsConfig(
        per_round=2,
        refine=StageConfig.refine(
            epochs=1, freeze_epochs=0, steps_per_epoch=2, batch_size=4, extend=0,
            augment=AugmentConfig(enabled=False),
        ),
    )  # fmt: skip
    args = (out, 1, out / "models" / "rabbit_transfer", labelled, held_out)
    report = run_demo_rounds(*args, config=config, progress=False)
    (record,) = report["rounds"]
    assert len(record["corrected"]) == 2
    assert 0.0 <= record["prelabel_dice"] <= 1.0
    assert record["correction_effort"] > 0
    assert record["heldout_dice"] >= 0 and report["heldout_dice_round0"] >= 0
    assert record["promoted"] == (record["new_val_dice"] >= record["parent_val_dice"])
    printed = capsys.readouterr().out
    assert "pre-label Dice" in printed and "of drawing from nothing" in printed
    assert json.loads((out / "demo_rounds.json").read_text())["rounds"][0]["round"] == 1
    # Run again: the round is done, nothing is trained twice, the same figures come back.
    again = run_demo_rounds(*args, config=config, progress=False)
    assert again["rounds"][0]["model"] == record["model"]
    with Workspace.open(out / "workspace") as ws:
        assert len(ws.models()) == 2 and len(ws.corrections()) == 2
