"""vetseg demo --rounds: the loop on (tiny) phantoms, the vet played by the true labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.workflow.helpers import META, phantom
from vetseg.config import AugmentConfig, PreprocessConfig, StageConfig
from vetseg.io.image import read_image, write_image
from vetseg.labels import CORE_ORGANS
from vetseg.models.files import ModelInfo, new_model_id, save_model
from vetseg.models.human import HumanOrganNet
from vetseg.training.stages import transfer
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


def _human_model(folder: Path) -> Path:
    """A tiny untrained human model at 32 px (transfer only needs its stem and body)."""
    torch.manual_seed(0)
    human = HumanOrganNet(len(CORE_ORGANS), decoder_channels=(32, 24, 16, 16))
    info = ModelInfo(
        new_model_id("human"), human.architecture(), CORE_ORGANS, PreprocessConfig(size=32),
        "human",
    )  # fmt: skip
    return save_model(human, folder, info)


def _same_scan(a: Path, b: Path) -> bool:
    return bool(np.array_equal(read_image(a)[0], read_image(b)[0]))


@pytest.mark.slow
def test_a_round_validates_on_rabbits_new_to_the_transfer_model(tmp_path: Path, capsys) -> None:
    """The demo registers ``rabbit_00k`` as ``lab_rabbit_00k``: the round must still know that
    the transfer model trained and selected its epoch on those scans, and validate elsewhere."""
    out = tmp_path / "demo"
    labelled = _msd(out / "data" / "rabbit_labelled", "rabbit", range(3))
    held_out = _msd(out / "data" / "rabbit_heldout", "rabbit", range(50, 52))
    _msd(out / "data" / "rabbit_pool", "rabbit", range(100, 103))  # the pool exists: reused
    tiny = dict(batch_size=4, steps_per_epoch=1, extend=0, augment=AugmentConfig(enabled=False))
    parent = out / "models" / "rabbit_transfer"
    config = StageConfig.transfer(
        epochs=1, freeze_epochs=0, preprocess=PreprocessConfig(size=32), **tiny
    )
    # As the demo trains it: of the k labelled rabbits, one validates (selection).
    transfer(_human_model(tmp_path / "human"), labelled, parent, config, ratios=(2, 1, 0),
             progress=False)  # fmt: skip
    parent_split = json.loads((parent / "model.json").read_text())["training"]["split"]
    parent_seen = parent_split["train"] + parent_split["val"]
    assert len(parent_split["val"]) == 1
    rounds_config = RoundsConfig(
        per_round=2, refine=StageConfig.refine(epochs=1, freeze_epochs=0, **tiny)
    )
    args = (out, 1, parent, labelled, held_out)
    report = run_demo_rounds(*args, config=rounds_config, progress=False)
    (record,) = report["rounds"]
    assert record["val_seen_by_parent"] == []
    # The report records the preprocessing the rounds trained at: the parent's, not a default.
    parent_pre = json.loads((parent / "model.json").read_text())["preprocess"]
    assert report["refine"]["preprocess"]["size"] == parent_pre["size"] == 32
    with Workspace.open(out / "workspace") as ws:
        split = ws.model(record["model"]).split
        assert record["val_cases"] == split["val"]
        scored = [ws.path(ws.case(c).image) for c in split["val"] + split["test"]]
        # Compared by the voxels themselves, not by any name or digest the code recorded.
        for seen in parent_seen:
            image = labelled / "imagesTr" / f"{seen}_0000.nii.gz"
            assert not any(_same_scan(image, other) for other in scored), seen
        # The vet (the true label) corrected exactly the two drafts of the round.
        assert sorted(c.case_id for c in ws.corrections()) == sorted(record["corrected"])
    assert len(record["corrected"]) == 2
    printed = capsys.readouterr().out
    assert "pre-label Dice" in printed and "of drawing from nothing" in printed
    # Run again: the round is done, nothing is trained twice, the same figures come back.
    again = run_demo_rounds(*args, config=rounds_config, progress=False)
    assert again["rounds"][0]["model"] == record["model"]
    assert again["rounds"][0]["parent_val_dice"] == record["parent_val_dice"]
    with Workspace.open(out / "workspace") as ws:
        assert len(ws.models()) == 2 and len(ws.corrections()) == 2
