"""The human model that ships with vetseg: what the README promises about it holds for the file."""

from __future__ import annotations

from pathlib import Path

import torch

from vetseg.labels import CORE_ORGANS
from vetseg.models.files import load_model

SHIPPED = Path(__file__).resolve().parents[2] / "src" / "vetseg" / "assets" / "human_model"


def test_the_shipped_human_model_is_what_the_readme_says() -> None:
    committed = (SHIPPED / "model.safetensors").stat().st_size / 2**20
    assert committed < 30, committed  # the limit on the file
    net, info = load_model(SHIPPED)  # safetensors only, checksum verified
    assert info.stage == "human" and info.real_data and info.synthetic_data
    assert set(CORE_ORGANS) <= set(info.organs)
    # Physical scale: 1.5 mm pixels, trained on 128 px tiles, run on 192 px tiles.
    pre = info.preprocess
    assert pre.spacing == 1.5 and pre.size == 128 and pre.tile_size == 192
    assert pre.intensity is not None  # fixed statistics: tiles can follow the body
    # Lineage: fine-tuned from stage 2 on 192 px tiles with the soft-tissue HU shift; its
    # recipe, its parent's and its grandparent's are kept.
    assert info.parent and "--init" in info.training["command"]
    assert info.training["config"]["augment"]["hu_shift"] == 0.5
    made_by = (SHIPPED / "MADE_BY.txt").read_text()
    assert "make_human_model.py" in made_by and "192 px tiles" in made_by
    assert "--hu-shift 0.5" in made_by and info.parent in made_by
    parents = (SHIPPED / "PARENT_MADE_BY.txt").read_text()
    assert parents.count("make_human_model.py") >= 2  # stage 2's recipe and stage 1's
    assert "Inference tile:" in parents  # stage 2's weights run on 192 px tiles
    # It runs: one 192 px tile of air gives logits for every organ, all finite.
    with torch.no_grad():
        logits = net(torch.zeros(1, pre.in_channels, 192, 192))
    assert logits.shape == (1, len(info.organs), 192, 192) and torch.isfinite(logits).all()
