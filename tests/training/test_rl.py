"""RL fine-tuning (S104): reward and penalty, PPO ratio and clip, sync, replay pool, gradients,
and the ``vetseg rl-tune`` command."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from tests.training.helpers import TinyNet
from vetseg.config import RLConfig
from vetseg.errors import InputError
from vetseg.training.rl import (
    PPOFineTuner,
    ReplayEntry,
    ReplayPool,
    check_rl_config,
    clipped_surrogate,
    greedy_baseline,
    leave_one_out_mean,
    mask_dice,
    mask_log_prob,
    rl_reward,
    sample_masks,
)

SIZE = 16
N_ORGANS = 2


class ToySlices(torch.utils.data.Dataset):
    """Bright square = organ 1 on every slice, a disc = organ 2 on even slices only."""

    def __init__(self, n: int = 8) -> None:
        self.items = []
        yy, xx = np.mgrid[:SIZE, :SIZE]
        for i in range(n):
            rng = np.random.default_rng(i)
            image = rng.normal(0, 0.3, (SIZE, SIZE)).astype(np.float32)
            target = np.zeros((N_ORGANS, SIZE, SIZE), np.float32)
            y, x = rng.integers(1, SIZE - 6, size=2)
            target[0, y : y + 5, x : x + 5] = 1
            if i % 2 == 0:
                target[1][(yy - 11) ** 2 + (xx - 11) ** 2 < 9] = 1
                target[0][target[1] > 0] = 0
            image += 2.0 * target[0] + 4.0 * target[1]
            self.items.append((torch.from_numpy(image)[None], torch.from_numpy(target)))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.items[i]


def _tuner(seed: int = 0, **changes: Any) -> PPOFineTuner:
    torch.manual_seed(seed)
    config = dataclasses.replace(
        RLConfig(steps=4, batch_size=3, samples_per_image=2, lr=1e-2, seed=seed), **changes
    )
    return PPOFineTuner(TinyNet(), ToySlices(), config)


def _states_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --------------------------------------------------------------------------- reward
def _square(size: int, y0: int, y1: int, x0: int, x1: int) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_dice_reward_and_penalty_on_known_masks() -> None:
    reference = torch.stack([_square(8, 2, 6, 2, 6), torch.zeros(8, 8, dtype=torch.bool)])[None]
    exact = reference.clone()
    half = torch.stack([_square(8, 2, 4, 2, 6), torch.zeros(8, 8, dtype=torch.bool)])[None]
    shifted = torch.stack([_square(8, 4, 8, 2, 6), _square(8, 0, 1, 0, 1)])[None]

    d_exact, d_half, d_shifted = (mask_dice(m, reference)[0] for m in (exact, half, shifted))
    assert d_exact[0].item() == pytest.approx(1.0)
    assert d_half[0].item() == pytest.approx(2 * 8 / (8 + 16))  # 8 of 16 pixels, no FP
    assert d_shifted[0].item() == pytest.approx(2 * 8 / (16 + 16))  # half overlap
    # An organ absent from the reference has no reward, whatever the prediction.
    assert all(math.isnan(d[1].item()) for d in (d_exact, d_half, d_shifted))

    reward, penalty = rl_reward(d_exact[:1], d_half[:1], kappa=0.5)
    assert penalty.item() == pytest.approx(0.5 * (1 - 2 / 3))
    assert reward.item() == pytest.approx(1 - 0.5 * (1 - 2 / 3))
    # Worse than the old copy: the drop costs (1 + kappa) times its size.
    reward, penalty = rl_reward(d_half[:1], d_exact[:1], kappa=0.5)
    assert penalty.item() == pytest.approx(0.5 * (1 - 2 / 3))
    assert reward.item() == pytest.approx(2 / 3 - 0.5 * (1 - 2 / 3))
    reward, penalty = rl_reward(d_half[:1], d_exact[:1], kappa=0.0)
    assert penalty.item() == 0.0 and reward.item() == pytest.approx(2 / 3)


def test_greedy_baseline_is_the_reward_of_thresholded_logits() -> None:
    reference = _square(8, 2, 6, 2, 6)[None, None]
    logits_new = torch.where(reference, 3.0, -3.0)  # greedy mask = reference: Dice 1
    logits_old = torch.where(_square(8, 2, 4, 2, 6)[None, None], 3.0, -3.0)  # Dice 2/3
    baseline = greedy_baseline(logits_new, logits_old, reference, kappa=0.5)
    assert baseline.shape == (1, 1)
    assert baseline.item() == pytest.approx(1 - 0.5 * (1 - 2 / 3))


def test_leave_one_out_mean_excludes_the_sample_itself() -> None:
    reward = torch.tensor([[0.2, math.nan], [0.4, math.nan], [0.9, math.nan]])
    baseline = leave_one_out_mean(reward)
    assert torch.allclose(baseline[:, 0], torch.tensor([0.65, 0.55, 0.3]))
    assert torch.isnan(baseline[:, 1]).all()
    with pytest.raises(ValueError):
        leave_one_out_mean(reward[:1])


def test_mean_baseline_gives_zero_mean_advantages_and_replays() -> None:
    tuner = _tuner(baseline="mean", samples_per_image=3, replay_updates=1)
    rollout = tuner.rollout([0, 1, 2])
    valid = torch.isfinite(rollout.advantage)
    # The leave-one-out advantages of K samples sum to K/(K-1) times the centred rewards: 0.
    assert torch.allclose(
        torch.nansum(rollout.advantage, dim=0)[valid[0]],
        torch.zeros(int(valid[0].sum())),
        atol=1e-6,
    )
    record = tuner.step()
    assert record["replay_loss"] is not None and math.isfinite(record["loss"])


def test_mask_log_prob_is_the_pixel_mean_of_bernoulli_log_probs() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 5)
    masks = sample_masks(logits, 4, torch.Generator().manual_seed(1))
    assert masks.shape == (4, 2, 3, 5, 5) and masks.dtype == torch.bool
    p = torch.sigmoid(logits)
    expected = torch.where(masks, p.log(), (1 - p).log()).mean(dim=(-2, -1))
    assert torch.allclose(mask_log_prob(logits, masks), expected, atol=1e-6)
    assert torch.allclose(
        mask_log_prob(torch.zeros(1, 1, 4, 4), masks[:1, :1, :1, :4, :4]),
        torch.full((1, 1, 1), math.log(0.5)),
    )


def test_sampling_follows_the_sigmoid() -> None:
    logits = torch.tensor([-2.0, 0.0, 2.0]).view(1, 3, 1, 1).expand(1, 3, 40, 40)
    masks = sample_masks(logits, 8, torch.Generator().manual_seed(0))
    frequency = masks.float().mean(dim=(0, 1, 3, 4))
    assert torch.allclose(frequency, torch.sigmoid(torch.tensor([-2.0, 0.0, 2.0])), atol=0.02)


# --------------------------------------------------------------------------- PPO surrogate
def test_clipped_surrogate_clips_only_beyond_the_trust_region() -> None:
    logp_old = torch.zeros(4)
    logp_new = torch.log(torch.tensor([1.5, 1.5, 0.5, 1.1])).requires_grad_(True)
    advantage = torch.tensor([1.0, -1.0, -1.0, 2.0])
    result = clipped_surrogate(logp_new, logp_old, advantage, clip=0.2)
    # min(r A, clip(r) A): 1.2 (clipped), -1.5, -0.8 (clipped), 2.2
    assert result.loss.item() == pytest.approx(-(1.2 - 1.5 - 0.8 + 2.2) / 4)
    assert result.plain == pytest.approx(-(1.5 - 1.5 - 0.5 + 2.2) / 4)
    assert result.clip_fraction == pytest.approx(3 / 4)
    result.loss.backward()
    # Clipped entries give no gradient; the others give -A r / 4.
    assert logp_new.grad is not None
    assert torch.allclose(logp_new.grad, torch.tensor([0.0, 1.5, 0.0, -2.2]) / 4)


def test_clipped_surrogate_leaves_out_entries_without_reward() -> None:
    logp = torch.zeros(3, requires_grad=True)
    result = clipped_surrogate(logp, torch.zeros(3), torch.tensor([0.5, math.nan, 0.1]), 0.2)
    assert result.loss.item() == pytest.approx(-0.3)
    none = clipped_surrogate(logp, torch.zeros(3), torch.full((3,), math.nan), 0.2)
    assert none.loss.item() == 0.0 and none.loss.requires_grad


def test_first_update_ratio_is_one_and_clipped_loss_equals_plain_surrogate() -> None:
    tuner = _tuner()
    rollout = tuner.rollout([0, 1, 2])
    result = clipped_surrogate(rollout.logp_new, rollout.logp_old, rollout.advantage, 0.2)
    valid = torch.isfinite(rollout.advantage)
    assert valid.any() and not valid.all()  # organ 2 is absent from slice 1
    assert torch.allclose(result.ratio, torch.ones_like(result.ratio), atol=1e-6, rtol=0)
    assert result.clip_fraction == 0.0
    assert result.loss.item() == pytest.approx(result.plain, abs=1e-7)
    assert result.plain == pytest.approx(-rollout.advantage[valid].mean().item(), abs=1e-6)
    # The shapes of one rollout: K samples x B images x n organs.
    assert rollout.new_masks.shape == (2, 3, N_ORGANS, SIZE, SIZE)
    assert rollout.reward.shape == rollout.baseline.shape == (2, 3, N_ORGANS)
    # After an update without sync the copies differ and the ratio moves off 1.
    tuner.step()
    moved = tuner.rollout([0, 1, 2])
    ratio = torch.exp(moved.logp_new - moved.logp_old)
    assert not torch.allclose(ratio, torch.ones_like(ratio), atol=1e-6, rtol=0)


def test_gradients_reach_only_the_new_copy() -> None:
    tuner = _tuner()
    rollout = tuner.rollout([0, 1, 2])
    result = clipped_surrogate(rollout.logp_new, rollout.logp_old, rollout.advantage, 0.2)
    assert result.loss.item() != 0.0
    result.loss.backward()
    for name, param in tuner.new.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
    assert tuner.new.head.weight.grad.abs().sum() > 0
    for name, param in tuner.old.named_parameters():
        assert param.grad is None and not param.requires_grad, name
    assert not tuner.old.training


def test_rl_steps_keep_batchnorm_statistics_and_only_move_the_new_copy() -> None:
    tuner = _tuner(sync_every=100)
    before_old = {k: v.clone() for k, v in tuner.old.state_dict().items()}
    bn = tuner.new.body[1]
    running_mean = bn.running_mean.clone()
    tuner.run(steps=3)
    assert torch.equal(bn.running_mean, running_mean)  # eval mode: statistics untouched
    assert all(torch.equal(v, tuner.old.state_dict()[k]) for k, v in before_old.items())
    assert not _states_equal(tuner.new, tuner.old)


# --------------------------------------------------------------------------- sync
def test_old_copy_syncs_exactly_every_sync_every_updates() -> None:
    tuner = _tuner(sync_every=2, replay_updates=0)
    first = tuner.step()
    assert not first["synced"] and not _states_equal(tuner.new, tuner.old)
    second = tuner.step()
    assert second["synced"] and _states_equal(tuner.new, tuner.old)
    # The copies hold their own storage: training the new one leaves the old one as it was.
    old_state = {k: v.clone() for k, v in tuner.old.state_dict().items()}
    tuner.step()
    assert all(torch.equal(v, tuner.old.state_dict()[k]) for k, v in old_state.items())
    assert not _states_equal(tuner.new, tuner.old)
    tuner.sync()
    assert _states_equal(tuner.new, tuner.old)


# --------------------------------------------------------------------------- replay pool
def _entry(image_id: int, rng: np.random.Generator) -> tuple[ReplayEntry, torch.Tensor]:
    new_mask = torch.from_numpy(rng.random((N_ORGANS, 5, 7)) < 0.3)
    entry = ReplayEntry.from_tensors(
        image_id,
        ~new_mask,
        new_mask,
        torch.tensor([-0.1 * image_id, -0.2]),
        torch.tensor([0.5, math.nan]),
    )
    return entry, new_mask


def test_replay_pool_stays_bounded_and_samples_what_was_stored() -> None:
    rng = np.random.default_rng(0)
    pool = ReplayPool(capacity=5)
    masks = {}
    for image_id in range(12):
        entry, new_mask = _entry(image_id, rng)
        pool.add(entry)
        masks[image_id] = new_mask
        assert len(pool) == min(image_id + 1, 5)
    drawn = pool.sample(20, np.random.default_rng(1))
    assert {e.image_id for e in drawn} == set(range(7, 12))  # the five newest
    for entry in drawn:
        assert torch.equal(entry.new_mask_tensor(), masks[entry.image_id])
        assert torch.equal(entry.old_mask_tensor(), ~masks[entry.image_id])
        assert entry.old_log_prob[0] == pytest.approx(-0.1 * entry.image_id)
        assert entry.reward[0] == 0.5 and math.isnan(entry.reward[1])
    without = pool.sample(5, np.random.default_rng(2))
    assert sorted(e.image_id for e in without) == list(range(7, 12))
    empty = ReplayPool(capacity=0)
    empty.add(_entry(0, rng)[0])
    assert len(empty) == 0
    with pytest.raises(ValueError):
        empty.sample(1, rng)


def test_tuner_stores_rollouts_and_replays_them() -> None:
    tuner = _tuner(replay_size=10, replay_updates=1, sync_every=100)
    record = tuner.step()
    assert record["pool"] == 6  # 3 images x 2 samples
    assert record["replay_loss"] is not None
    for _ in range(3):
        record = tuner.step()
    assert record["pool"] == 10 == len(tuner.pool)
    for key in ("reward", "penalty", "d_old", "d_new", "baseline", "advantage", "loss"):
        assert math.isfinite(record[key]), key
    assert record["reward"] == pytest.approx(record["d_new"] - record["penalty"], abs=1e-6)
    # The stored old log-prob is the old copy's log-probability of the stored action.
    entry = tuner.pool.sample(1, np.random.default_rng(0))[0]
    image = tuner.train_set[entry.image_id][0][None]
    with torch.no_grad():
        logp = mask_log_prob(tuner.old(image), entry.new_mask_tensor()[None])[0]
    assert np.allclose(logp.numpy(), entry.old_log_prob, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(("baseline", "slices", "floor"), [("mean", 8, 0.5), ("greedy", 16, 0.2)])
def test_rl_alone_teaches_an_untrained_net_to_segment(
    baseline: str, slices: int, floor: float
) -> None:
    """A Dice floor an untrained net cannot reach, from the RL signal alone (no labels seen).

    The greedy baseline learns less reliably than the mean one (its advantages are mostly
    negative: a sampled mask is worse than the greedy one), hence its lower floor.
    """
    torch.manual_seed(0)
    data = ToySlices(slices)
    config = RLConfig(steps=150, batch_size=4, samples_per_image=2, lr=1e-2, baseline=baseline)
    tuner = PPOFineTuner(TinyNet(), data, config)
    images = torch.stack([image for image, _ in data.items])
    reference = torch.stack([target for _, target in data.items]) > 0.5

    def greedy_dice() -> float:
        with torch.no_grad():
            return float(np.nanmean(mask_dice(tuner.new(images) > 0, reference).numpy()))

    before = greedy_dice()
    records = tuner.run()
    assert before < 0.1
    assert greedy_dice() > floor
    assert np.mean([r["d_new"] for r in records[-10:]]) > np.mean(
        [r["d_new"] for r in records[:10]]
    )


@pytest.mark.parametrize(
    "change",
    [
        {"steps": 0},
        {"sync_every": 0},
        {"clip": 0.0},
        {"clip": 1.5},
        {"kappa": -0.1},
        {"replay_size": -1},
        {"samples_per_image": 0},
        {"lr": 0.0},
        {"batch_size": 0},
        {"baseline": "median"},
        {"baseline": "mean", "samples_per_image": 1},
    ],
)
def test_bad_settings_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(InputError):
        check_rl_config(dataclasses.replace(RLConfig(), **change))


# --------------------------------------------------------------------------- command
def test_rl_tune_command_refuses_bad_input_with_one_sentence(tmp_path: Path) -> None:
    from vetseg.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["rl-tune", str(tmp_path / "nope"), str(tmp_path), "--out", "x"])
    assert result.exit_code == 2
    assert "nope" in result.output and "Traceback" not in result.output
    result = runner.invoke(
        app, ["rl-tune", str(tmp_path), str(tmp_path), "--out", "x", "--clip", "1.5"]
    )
    assert result.exit_code == 2 and "clip" in result.output


def _tiny_dataset(out: Path, cases: int = 3) -> None:
    """Cases of 6 x 64 x 64 voxels with a liver block and a kidney disc (vetseg ids 1 and 3), and
    a voxel of air in each slice."""
    from vetseg.data.phantoms import write_msd_dataset
    from vetseg.io.image import ImageMeta
    from vetseg.labels import CORE_ORGANS

    def generate():  # noqa: ANN202 - a generator of the writer's tuples
        yy, xx = np.mgrid[:64, :64]
        for k in range(cases):
            rng = np.random.default_rng(k)
            labels = np.zeros((6, 64, 64), np.uint8)
            labels[:, 10 + k : 30 + k, 12:36] = 1
            labels[:, (yy - 45) ** 2 + (xx - 40 - k) ** 2 < 36] = 3
            ct = rng.normal(-50, 20, labels.shape)
            ct[labels == 1] += 150
            ct[labels == 3] += 250
            ct[:, 0, 0] = -1000  # air in view, as in any CT in HU (vetseg.io.units)
            yield f"toy_{k:03d}", ct.astype(np.int16), labels, ImageMeta((1.0, 1.0, 2.0), (0, 0, 0))

    write_msd_dataset(out, generate(), CORE_ORGANS, {"species": "rabbit", "synthetic": True})


@pytest.mark.slow
def test_rl_tune_command_writes_a_child_model_and_a_step_log(tmp_path: Path) -> None:
    from vetseg.cli import app
    from vetseg.models.files import load_model

    parent_dir = tmp_path / "parent"
    parent = _parent_model(parent_dir)
    data = tmp_path / "data"
    _tiny_dataset(data)
    out = tmp_path / "child"
    args = ["rl-tune", str(parent_dir), str(data), "--out", str(out), "--steps", "3"]
    args += ["--batch-size", "2", "--sync-every", "2", "--replay-size", "8", "--seed", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    child, info = load_model(out)
    assert info.stage == "rl" and info.parent == "transfer-test"
    assert info.training["config"]["sync_every"] == 2
    assert "parent_val_mean_dice" in info.metrics and "val_mean_dice" in info.metrics
    lines = [json.loads(line) for line in (out / "rl" / "metrics.jsonl").read_text().splitlines()]
    steps = [line for line in lines if "reward" in line]
    assert [line["step"] for line in steps] == [1, 2, 3]
    assert [line["synced"] for line in steps] == [False, True, False]
    for line in steps:
        assert {"reward", "penalty", "d_old", "d_new"} <= line.keys()
    assert [line["step"] for line in lines if "val_mean_dice" in line] == [0, 3]
    assert not _states_equal(child, parent)


def _parent_model(folder: Path) -> nn.Module:
    """An untrained animal model at size 64 saved as a transfer result (small decoder)."""
    from vetseg.config import PreprocessConfig
    from vetseg.labels import CORE_ORGANS
    from vetseg.models.animal import AnimalOrganNet
    from vetseg.models.files import ModelInfo, save_model

    torch.manual_seed(0)
    parent = AnimalOrganNet(n_organs=len(CORE_ORGANS), decoder_channels=(32, 24, 16, 16))
    info = ModelInfo(
        model_id="transfer-test",
        architecture=parent.architecture(),
        organs=CORE_ORGANS,
        preprocess=PreprocessConfig(size=64),
        stage="transfer",
        species="rabbit",
    )
    save_model(parent, folder, info)
    return parent


@pytest.mark.slow
def test_rl_tune_workspace_registers_the_child_with_its_parent(tmp_path: Path) -> None:
    workspace_mod = pytest.importorskip("vetseg.workflow.workspace")
    register = pytest.importorskip("vetseg.workflow.register")
    from vetseg.cli import app
    from vetseg.labels import CORE_ORGANS

    _parent_model(tmp_path / "parent")
    data = tmp_path / "data"
    _tiny_dataset(data)
    settings = workspace_mod.WorkspaceSettings(species="rabbit", organs=CORE_ORGANS, synthetic=True)
    root = tmp_path / "ws"
    with workspace_mod.Workspace.create(root, settings) as ws:
        scans = sorted((data / "imagesTr").glob("*.nii.gz"))
        labels = sorted((data / "labelsTr").glob("*.nii.gz"))
        register.add_scans(ws, scans, labels)
        register.use_model(ws, tmp_path / "parent")

    runner = CliRunner()
    refused = runner.invoke(app, ["rl-tune", str(root), str(data)])
    assert refused.exit_code == 2 and "workspace" in refused.output
    result = runner.invoke(app, ["rl-tune", str(root), "--steps", "2", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    with workspace_mod.Workspace.open(root) as ws:
        child = [m for m in ws.models() if m.stage == "rl"]
        assert len(child) == 1 and child[0].parent == "transfer-test"
        assert (root / child[0].path / "model.json").is_file()
        gained = child[0].metrics["val_mean_dice"] > child[0].metrics["parent_val_mean_dice"]
        assert (ws.require_current_model().model_id == child[0].model_id) == gained
        assert any(row["action"] == "rl-tune" for row in ws.audit_log())


def test_rl_tune_reuses_the_parents_split_only_for_the_same_cases(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from vetseg.labels import CORE_ORGANS
    from vetseg.training.rl import _reuse_parent_split

    data = tmp_path / "data"
    _tiny_dataset(data)
    split = {"train": ["toy_000"], "val": ["toy_001"], "test": ["toy_002"]}
    # training_data: model.json's "data" resolved against the model folder (ModelInfo)
    parent = SimpleNamespace(training={"split": split}, training_data=data.resolve())
    target = tmp_path / "a" / "splits.json"
    target.parent.mkdir()
    _reuse_parent_split(parent, data, CORE_ORGANS, target)
    assert json.loads(target.read_text()) == split
    # Another case set (or another folder) gets a fresh split.
    other = SimpleNamespace(training={"split": {**split, "test": []}}, training_data=data.resolve())
    fresh = tmp_path / "b" / "splits.json"
    fresh.parent.mkdir()
    _reuse_parent_split(other, data, CORE_ORGANS, fresh)
    assert not fresh.exists()
    elsewhere = SimpleNamespace(training={"split": split}, training_data=tmp_path)
    _reuse_parent_split(elsewhere, data, CORE_ORGANS, fresh)
    assert not fresh.exists()
