"""The training loop: phases, frozen parts, selection, extension, checkpoint and resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.training.helpers import TinyNet
from vetseg.config import StageConfig
from vetseg.training.trainer import (
    CHECKPOINT_NAME,
    METRICS_NAME,
    Phase,
    Trainer,
    ValidationCase,
    organ_mean,
    stage_phases,
)

SIZE = 32
N_ORGANS = 2


def _sample(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A bright square (organ 1) and a brighter disc (organ 2) at seeded positions."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0, 0.3, (SIZE, SIZE)).astype(np.float32)
    target = np.zeros((N_ORGANS, SIZE, SIZE), np.float32)
    y, x = rng.integers(4, SIZE - 12, size=2)
    image[y : y + 8, x : x + 8] += 2.0
    target[0, y : y + 8, x : x + 8] = 1
    yy, xx = np.mgrid[:SIZE, :SIZE]
    cy, cx = rng.integers(6, SIZE - 6, size=2)
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 < 16
    image[disc] = 4.0 + image[disc] * 0.5
    target[1][disc] = 1
    target[0][disc] = 0
    return torch.from_numpy(image)[None], torch.from_numpy(target)


class ToySlices(torch.utils.data.Dataset):
    """Mimics SliceDataset: per-(epoch, index) seeded noise as 'augmentation'."""

    def __init__(self, n: int = 24) -> None:
        self.items = [_sample(i) for i in range(n)]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def slice_weights(self, balance: float = 0.5) -> np.ndarray:
        return np.ones(len(self.items))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, target = self.items[i]
        g = torch.Generator().manual_seed(self.epoch * 1000 + i)
        return image + 0.05 * torch.randn(image.shape, generator=g), target


def _val_cases() -> list[ValidationCase]:
    images, labels = [], []
    for i in range(100, 108):
        image, target = _sample(i)
        images.append(image)
        labels.append((target[0] * 1 + target[1] * 2).long())
    return [ValidationCase("val", torch.stack(images), torch.stack(labels))]


def _config(**overrides: Any) -> StageConfig:
    base = {
        "epochs": 4,
        "freeze_epochs": 2,
        "lr": 1e-2,
        "batch_size": 4,
        "steps_per_epoch": 4,
        "extend": 0,
        "seed": 3,
    }
    return StageConfig(**{**base, **overrides})


def _trainer(tmp: Path, config: StageConfig, **kwargs: Any) -> Trainer:
    torch.manual_seed(0)
    return Trainer(
        TinyNet(), ToySlices(), _val_cases(), ("a", "b"), config, tmp, progress=False, **kwargs
    )


def test_stage_phases_follow_config() -> None:
    assert stage_phases(StageConfig.transfer()) == [
        Phase(50, ("body",), "frozen"),
        Phase(50, (), "unfrozen"),
    ]
    assert stage_phases(StageConfig.human()) == [Phase(10, (), "unfrozen")]


def test_frozen_phase_keeps_body_weights_and_bn_stats(tmp_path: Path) -> None:
    seen: list[dict[str, torch.Tensor]] = []
    trainer = _trainer(tmp_path, _config(epochs=3, freeze_epochs=2))
    body_before = {k: v.clone() for k, v in trainer.model.body.state_dict().items()}
    head_before = trainer.model.head.weight.clone()

    def snapshot(record: dict[str, Any]) -> None:
        seen.append({k: v.clone() for k, v in trainer.model.body.state_dict().items()})

    trainer.on_epoch = snapshot
    trainer.fit()
    for key, value in body_before.items():  # after the two frozen epochs: nothing moved
        assert torch.equal(seen[1][key], value), key
    assert not torch.equal(seen[2]["0.weight"], body_before["0.weight"])  # unfrozen epoch trains
    assert not torch.equal(seen[2]["1.running_mean"], body_before["1.running_mean"])
    assert not torch.equal(trainer.model.head.weight, head_before)


def test_selection_only_among_unfrozen_epochs(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, _config(epochs=4, freeze_epochs=2))
    result = trainer.fit()
    assert result.best_epoch in (3, 4)
    records = [json.loads(line) for line in (tmp_path / METRICS_NAME).read_text().splitlines()]
    assert [r["selectable"] for r in records] == [False, False, True, True]
    best = max((r for r in records if r["selectable"]), key=lambda r: r["val_mean_dice"])
    assert best["epoch"] == result.best_epoch
    assert result.best_dice == pytest.approx(best["val_mean_dice"])


def test_training_learns_the_toy_task(tmp_path: Path) -> None:
    result = _trainer(tmp_path, _config(epochs=15, freeze_epochs=0, steps_per_epoch=10)).fit()
    assert result.best_dice > 0.6  # an untrained net scores near 0 on these shapes


def test_extension_epochs_when_below_threshold(tmp_path: Path) -> None:
    result = _trainer(tmp_path, _config(epochs=2, freeze_epochs=0, threshold=1.01, extend=2)).fit()
    assert result.extended and len(result.history) == 4
    result = _trainer(
        tmp_path / "b", _config(epochs=2, freeze_epochs=0, threshold=0.0, extend=2)
    ).fit()
    assert not result.extended and len(result.history) == 2


def test_resume_reaches_the_same_weights(tmp_path: Path) -> None:
    config = _config(epochs=4, freeze_epochs=1)
    straight = _trainer(tmp_path / "straight", config)
    straight.fit()

    class Stop(Exception):
        pass

    def stop_after_two(record: dict[str, Any]) -> None:
        if record["epoch"] == 2:
            raise Stop

    interrupted = _trainer(tmp_path / "resumed", config, on_epoch=stop_after_two)
    with pytest.raises(Stop):
        interrupted.fit()
    assert (tmp_path / "resumed" / CHECKPOINT_NAME).is_file()
    resumed = _trainer(tmp_path / "resumed", config)
    torch.manual_seed(12345)  # the global RNG state must not matter
    resumed.fit(resume=True)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert resumed.best_epoch == straight.best_epoch
    log = (tmp_path / "resumed" / METRICS_NAME).read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2, 3, 4]


class _NeverOrganB(TinyNet):
    """Never draws organ b (its logit is pinned far below zero)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return torch.cat([out[:, :1], torch.full_like(out[:, 1:], -50.0)], dim=1)


def test_an_organ_in_no_validation_case_is_recorded_as_null_not_zero(tmp_path: Path) -> None:
    cases = _val_cases()
    only_a = [ValidationCase(c.case_id, c.images, (c.labels == 1).long()) for c in cases]
    torch.manual_seed(0)
    trainer = Trainer(
        _NeverOrganB(),
        ToySlices(),
        only_a,
        ("a", "b"),
        _config(epochs=1, freeze_epochs=0),
        tmp_path,
        progress=False,
    )
    result = trainer.fit()
    record = json.loads((tmp_path / METRICS_NAME).read_text().splitlines()[-1])
    assert record["val_dice"]["b"] is None and isinstance(record["val_dice"]["a"], float)
    assert record["val_mean_dice"] == pytest.approx(record["val_dice"]["a"])
    assert result.best_per_organ[1] is None
    assert organ_mean(np.array([np.nan, 0.5, 1.0])) == pytest.approx(0.75)


def test_without_validation_cases_the_last_epoch_is_kept(tmp_path: Path) -> None:
    torch.manual_seed(0)
    trainer = Trainer(
        TinyNet(), ToySlices(), [], ("a", "b"), _config(epochs=3, freeze_epochs=1, extend=2),
        tmp_path, progress=False,
    )  # fmt: skip
    result = trainer.fit()
    assert result.best_epoch == 3 and not result.extended  # nothing to judge: no extension
    assert np.isnan(result.best_dice)
    records = [json.loads(line) for line in (tmp_path / METRICS_NAME).read_text().splitlines()]
    assert [r["val_mean_dice"] for r in records] == [None, None, None]
    assert records[-1]["val_dice"] == {"a": None, "b": None}


def test_transferred_parts_can_learn_at_a_scaled_rate(tmp_path: Path) -> None:
    from vetseg.training.optim import make_optimizer

    model = TinyNet()
    plain = make_optimizer(model, _config())
    assert len(plain.param_groups) == 1  # the default: one group, as before
    scaled = make_optimizer(model, _config(transferred_lr_scale=0.1))
    head, transferred = scaled.param_groups
    assert head["lr"] == pytest.approx(1e-2) and transferred["lr"] == pytest.approx(1e-3)
    ids = {id(p) for p in transferred["params"]}
    assert ids == {id(p) for part in (model.stem, model.body) for p in part.parameters()}
    assert {id(p) for p in head["params"]} == {id(p) for p in model.head.parameters()}
    # It trains, and resumes from its checkpoint with both groups.
    config = _config(epochs=2, freeze_epochs=1, transferred_lr_scale=0.1)
    _trainer(tmp_path, config).fit()
    resumed = _trainer(tmp_path, config)
    resumed.fit(resume=True)
    assert [g["lr"] for g in resumed.optimizer.param_groups] == pytest.approx([1e-2, 1e-3])


def test_loss_and_lr_scale_settings_are_checked() -> None:
    from vetseg.errors import InputError

    assert StageConfig().loss == "bce_tversky" and StageConfig().transferred_lr_scale == 1.0
    with pytest.raises(InputError, match="loss"):
        StageConfig(loss="focal")
    with pytest.raises(InputError, match="transferred_lr_scale"):
        StageConfig(transferred_lr_scale=0.0)
