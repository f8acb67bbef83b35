"""RL fine-tuning (S104): PPO-style updates of a segmentation model against Dice rewards.

The patent's formulas are lost; this is vetseg's reading of the method (DESIGN section 5).

Policy and actions
    The policy is the segmentation model as it runs at inference (eval mode: BatchNorm uses its
    running statistics, no stochastic depth). For an image it gives one logit ``z`` per organ and
    pixel; an *action* is a mask sampled pixel-wise, ``a ~ Bernoulli(sigmoid(z))``, every organ
    channel and pixel independently. Keeping the model in eval mode means the old and the new
    copy differ only by their weights (the ratio is exactly 1 right after a sync) and the
    BatchNorm statistics learned by supervised training are not disturbed by 4-slice batches.

Old and new copies
    ``old`` is a frozen copy (eval mode, no gradient); ``new`` is trained. Every ``sync_every``
    online updates, ``old <- new`` (weights and buffers copied exactly).

Reward
    For each image and organ, both copies sample a mask; ``D_old`` and ``D_new`` are their Dice
    against the reference label. ``penalty = kappa * |D_new - D_old|`` and
    ``reward = D_new - penalty``: with ``kappa = 0.5`` a gain over the old copy earns half its
    size and a loss costs one and a half times its size, so the reward is conservative.
    The baseline is the same formula on the greedy masks (``z > 0``) of the two copies, and
    ``advantage = reward - baseline`` (a self-critical baseline: a sample is reinforced only
    when it beats what the model would output anyway). ``RLConfig.baseline = "mean"`` uses
    instead, for each sample, the mean reward of the other samples of the same image and organ
    (leave-one-out). Measured (docs/rl.md): a pixel-wise sampled mask scores far below the
    greedy one (Dice ~0.25 against ~0.55 on the phantoms), so greedy-baseline advantages are
    almost all negative; their estimate is then dominated by ``-b grad log pi(a)``, noise that
    lies in the directions the output is most sensitive to, and the model degrades. The mean
    baseline centres the advantages and its update direction does raise the expected Dice.

How the log-probability is aggregated (and why)
    The unit is one organ channel of one image, never the whole image and never the single
    pixel:

    - ``log pi(a | image, organ) = mean over the H x W pixels of
      [a log sigmoid(z) + (1 - a) log sigmoid(-z)]``, one number per (sample, image, organ);
    - ``ratio = exp(logp_new - logp_old)`` of the *new* copy's sampled mask, one ratio per
      (sample, image, organ), i.e. the geometric mean of the per-pixel ratios;
    - ``loss = -mean over (sample, image, organ) of min(ratio A, clip(ratio, 1 - eps, 1 + eps) A)``.

    *Per organ*, because the organ channels are independent Bernoulli fields and the Dice of
    organ ``o`` depends only on channel ``o``: giving each channel its own reward is exact credit
    assignment, while one reward per image would add the other organs' sampling noise to every
    channel's gradient. *Mean, not sum*, over pixels: the sum (the exact log-probability of the
    mask) is thousands of per-pixel terms, so after a single optimiser step
    ``exp(sum of differences)`` leaves ``[0.8, 1.2]`` and nearly every sample is clipped; the
    mean keeps the trust region independent of the image size (the same length normalisation as
    sequence-level PPO variants such as GSPO). The per-pixel scaling of the gradient this brings
    (``1 / (H W)``) is absorbed by Adam. Caveat: most pixels are near-certain background, so the
    clip bounds the average change over the whole channel, not the change at the organ's edge.

Organs absent from the reference
    An (image, organ) pair whose reference is empty gets no reward and is left out of the loss:
    a pixel-wise sample of ``H W`` pixels almost always holds some positive pixels, so its Dice
    would be 0 whatever the model does and would teach nothing (the same reason Dice is
    undefined there in :mod:`vetseg.training.metrics`). False positives on slices without the
    organ are therefore not addressed by RL; the supervised stages that precede it handle them,
    and the validation Dice (volume level) shows whether RL degrades them.

Replay pool
    Every online update stores, per (sample, image), ``(image id, old mask, new mask, old
    log-prob, reward)``: the old copy's sampled mask, the new copy's sampled mask (the action),
    the old copy's log-probability of that action (``[n_organs]``) and its reward
    (``[n_organs]``, NaN where undefined). The pool is bounded (first in, first out); each online
    update is followed by ``replay_updates`` offline updates on ``batch_size`` entries drawn
    uniformly from it. An offline update recomputes the new copy's log-probability of the stored
    action and the greedy baseline (with the current copies), and takes the ratio against the
    stored old log-probability: an entry whose action the new copy already favours far more
    than the old copy that scored it falls outside the clip and stops pushing.

Estimator note
    The action is sampled from the new copy, so the ratio acts as PPO's trust region around the
    old copy rather than as an importance weight. When ``ratio`` lies within the clip range the
    gradient is ``ratio * A * grad log pi_new(a)``, within ``1 +- clip`` of the on-policy
    (REINFORCE with baseline) gradient, and exactly that gradient at a sync.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vetseg.config import RLConfig, to_dict
from vetseg.errors import InputError, VetsegError
from vetseg.fileutil import atomic_write_bytes, atomic_write_json

LOG_NAME = "metrics.jsonl"
#: Baselines of the advantage: the greedy masks' reward (DESIGN) or the other samples' mean.
BASELINES: tuple[str, ...] = ("greedy", "mean")


def check_rl_config(config: RLConfig) -> None:
    """Refuse settings that make no sense, with one sentence.

    Raises:
        InputError: a non-positive step count, sync interval, sample count, batch size or
            learning rate, a negative kappa, replay size or replay update count, or a clip
            outside (0, 1).
    """
    if config.steps < 1 or config.sync_every < 1:
        raise InputError(
            f"RL steps ({config.steps}) and sync interval ({config.sync_every}) must be >= 1."
        )
    if config.samples_per_image < 1 or config.batch_size < 1:
        raise InputError(
            f"samples per image ({config.samples_per_image}) and batch size"
            f" ({config.batch_size}) must be >= 1."
        )
    if not 0.0 < config.clip < 1.0:
        raise InputError(f"PPO clip {config.clip} must lie strictly between 0 and 1.")
    if config.kappa < 0:
        raise InputError(f"penalty weight kappa {config.kappa} must not be negative.")
    if config.replay_size < 0 or config.replay_updates < 0:
        raise InputError("replay size and replay updates must not be negative.")
    if not config.lr > 0:
        raise InputError(f"learning rate {config.lr} must be positive.")
    if config.baseline not in BASELINES:
        raise InputError(f"baseline {config.baseline!r} is unknown; use one of {BASELINES}.")
    if config.baseline == "mean" and config.samples_per_image < 2:
        raise InputError("the mean baseline needs at least 2 samples per image.")


# --------------------------------------------------------------------------- pure functions
def sample_masks(
    logits: torch.Tensor, samples: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Masks drawn pixel-wise from ``Bernoulli(sigmoid(logits))``.

    Args:
        logits: ``[B, n, H, W]``.
        samples: masks per image (K).
        generator: CPU random generator (seeded runs repeat).

    Returns:
        bool ``[K, B, n, H, W]``.
    """
    probs = torch.sigmoid(logits.detach().float())
    uniform = torch.rand((samples, *probs.shape), generator=generator, dtype=probs.dtype)
    return uniform.to(probs.device) < probs


def mask_log_prob(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Log-probability of masks under the pixel-wise Bernoulli policy, mean over pixels.

    Args:
        logits: ``[B, n, H, W]`` (keeps its gradient).
        masks: bool ``[..., B, n, H, W]`` (e.g. ``[K, B, n, H, W]``).

    Returns:
        ``[..., B, n]``: per organ channel, the mean over pixels of ``log pi(a_pixel)``.
    """
    z = logits.expand(masks.shape)
    # log sigmoid(z) for a = 1, log sigmoid(-z) = log(1 - sigmoid(z)) for a = 0, both stable.
    pixel = torch.where(masks, F.logsigmoid(z), F.logsigmoid(-z))
    return pixel.mean(dim=(-2, -1))


def mask_dice(pred: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Dice of each organ channel of each mask; NaN where the reference channel is empty.

    Args:
        pred: bool ``[..., n, H, W]``.
        reference: bool masks broadcastable to ``pred`` (e.g. ``[B, n, H, W]`` for ``pred``
            ``[K, B, n, H, W]``).

    Returns:
        float32 ``[..., n]`` in [0, 1], NaN for an organ absent from the reference.
    """
    reference = reference.bool().expand(pred.shape)
    tp = (pred & reference).sum(dim=(-2, -1)).float()
    n_pred = pred.sum(dim=(-2, -1)).float()
    n_ref = reference.sum(dim=(-2, -1)).float()
    dice = 2 * tp / (n_pred + n_ref).clamp(min=1)
    return torch.where(n_ref > 0, dice, torch.full_like(dice, math.nan))


def rl_reward(
    d_new: torch.Tensor, d_old: torch.Tensor, kappa: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``penalty = kappa |D_new - D_old|`` and ``reward = D_new - penalty``.

    Args:
        d_new: Dice of the new copy's masks (any shape).
        d_old: Dice of the old copy's masks (same shape).
        kappa: penalty weight.

    Returns:
        ``(reward, penalty)``, shaped like the inputs (NaN stays NaN).
    """
    penalty = kappa * (d_new - d_old).abs()
    return d_new - penalty, penalty


def greedy_baseline(
    logits_new: torch.Tensor, logits_old: torch.Tensor, reference: torch.Tensor, kappa: float
) -> torch.Tensor:
    """The reward of the greedy masks (``logit > 0``) of the two copies, ``[B, n]``."""
    d_new = mask_dice(logits_new.detach() > 0, reference)
    d_old = mask_dice(logits_old.detach() > 0, reference)
    return rl_reward(d_new, d_old, kappa)[0]


def leave_one_out_mean(reward: torch.Tensor) -> torch.Tensor:
    """For each of K samples, the mean reward of the other K - 1 (``[K, ...]`` -> ``[K, ...]``).

    Independent of the sample it is subtracted from, so the advantage stays unbiased.
    """
    samples = reward.shape[0]
    if samples < 2:
        raise ValueError("a leave-one-out mean needs at least 2 samples")
    return (reward.sum(dim=0, keepdim=True) - reward) / (samples - 1)


@dataclass
class Surrogate:
    """PPO clipped surrogate of one update.

    Attributes:
        loss: ``-mean(min(ratio A, clip(ratio) A))`` over the valid entries (scalar, with grad).
        plain: ``-mean(ratio A)`` over the same entries, the unclipped surrogate (no grad).
        ratio: ``exp(logp_new - logp_old)``, detached, shaped like the inputs.
        clip_fraction: share of valid entries whose ratio lies outside ``1 +- clip``.
    """

    loss: torch.Tensor
    plain: float
    ratio: torch.Tensor
    clip_fraction: float


def clipped_surrogate(
    logp_new: torch.Tensor,
    logp_old: torch.Tensor,
    advantage: torch.Tensor,
    clip: float,
    valid: torch.Tensor | None = None,
) -> Surrogate:
    """PPO's clipped objective as a loss to minimise.

    Args:
        logp_new: log-probabilities of the actions under the new copy (with grad).
        logp_old: their log-probabilities under the old copy (no grad).
        advantage: ``reward - baseline``; entries where it is NaN are left out.
        clip: epsilon of ``clip(ratio, 1 - eps, 1 + eps)``.
        valid: entries to use (default: where ``advantage`` is finite).

    Returns:
        The :class:`Surrogate`; with no valid entry the loss is a zero that still has a graph.
    """
    if valid is None:
        valid = torch.isfinite(advantage)
    adv = torch.where(valid, advantage, torch.zeros_like(advantage)).detach()
    ratio = torch.exp(logp_new - logp_old.detach())
    objective = torch.minimum(ratio * adv, ratio.clamp(1.0 - clip, 1.0 + clip) * adv)
    count = int(valid.sum())
    if count == 0:
        return Surrogate((logp_new * 0).sum(), 0.0, ratio.detach(), 0.0)
    loss = -objective[valid].sum() / count
    plain = float(-(ratio.detach() * adv)[valid].sum() / count)
    outside = ((ratio.detach() - 1).abs() > clip) & valid
    return Surrogate(loss, plain, ratio.detach(), float(outside.sum()) / count)


# --------------------------------------------------------------------------- replay pool
@dataclass(frozen=True)
class ReplayEntry:
    """One stored action: the masks are bit-packed (1/8 of a bool array's memory).

    Attributes:
        image_id: index of the image in the training slices.
        old_mask: packed bits of the old copy's sampled mask ``[n, H, W]``.
        new_mask: packed bits of the new copy's sampled mask (the action).
        old_log_prob: float32 ``[n]``, the old copy's log-probability of the action.
        reward: float32 ``[n]``, NaN where the organ is absent from the reference.
        shape: ``(n, H, W)`` of the masks.
    """

    image_id: int
    old_mask: np.ndarray
    new_mask: np.ndarray
    old_log_prob: np.ndarray
    reward: np.ndarray
    shape: tuple[int, int, int]

    @classmethod
    def from_tensors(
        cls,
        image_id: int,
        old_mask: torch.Tensor,
        new_mask: torch.Tensor,
        old_log_prob: torch.Tensor,
        reward: torch.Tensor,
    ) -> ReplayEntry:
        """Pack one (image, sample): masks bool ``[n, H, W]``, log-prob and reward ``[n]``."""
        return cls(
            image_id=int(image_id),
            old_mask=np.packbits(old_mask.detach().cpu().numpy().astype(bool)),
            new_mask=np.packbits(new_mask.detach().cpu().numpy().astype(bool)),
            old_log_prob=old_log_prob.detach().cpu().numpy().astype(np.float32),
            reward=reward.detach().cpu().numpy().astype(np.float32),
            shape=tuple(int(s) for s in new_mask.shape),  # type: ignore[arg-type]
        )

    def _unpack(self, bits: np.ndarray) -> torch.Tensor:
        count = int(np.prod(self.shape))
        flat = np.unpackbits(bits, count=count).astype(bool)
        return torch.from_numpy(flat.reshape(self.shape))

    def old_mask_tensor(self) -> torch.Tensor:
        """The old copy's mask, bool ``[n, H, W]``."""
        return self._unpack(self.old_mask)

    def new_mask_tensor(self) -> torch.Tensor:
        """The action, bool ``[n, H, W]``."""
        return self._unpack(self.new_mask)


class ReplayPool:
    """A bounded pool of :class:`ReplayEntry`; the oldest entry leaves when a new one comes.

    Args:
        capacity: the most entries held (0: the pool stays empty).
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError(f"replay capacity must not be negative, got {capacity}")
        self.capacity = int(capacity)
        self._entries: deque[ReplayEntry] = deque(maxlen=self.capacity or 1)

    def __len__(self) -> int:
        return len(self._entries) if self.capacity else 0

    def add(self, entry: ReplayEntry) -> None:
        """Store ``entry`` (dropping the oldest one when full)."""
        if self.capacity:
            self._entries.append(entry)

    def sample(self, count: int, rng: np.random.Generator) -> list[ReplayEntry]:
        """``count`` entries drawn uniformly (without replacement when the pool has enough).

        Raises:
            ValueError: when the pool is empty.
        """
        if not len(self):
            raise ValueError("cannot sample from an empty replay pool")
        picks = rng.choice(len(self), size=count, replace=count > len(self))
        return [self._entries[int(i)] for i in picks]


# --------------------------------------------------------------------------- the tuner
@dataclass
class Rollout:
    """Everything one online update needs (K samples of B images, n organs).

    Attributes:
        image_ids: ``[B]`` indices of the images in the training slices.
        old_masks: bool ``[K, B, n, H, W]`` sampled from the old copy.
        new_masks: bool ``[K, B, n, H, W]`` sampled from the new copy (the actions).
        d_old: ``[K, B, n]`` Dice of ``old_masks``; NaN where the organ is absent.
        d_new: ``[K, B, n]`` Dice of ``new_masks``.
        penalty: ``[K, B, n]``.
        reward: ``[K, B, n]``.
        baseline: ``[K, B, n]`` the greedy masks' reward (the same for the K samples) or,
            with ``baseline="mean"``, the leave-one-out mean of the other samples' rewards.
        advantage: ``[K, B, n]``.
        logp_new: ``[K, B, n]`` new copy's log-probability of the actions (with grad).
        logp_old: ``[K, B, n]`` old copy's log-probability of the actions.
    """

    image_ids: list[int]
    old_masks: torch.Tensor
    new_masks: torch.Tensor
    d_old: torch.Tensor
    d_new: torch.Tensor
    penalty: torch.Tensor
    reward: torch.Tensor
    baseline: torch.Tensor
    advantage: torch.Tensor
    logp_new: torch.Tensor
    logp_old: torch.Tensor


def _nanmean(values: torch.Tensor) -> float:
    finite = values[torch.isfinite(values)]
    return float(finite.mean()) if finite.numel() else math.nan


class PPOFineTuner:
    """PPO-style fine-tuning of a segmentation model (see the module docstring).

    Args:
        model: the network to tune (``[B, 1, S, S] -> [B, n, S, S]`` logits); it becomes the
            new copy and is trained in place (in eval mode, every parameter trainable).
        train_set: a dataset of ``(image [1, S, S], target [n, S, S])`` (e.g. a
            :class:`~vetseg.data.slices.SliceDataset` without augmentation); image ids are
            its indices.
        config: the RL settings.
        weights: sampling weights of the images (default uniform).
    """

    def __init__(
        self,
        model: nn.Module,
        train_set: Any,
        config: RLConfig,
        weights: np.ndarray | None = None,
    ) -> None:
        check_rl_config(config)
        if len(train_set) == 0:
            raise InputError("no training slices to fine-tune on.")
        self.config = config
        self.train_set = train_set
        self.new = model
        if hasattr(model, "unfreeze_all"):
            model.unfreeze_all()
        model.requires_grad_(True)
        model.eval()
        self.old = copy.deepcopy(model)
        self.old.requires_grad_(False)
        self.old.eval()
        if weights is not None:
            weights = np.asarray(weights, dtype=np.float64)
            if weights.shape != (len(train_set),) or weights.min() < 0 or weights.sum() <= 0:
                raise ValueError("weights must be one non-negative number per image, not all 0")
            weights = weights / weights.sum()
        self.weights = weights
        self.optimizer = torch.optim.Adam(self.new.parameters(), lr=config.lr)
        self.pool = ReplayPool(config.replay_size)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.rng = np.random.default_rng([config.seed, 0x5EED])
        self.steps_done = 0

    # ------------------------------------------------------------------ data
    def load_batch(self, image_ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``[B, 1, S, S]`` and bool reference masks ``[B, n, S, S]`` of ``image_ids``."""
        items = [self.train_set[int(i)] for i in image_ids]
        device = next(self.new.parameters()).device
        images = torch.stack([image for image, _ in items]).to(device)
        reference = torch.stack([target for _, target in items]).to(device) > 0.5
        return images, reference

    def draw_images(self) -> list[int]:
        """A batch of image ids, drawn with the sampling weights."""
        n = len(self.train_set)
        size = self.config.batch_size
        picks = self.rng.choice(n, size=size, replace=size > n, p=self.weights)
        return [int(i) for i in picks]

    # ------------------------------------------------------------------ updates
    def sync(self) -> None:
        """``old <- new``: copy every weight and buffer exactly."""
        self.old.load_state_dict(self.new.state_dict())

    def rollout(self, image_ids: Sequence[int]) -> Rollout:
        """Sample masks from both copies for ``image_ids`` and score them."""
        cfg = self.config
        images, reference = self.load_batch(image_ids)
        with torch.no_grad():
            logits_old = self.old(images)
        logits_new = self.new(images)
        new_masks = sample_masks(logits_new, cfg.samples_per_image, self.generator)
        old_masks = sample_masks(logits_old, cfg.samples_per_image, self.generator)
        d_new = mask_dice(new_masks, reference)
        d_old = mask_dice(old_masks, reference)
        reward, penalty = rl_reward(d_new, d_old, cfg.kappa)
        if cfg.baseline == "mean":
            baseline = leave_one_out_mean(reward)
        else:
            baseline = greedy_baseline(logits_new, logits_old, reference, cfg.kappa).expand_as(
                reward
            )
        with torch.no_grad():
            logp_old = mask_log_prob(logits_old, new_masks)
        return Rollout(
            image_ids=[int(i) for i in image_ids],
            old_masks=old_masks,
            new_masks=new_masks,
            d_old=d_old,
            d_new=d_new,
            penalty=penalty,
            reward=reward,
            baseline=baseline,
            advantage=reward - baseline,
            logp_new=mask_log_prob(logits_new, new_masks),
            logp_old=logp_old,
        )

    def _apply(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            raise VetsegError(f"RL fine-tuning diverged at step {self.steps_done + 1}.")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def replay_loss(self, entries: Sequence[ReplayEntry]) -> Surrogate:
        """The clipped surrogate of stored actions under the current new copy."""
        images, reference = self.load_batch([e.image_id for e in entries])
        with torch.no_grad():
            logits_old = self.old(images)
        logits_new = self.new(images)
        device = logits_new.device
        actions = torch.stack([e.new_mask_tensor() for e in entries]).to(device)
        logp_old = torch.from_numpy(np.stack([e.old_log_prob for e in entries])).to(device)
        reward = torch.from_numpy(np.stack([e.reward for e in entries])).to(device)
        if self.config.baseline == "mean":
            # The stored action's siblings are gone: the mean reward of fresh samples of the
            # current copies (independent of the stored action) takes their place.
            fresh_new = sample_masks(logits_new, self.config.samples_per_image, self.generator)
            fresh_old = sample_masks(logits_old, self.config.samples_per_image, self.generator)
            fresh = rl_reward(
                mask_dice(fresh_new, reference), mask_dice(fresh_old, reference), self.config.kappa
            )[0]
            baseline = fresh.mean(dim=0)
        else:
            baseline = greedy_baseline(logits_new, logits_old, reference, self.config.kappa)
        return clipped_surrogate(
            mask_log_prob(logits_new, actions), logp_old, reward - baseline, self.config.clip
        )

    def step(self) -> dict[str, Any]:
        """One online update, its replay updates, and a sync when due.

        Returns:
            The step's record: means over the valid (sample, image, organ) entries of reward,
            penalty, D_old, D_new, baseline and advantage; loss, mean ratio, clip fraction,
            replay loss, pool size, whether the copies were synced.
        """
        cfg = self.config
        started = time.perf_counter()
        rollout = self.rollout(self.draw_images())
        surrogate = clipped_surrogate(
            rollout.logp_new, rollout.logp_old, rollout.advantage, cfg.clip
        )
        self._apply(surrogate.loss)
        for k in range(cfg.samples_per_image):
            for b, image_id in enumerate(rollout.image_ids):
                self.pool.add(
                    ReplayEntry.from_tensors(
                        image_id,
                        rollout.old_masks[k, b],
                        rollout.new_masks[k, b],
                        rollout.logp_old[k, b],
                        rollout.reward[k, b],
                    )
                )
        replay_losses = []
        for _ in range(cfg.replay_updates):
            if not len(self.pool):
                break
            replay = self.replay_loss(self.pool.sample(cfg.batch_size, self.rng))
            self._apply(replay.loss)
            replay_losses.append(float(replay.loss.detach()))
        self.steps_done += 1
        synced = self.steps_done % cfg.sync_every == 0
        if synced:
            self.sync()
        valid = torch.isfinite(rollout.advantage)
        return {
            "step": self.steps_done,
            "reward": _nanmean(rollout.reward),
            "penalty": _nanmean(rollout.penalty),
            "d_old": _nanmean(rollout.d_old),
            "d_new": _nanmean(rollout.d_new),
            "baseline": _nanmean(rollout.baseline),
            "advantage": _nanmean(rollout.advantage),
            "loss": float(surrogate.loss.detach()),
            "ratio": float(surrogate.ratio[valid].mean()) if valid.any() else 1.0,
            "clip_fraction": surrogate.clip_fraction,
            "replay_loss": float(np.mean(replay_losses)) if replay_losses else None,
            "pool": len(self.pool),
            "synced": synced,
            "seconds": round(time.perf_counter() - started, 3),
        }

    def run(
        self, steps: int | None = None, on_step: Callable[[dict[str, Any]], None] | None = None
    ) -> list[dict[str, Any]]:
        """``steps`` (default ``config.steps``) calls of :meth:`step`; returns their records."""
        records = []
        for _ in range(self.config.steps if steps is None else steps):
            record = self.step()
            records.append(record)
            if on_step is not None:
                on_step(record)
        self.new.eval()
        return records


# --------------------------------------------------------------------------- the stage
def _json_safe(record: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()
    }


def _reuse_parent_split(parent: Any, data: Path | Any, organs: Sequence[str], path: Path) -> None:
    """Write the parent's split to ``path`` when ``data`` holds exactly the parent's cases.

    The validation cases then are ones the parent never trained on, so "before" and "after"
    are honest. Any other data (more cases, another folder) gets a fresh split.
    """
    from vetseg.data.datasets import open_dataset, write_splits

    split = parent.training.get("split") or {}
    if path.is_file() or not split.get("train") or not split.get("val"):
        return
    if hasattr(data, "cases"):
        return  # an opened dataset (a workspace's cases): its case list changes between rounds
    if parent.training_data is None or Path(data).resolve() != parent.training_data:
        return
    dataset = open_dataset(Path(data), organs=organs)
    labelled = {c.case_id for c in dataset.cases if c.label is not None or c.label_dir is not None}
    parts = ("train", "val", "test")  # the split also records "hashes"
    if labelled == {cid for part in parts for cid in split.get(part, [])}:
        write_splits(path, {k: list(split.get(k, [])) for k in parts})


def rl_tune(
    parent_model: Path,
    data: Path | Any,
    out: Path,
    config: RLConfig | None = None,
    *,
    ratios: tuple[int, int, int] = (8, 1, 1),
    eval_every: int = 0,
    progress: bool = True,
    stage: str = "rl",
    model_id: str | None = None,
    check_units: bool = True,
) -> Any:
    """S104: PPO-style fine-tuning of an animal (or human) model; writes a child model.

    Writes ``out/model.safetensors`` + ``out/model.json`` (stage ``stage``, the parent's id
    recorded) and ``out/rl/`` with ``splits.json``, ``config.json`` and ``metrics.jsonl`` (one
    JSON line per step: reward, penalty, D_old, D_new, ...; lines with ``"val_mean_dice"`` at
    the start, every ``eval_every`` steps and at the end).

    Args:
        parent_model: the model folder to start from.
        data: labelled dataset folder or an opened ``CaseDataset`` (a workspace's cases).
        out: the child model's folder.
        config: the RL settings (default ``RLConfig()``).
        ratios: train : val : test split of the labelled cases (by case), used unless
            ``data`` is the very dataset the parent was trained on (then the parent's split
            is reused so that validation cases stay unseen); the validation cases give the
            Dice before and after.
        eval_every: also log the validation Dice every this many steps (0: start and end).
        progress: show a progress bar.
        stage: the stage name recorded in model.json.
        model_id: the child's id (default a new ``rl-<time>-<random>`` id).
        check_units: refuse cases that are not in the model's units (a HU model's cases show
            air; :mod:`vetseg.io.units`).

    Returns:
        The child's :class:`~vetseg.models.files.ModelInfo`.
    """
    from vetseg.data.slices import SliceDataset
    from vetseg.models.files import ModelInfo, load_model, new_model_id, save_model
    from vetseg.training.progress import make_progress
    from vetseg.training.stages import prepare_data, training_record
    from vetseg.training.trainer import make_validation_cases, nanmean, organ_mean, validation_dice

    config = config or RLConfig()
    check_rl_config(config)
    if eval_every < 0:
        raise InputError(f"evaluation interval {eval_every} must not be negative.")
    out = Path(out)
    model, parent = load_model(Path(parent_model))
    organs = parent.organs
    rl_dir = out / "rl"
    rl_dir.mkdir(parents=True, exist_ok=True)
    _reuse_parent_split(parent, data, organs, rl_dir / "splits.json")
    prepared = prepare_data(
        data,
        organs,
        config.seed,
        rl_dir / "splits.json",
        ratios,
        orientation=parent.preprocess.orientation,
        units_window=parent.preprocess.window if check_units else None,
    )
    atomic_write_json(rl_dir / "config.json", to_dict(config))
    torch.manual_seed(config.seed)
    # No augmentation: the reward is the Dice against the case's own label. Slices without any
    # organ give no reward (see the module docstring), so none is kept.
    train_set = SliceDataset(
        prepared.train, organs, parent.preprocess, empty_slice_rate=0.0, seed=config.seed
    )
    val_cases = make_validation_cases(prepared.val, parent.preprocess)
    tuner = PPOFineTuner(model, train_set, config, weights=train_set.slice_weights())
    log_path = rl_dir / LOG_NAME
    atomic_write_bytes(log_path, b"")

    def log(record: dict[str, Any]) -> None:
        with open(log_path, "a") as handle:
            handle.write(json.dumps(_json_safe(record)) + "\n")

    def evaluate(step: int) -> tuple[float, list[float | None]]:
        if not val_cases:
            return math.nan, []
        table = validation_dice(tuner.new, val_cases, len(organs))
        per_organ = [organ_mean(table[:, i]) for i in range(len(organs))]
        mean = nanmean(table)
        log(
            {
                "step": step,
                "val_mean_dice": mean,
                "val_dice": dict(zip(organs, per_organ, strict=True)),
            }
        )
        return mean, per_organ

    start_dice, _ = evaluate(0)
    started = time.perf_counter()
    with make_progress(enabled=progress) as bar:
        task = bar.add_task("RL fine-tuning", total=config.steps, info="")
        for _ in range(config.steps):
            record = tuner.step()
            log(record)
            bar.update(
                task,
                advance=1,
                info=(
                    f"reward {record['reward']:.3f} penalty {record['penalty']:.3f} "
                    f"D_new {record['d_new']:.3f}"
                ),
            )
            if eval_every and record["step"] % eval_every == 0 and record["step"] < config.steps:
                evaluate(record["step"])
    end_dice, end_per_organ = evaluate(config.steps)
    tuner.new.eval()
    metrics = {
        "val_mean_dice": end_dice,
        "val_dice": dict(zip(organs, end_per_organ, strict=False)),
        "parent_val_mean_dice": start_dice,
        "rl_steps": config.steps,
        "seconds": round(time.perf_counter() - started, 1),
    }
    training = training_record(prepared, config, train_set, out)
    info = ModelInfo(
        model_id=model_id or new_model_id(stage),
        architecture=model.architecture(),
        organs=organs,
        preprocess=parent.preprocess,
        stage=stage,
        species=parent.species,
        parent=parent.model_id,
        training=training,
        metrics=_json_safe(metrics),
        synthetic_data=bool(prepared.dataset.synthetic) or parent.synthetic_data,
        real_data=prepared.dataset.has_real_cases,
    )
    save_model(tuner.new, out, info)
    return info


__all__ = [
    "PPOFineTuner",
    "ReplayEntry",
    "ReplayPool",
    "Rollout",
    "Surrogate",
    "check_rl_config",
    "clipped_surrogate",
    "greedy_baseline",
    "leave_one_out_mean",
    "mask_dice",
    "mask_log_prob",
    "rl_reward",
    "rl_tune",
    "sample_masks",
]
