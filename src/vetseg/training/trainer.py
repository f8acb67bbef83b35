"""One short training loop for every stage: human model, transfer, refine rounds.

A stage is a list of phases (``Phase(epochs=50, frozen=("body",))`` then ``Phase(epochs=50)``),
Adam with the stage's learning rate and weight decay (the transferred parts optionally at a
scaled rate), the stage's loss (BCE + Tversky; Dice + CE for the peer baseline), validation Dice
per organ after every epoch, and the selection rule of DESIGN section 4: the best validation
Dice among the selectable epochs (the unfrozen ones when some were frozen), with ``extend`` more
epochs when that best stays under the threshold. Without any validation case the last epoch is
kept.

Every epoch ends with one atomic checkpoint file (:mod:`vetseg.training.checkpoint`). Every
random draw of an epoch (sampling, augmentation, stochastic depth) is seeded from
``(seed, epoch)``, so a run resumed from a checkpoint reaches the same weights as an
uninterrupted one.

Under torchrun the same loop runs in every process (:mod:`vetseg.training.distributed`): each
trains on its share of every global batch in DistributedDataParallel, validates its share of
the cases, and rank 0 alone writes the checkpoint and the log. On CUDA the forward pass runs in
bfloat16 autocast with channels-last tensors; on the CPU in float32 as before.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vetseg.config import StageConfig, to_dict
from vetseg.errors import VetsegError
from vetseg.fileutil import atomic_write_bytes
from vetseg.training import distributed
from vetseg.training.checkpoint import load_checkpoint, save_checkpoint
from vetseg.training.validation import (  # noqa: F401 - re-exported: the trainer's inputs
    ValidationCase,
    make_validation_cases,
    nanmean,
    organ_mean,
    validation_dice,
)

CHECKPOINT_NAME = "checkpoint.safetensors"
METRICS_NAME = "metrics.jsonl"


@dataclass(frozen=True)
class Phase:
    """A run of epochs with some model parts frozen (no gradient, norm statistics fixed)."""

    epochs: int
    frozen: tuple[str, ...] = ()
    name: str = "train"


def stage_phases(config: StageConfig, frozen_parts: tuple[str, ...] = ("body",)) -> list[Phase]:
    """The phase list of a stage: ``freeze_epochs`` with ``frozen_parts`` frozen, then the rest."""
    phases = []
    if config.freeze_epochs:
        phases.append(Phase(config.freeze_epochs, frozen_parts, "frozen"))
    if config.epochs - config.freeze_epochs:
        phases.append(Phase(config.epochs - config.freeze_epochs, (), "unfrozen"))
    return phases


@dataclass
class FitResult:
    """Outcome of :meth:`Trainer.fit`; ``model`` holds the selected (best) weights."""

    best_epoch: int
    best_dice: float
    best_per_organ: list[float | None]
    extended: bool
    history: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """Train a model through its phases, validate every epoch, select, checkpoint, resume.

    Args:
        model: a network with ``freeze(parts)`` / ``unfreeze_all()`` (vetseg models).
        train_set: a :class:`~vetseg.data.slices.SliceDataset` (``set_epoch``, ``slice_weights``).
        val_cases: validation cases from :func:`make_validation_cases`.
        organs: organ names, one output channel each.
        config: the stage's settings.
        out_dir: where checkpoint and metrics log go.
        phases: phase list; default :func:`stage_phases` of ``config``.
        progress: show a rich progress bar (rank 0).
        on_epoch: called with each epoch's record (e.g. to print or to stop early in tests).
        context: the process's place in a torchrun run; default :func:`distributed.current`.
    """

    def __init__(
        self,
        model: nn.Module,
        train_set: Any,
        val_cases: Sequence[ValidationCase],
        organs: Sequence[str],
        config: StageConfig,
        out_dir: Path,
        *,
        phases: list[Phase] | None = None,
        progress: bool = True,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
        context: distributed.Distributed | None = None,
    ) -> None:
        from vetseg.training.losses import make_loss
        from vetseg.training.optim import make_optimizer

        self.dist = context or distributed.current()
        if self.dist.enabled:
            distributed.sync_batchnorm(model, self.dist.device)
        self.model = model.to(self.dist.device)
        self.cuda = self.dist.device.type == "cuda"
        if self.cuda:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.train_set = train_set
        self.val_cases = list(val_cases)
        self.organs = tuple(organs)
        self.config = config
        self.out_dir = Path(out_dir)
        self.phases = phases if phases is not None else stage_phases(config)
        self.progress = progress and self.dist.is_main
        self.on_epoch = on_epoch
        self.loss_fn = make_loss(
            config.loss,
            config.tversky_alpha,
            config.tversky_beta,
            reduce_counts=distributed.all_reduce_sum if self.dist.enabled else None,
        )
        self.optimizer = make_optimizer(model, config)
        self.history: list[dict[str, Any]] = []
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch = -1
        self.best_dice = -math.inf
        self.extended = False

    # ------------------------------------------------------------------ schedule
    def _phase_of(self, epoch: int) -> Phase:
        start = 0
        for phase in self.phases:
            if epoch < start + phase.epochs:
                return phase
            start += phase.epochs
        return self.phases[-1]  # extension epochs continue the last phase

    @property
    def scheduled_epochs(self) -> int:
        return sum(p.epochs for p in self.phases)

    def _selectable(self, epoch: int) -> bool:
        # "best val Dice among unfrozen epochs": frozen epochs count only when no epoch is unfrozen.
        if all(p.frozen for p in self.phases):
            return True
        return not self._phase_of(epoch).frozen

    # ------------------------------------------------------------------ one epoch
    def _train_epoch(self, epoch: int, progress: Any) -> float:
        cfg, rank, world = self.config, self.dist.rank, self.dist.world_size
        phase = self._phase_of(epoch)
        self.model.unfreeze_all()
        if phase.frozen:
            self.model.freeze(phase.frozen)
        self.model.train()
        epoch_seed = cfg.seed * 100_003 + epoch
        # Stochastic depth differs between processes (their samples differ); rank 0 draws as
        # a single process would.
        torch.manual_seed(epoch_seed + 7919 * rank)
        self.train_set.set_epoch(epoch)
        generator = torch.Generator().manual_seed(epoch_seed)
        weights = torch.as_tensor(
            self.train_set.slice_weights(cfg.organ_balance), dtype=torch.double
        )
        n_samples = (
            cfg.steps_per_epoch * cfg.batch_size if cfg.steps_per_epoch else len(self.train_set)
        )
        # One global sample stream for every process count: each takes its share of a batch.
        indices = list(
            torch.utils.data.WeightedRandomSampler(
                weights, n_samples, replacement=True, generator=generator
            )
        )
        if n_samples >= 2 * cfg.batch_size or world > 1:
            indices = indices[: len(indices) // cfg.batch_size * cfg.batch_size]
        loader = torch.utils.data.DataLoader(
            self.train_set,
            batch_size=cfg.batch_size // world,
            sampler=distributed.shard_batches(indices, cfg.batch_size, rank, world),
            num_workers=cfg.num_workers,
        )
        net = distributed.wrap(self.model, self.dist)
        task = progress.add_task(f"epoch {epoch + 1} ({phase.name})", total=len(loader), info="")
        losses = []
        for images, targets in loader:
            images, targets = self._to_device(images), targets.to(self.dist.device)
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda):
                logits = net(images)
            loss = self.loss_fn(logits.float(), targets)
            if not torch.isfinite(loss):
                raise VetsegError(f"training diverged at epoch {epoch + 1} (loss {loss.item()}).")
            loss.backward()
            self.optimizer.step()
            losses.append(loss.item())
            progress.update(task, advance=1, info=f"loss {np.mean(losses):.4f}")
        progress.remove_task(task)
        mean_loss = float(np.mean(losses)) if losses else float("nan")
        return distributed.mean_over_processes(mean_loss) if world > 1 else mean_loss

    def _to_device(self, images: torch.Tensor) -> torch.Tensor:
        if not self.cuda:
            return images
        return images.to(self.dist.device, memory_format=torch.channels_last, non_blocking=True)

    def _validate(self) -> np.ndarray:
        """Per-case Dice rows; under torchrun each process scores its share of the cases."""
        n_organs, rank, world = len(self.organs), self.dist.rank, self.dist.world_size
        if world == 1:
            return validation_dice(self.model, self.val_cases, n_organs)
        mine = list(range(rank, len(self.val_cases), world))
        rows = validation_dice(self.model, [self.val_cases[i] for i in mine], n_organs)
        gathered = distributed.all_gather_objects(list(zip(mine, rows.tolist(), strict=True)))
        ordered = [row for _, row in sorted(gathered, key=lambda item: item[0])]
        return np.asarray(ordered, dtype=np.float64).reshape(len(self.val_cases), n_organs)

    # ------------------------------------------------------------------ loop
    def fit(self, resume: bool = False) -> FitResult:
        """Run (or resume) the stage; the model ends with the selected weights loaded."""
        from vetseg.training.progress import make_progress

        self.out_dir.mkdir(parents=True, exist_ok=True)
        start_epoch = 0
        if resume and (self.out_dir / CHECKPOINT_NAME).is_file():
            start_epoch = self._load_checkpoint()
        if self.dist.is_main:
            self._rewrite_metrics_log()
        with make_progress(enabled=self.progress) as progress:
            epoch = start_epoch
            while epoch < self.scheduled_epochs + (self.config.extend if self.extended else 0):
                started = time.perf_counter()
                train_loss = self._train_epoch(epoch, progress)
                per_case = self._validate()
                per_organ = [organ_mean(per_case[:, i]) for i in range(len(self.organs))]
                # No validation case (a single labelled case): nothing to select on, so every
                # selectable epoch replaces the last and the final one is kept; Dice is null.
                mean_dice = nanmean(per_case) if self.val_cases else None
                record = {
                    "epoch": epoch + 1,
                    "phase": self._phase_of(epoch).name,
                    "frozen": list(self._phase_of(epoch).frozen),
                    "train_loss": train_loss,
                    "val_dice": dict(zip(self.organs, per_organ, strict=True)),
                    "val_mean_dice": mean_dice,
                    "selectable": self._selectable(epoch),
                    "seconds": round(time.perf_counter() - started, 2),
                }
                better = mean_dice is None or mean_dice > self.best_dice
                if record["selectable"] and better:
                    self.best_dice = -math.inf if mean_dice is None else mean_dice
                    self.best_epoch = epoch + 1
                    self.best_state = copy.deepcopy(self.model.state_dict())
                record["best_epoch"] = self.best_epoch
                self.history.append(record)
                epoch += 1
                if (
                    epoch == self.scheduled_epochs
                    and not self.extended
                    and self.config.extend > 0
                    and self.val_cases
                    and self.best_dice < self.config.threshold
                ):
                    self.extended = True
                    record["extension"] = (
                        f"best Dice {self.best_dice:.3f} < threshold {self.config.threshold}: "
                        f"{self.config.extend} more epochs"
                    )
                if self.dist.is_main:
                    self._append_metrics(record)
                    self._save_checkpoint(epoch)
                    progress.console.print(
                        f"epoch {record['epoch']:>3} {record['phase']:<8} loss {train_loss:.4f}  "
                        + (
                            f"val Dice {mean_dice:.3f}  (best {self.best_dice:.3f} @"
                            f" {self.best_epoch})"
                            if mean_dice is not None
                            else "no validation case: the last epoch is kept"
                        )
                    )
                if self.on_epoch is not None:
                    self.on_epoch(record)
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        if self.dist.enabled:
            distributed.local_batchnorm(self.model)
            distributed.barrier()  # no process leaves while rank 0 still writes
        self.model.unfreeze_all()
        self.model.eval()
        best = next((r for r in self.history if r["epoch"] == self.best_epoch), None)
        return FitResult(
            best_epoch=self.best_epoch,
            best_dice=float(self.best_dice) if self.val_cases else math.nan,
            best_per_organ=list(best["val_dice"].values()) if best else [],
            extended=self.extended,
            history=list(self.history),
        )

    # ------------------------------------------------------------------ files
    def _append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.out_dir / METRICS_NAME, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def _rewrite_metrics_log(self) -> None:
        # The log holds exactly the epochs the checkpoint has (a kill between the two writes
        # must not leave an epoch twice).
        text = "".join(json.dumps(r) + "\n" for r in self.history)
        atomic_write_bytes(self.out_dir / METRICS_NAME, text.encode())

    def _save_checkpoint(self, epochs_done: int) -> None:
        state_json = {
            "epochs_done": epochs_done,
            "best_epoch": self.best_epoch,
            "best_dice": self.best_dice if math.isfinite(self.best_dice) else None,
            "extended": self.extended,
            "history": self.history,
            "config": to_dict(self.config),
        }
        save_checkpoint(
            self.out_dir / CHECKPOINT_NAME, self.model, self.best_state, self.optimizer, state_json
        )

    def _load_checkpoint(self) -> int:
        state = load_checkpoint(
            self.out_dir / CHECKPOINT_NAME, self.model, self.optimizer, self.dist.device
        )
        self.best_state = state["best_state"]
        self.best_epoch = int(state["best_epoch"])
        self.best_dice = -math.inf if state["best_dice"] is None else float(state["best_dice"])
        self.extended = bool(state["extended"])
        self.history = list(state["history"])
        return int(state["epochs_done"])
