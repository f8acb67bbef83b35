"""Does RL fine-tuning (S104) help? Held-out Dice of three continuations of one transfer model.

On rabbit phantoms with 5 labelled cases (4 train, 1 validation) and separate held-out rabbits,
one transfer model is trained once (cached in ``--work``), then for every seed:

(a) ``start``: no further training;
(b) ``supervised``: the same number of optimiser updates of plain supervised fine-tuning
    (vetseg's Trainer: BCE + Tversky, augmentation, BatchNorm in train mode, batch ``--batch``);
(c) ``rl``: PPO-style RL fine-tuning (``vetseg.training.rl``), ``--steps`` online updates, each
    followed by ``replay_updates`` offline updates from the replay pool, batch ``--batch``.

Both fine-tunings use Adam with the same learning rate by default (Adam's step size does not
depend on the loss's scale) and keep their final weights (no selection), so the comparison is
update for update. Dice is volume-level per held-out case at model resolution (axial slices at
``--size``), averaged over organs present, then over cases. Phantoms prove nothing about real
animals; the figures say whether the method helps on this toy problem, nothing more.

Writes ``benchmarks/results/rl_compare.json`` (figures, settings, timings and the command).

Usage::

    python benchmarks/rl_compare.py                    # ~10 min on 2 CPU cores
    python benchmarks/rl_compare.py --seeds 0 --steps 10 --out /tmp/rl_smoke.json
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vetseg.config import PreprocessConfig, RLConfig, StageConfig, to_dict
from vetseg.fileutil import atomic_write_json
from vetseg.models.files import load_model

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "vetseg-rl")
    parser.add_argument("--out", type=Path, default=RESULTS / "rl_compare.json")
    parser.add_argument("--human", type=Path, default=None, help="human model (default: train)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=40, help="online RL updates")
    parser.add_argument("--replay-updates", type=int, default=1)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam lr of both fine-tunings")
    parser.add_argument("--rl-lr", type=float, default=None, help="RL lr (default --lr)")
    parser.add_argument("--kappa", type=float, default=0.5)
    parser.add_argument("--clip", type=float, default=0.2)
    parser.add_argument("--sync-every", type=int, default=10)
    parser.add_argument("--samples", type=int, default=2, help="samples per image")
    parser.add_argument("--held-out", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def _case_table(model: torch.nn.Module, cases: list[Any], n_organs: int) -> np.ndarray:
    from vetseg.training.trainer import validation_dice

    return validation_dice(model, cases, n_organs)


def _summary(tables: list[np.ndarray], organs: tuple[str, ...]) -> dict[str, Any]:
    """Mean Dice per seed, their mean and standard deviation, and per-organ means."""
    from vetseg.training.trainer import nanmean

    per_seed = [nanmean(t) for t in tables]
    stacked = np.stack(tables)  # seeds x cases x organs
    per_organ = {o: nanmean(stacked[:, :, i]) for i, o in enumerate(organs)}
    return {
        "mean_dice": float(np.mean(per_seed)),
        "std_dice": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0,
        "per_seed": per_seed,
        "per_organ": per_organ,
        "per_case_mean": [nanmean(stacked[:, c, :]) for c in range(stacked.shape[1])],
    }


def prepare(args: argparse.Namespace, timings: dict[str, float]) -> tuple[Path, Path, Path]:
    """Phantoms, the human model and the transfer model, made once and cached in ``--work``."""
    from vetseg.data.phantoms import write_phantom_dataset
    from vetseg.training.stages import train_human, transfer

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    labelled, held_out = work / "rabbit_labelled", work / "rabbit_heldout"
    t0 = time.perf_counter()
    if not (labelled / "dataset.json").is_file():
        write_phantom_dataset(labelled, "rabbit", 5, seed=1)
    if not (held_out / "dataset.json").is_file():
        write_phantom_dataset(held_out, "rabbit", args.held_out, seed=1000)
    human = args.human
    if human is None:
        human = work / f"human_{args.size}"
        if not (human / "model.json").is_file():
            human_data = work / "human"
            if not (human_data / "dataset.json").is_file():
                write_phantom_dataset(human_data, "human", 16, seed=0)
            timings["phantoms_s"] = round(time.perf_counter() - t0, 1)
            t0 = time.perf_counter()
            config = StageConfig.human(
                epochs=6,
                lr=1e-3,
                batch_size=16,
                steps_per_epoch=40,
                extend=0,
                preprocess=PreprocessConfig(size=args.size),
            )
            train_human(human_data, human, config, progress=False)
            timings["human_training_s"] = round(time.perf_counter() - t0, 1)
    start = work / f"transfer_{args.size}"
    if not (start / "model.json").is_file():
        t0 = time.perf_counter()
        config = StageConfig.transfer(
            epochs=6,
            freeze_epochs=2,
            lr=1e-3,
            batch_size=16,
            steps_per_epoch=20,
            extend=0,
            preprocess=PreprocessConfig(size=args.size),
        )
        # 4 rabbits train, 1 validates (selection); the held-out rabbits test.
        transfer(human, labelled, start, config, progress=False, ratios=(4, 1, 0))
        timings["transfer_training_s"] = round(time.perf_counter() - t0, 1)
    return start, labelled, held_out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from vetseg.data.datasets import load_case, open_dataset
    from vetseg.data.slices import SliceDataset
    from vetseg.training.rl import PPOFineTuner
    from vetseg.training.stages import prepare_data
    from vetseg.training.trainer import Trainer, make_validation_cases

    started = time.perf_counter()
    timings: dict[str, float] = {}
    start_dir, labelled, held_out = prepare(args, timings)
    start_model, info = load_model(start_dir)
    organs, preprocess = info.organs, info.preprocess
    prepared = prepare_data(labelled, organs, 0, start_dir / "train" / "splits.json")
    val_cases = make_validation_cases(prepared.val, preprocess)
    test_set = open_dataset(held_out, organs=organs)
    test_cases = make_validation_cases([load_case(test_set, c) for c in test_set.cases], preprocess)
    n = len(organs)
    updates = args.steps * (1 + args.replay_updates)
    rl_lr = args.rl_lr or args.lr
    sft_template = StageConfig.refine(
        epochs=1,
        freeze_epochs=0,
        lr=args.lr,
        batch_size=args.batch,
        steps_per_epoch=updates,
        extend=0,
        preprocess=preprocess,
    )
    rl_template = RLConfig(
        steps=args.steps,
        sync_every=args.sync_every,
        kappa=args.kappa,
        clip=args.clip,
        replay_updates=args.replay_updates,
        samples_per_image=args.samples,
        lr=rl_lr,
        batch_size=args.batch,
    )
    rl_set = SliceDataset(prepared.train, organs, preprocess, empty_slice_rate=0.0)

    t0 = time.perf_counter()
    start_table = _case_table(start_model, test_cases, n)
    start_val = _case_table(start_model, val_cases, n)
    timings["evaluation_s"] = round(time.perf_counter() - t0, 1)
    tables: dict[str, list[np.ndarray]] = {"start": [], "supervised": [], "rl": []}
    val_tables: dict[str, list[np.ndarray]] = {"start": [], "supervised": [], "rl": []}
    seconds: dict[str, list[float]] = {"supervised": [], "rl": []}
    rl_logs: dict[int, list[dict[str, Any]]] = {}
    for seed in args.seeds:
        tables["start"].append(start_table)
        val_tables["start"].append(start_val)

        sft_config = dataclasses.replace(sft_template, seed=seed)
        sft_set = SliceDataset(
            prepared.train,
            organs,
            preprocess,
            augment=sft_config.augment,
            empty_slice_rate=sft_config.empty_slice_rate,
            seed=seed,
        )
        model = copy.deepcopy(start_model)
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            Trainer(model, sft_set, val_cases, organs, sft_config, Path(tmp), progress=False).fit()
        seconds["supervised"].append(time.perf_counter() - t0)
        tables["supervised"].append(_case_table(model, test_cases, n))
        val_tables["supervised"].append(_case_table(model, val_cases, n))

        model = copy.deepcopy(start_model)
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        tuner = PPOFineTuner(
            model, rl_set, dataclasses.replace(rl_template, seed=seed), rl_set.slice_weights()
        )
        rl_logs[seed] = tuner.run()
        seconds["rl"].append(time.perf_counter() - t0)
        tables["rl"].append(_case_table(model, test_cases, n))
        val_tables["rl"].append(_case_table(model, val_cases, n))
        print(
            f"seed {seed}: held-out mean Dice start {np.nanmean(start_table):.4f}  "
            f"supervised {np.nanmean(tables['supervised'][-1]):.4f} "
            f"({seconds['supervised'][-1]:.0f} s)  rl {np.nanmean(tables['rl'][-1]):.4f} "
            f"({seconds['rl'][-1]:.0f} s)",
            flush=True,
        )

    results = {name: _summary(t, organs) for name, t in tables.items()}
    validation = {name: _summary(t, organs)["mean_dice"] for name, t in val_tables.items()}
    for name in ("supervised", "rl"):
        results[name]["seconds_per_run"] = float(np.mean(seconds[name]))
        gain = results[name]["mean_dice"] - results["start"]["mean_dice"]
        results[name]["gain_over_start"] = gain
    rl_seeds, sft_seeds = results["rl"]["per_seed"], results["supervised"]["per_seed"]
    diffs = [r - s for r, s in zip(rl_seeds, sft_seeds, strict=True)]
    winner = max(("start", "supervised", "rl"), key=lambda k: results[k]["mean_dice"])

    def curve(key: str) -> list[float]:
        # Mean over seeds of the per-step log, in blocks of sync_every steps.
        values = np.array([[r[key] for r in log] for log in rl_logs.values()], dtype=float)
        block = min(args.sync_every, values.shape[1])
        usable = values[:, : values.shape[1] // block * block]
        blocks = np.nanmean(usable.reshape(len(rl_logs), -1, block), axis=(0, 2))
        return [round(float(v), 4) for v in blocks]

    timings["total_s"] = round(time.perf_counter() - started, 1)
    report = {
        "what": (
            "Held-out rabbit-phantom Dice after (a) no further training, (b) supervised "
            "fine-tuning, (c) PPO-style RL fine-tuning, from one transfer model (synthetic "
            "phantoms, not real animals)"
        ),
        "command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]),
        "start_model": {
            "path": str(start_dir),
            "model_id": info.model_id,
            "parent": info.parent,
            "val_mean_dice": info.metrics.get("val_mean_dice"),
            "human_model": str(args.human) if args.human else "trained by this script (cached)",
        },
        "data": {
            "labelled_rabbits": 5,
            "split": prepared.splits,
            "held_out_rabbits": len(test_cases),
            "size": preprocess.size,
            "organs": list(organs),
        },
        "budget": {
            "optimizer_updates_each": updates,
            "rl_online_steps": args.steps,
            "rl_replay_updates_per_step": args.replay_updates,
            "batch_images": args.batch,
            "rl_samples_per_image": args.samples,
            "lr_supervised": args.lr,
            "lr_rl": rl_lr,
        },
        "seeds": args.seeds,
        "results": results,
        "validation_mean_dice": validation,
        "rl_minus_supervised_per_seed": diffs,
        "winner": winner,
        "rl_curves_per_sync_block": {
            key: curve(key) for key in ("reward", "penalty", "d_old", "d_new", "clip_fraction")
        },
        "rl_config": to_dict(rl_template),
        "supervised_config": to_dict(sft_template),
        "timings": timings,
        "machine": {
            "torch_threads": args.threads,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "processor": platform.processor() or platform.machine(),
        },
        "human_model_id": info.parent,
    }
    atomic_write_json(args.out, _clean(report))
    print(
        f"held-out mean Dice (mean ± sd over {len(args.seeds)} seeds): "
        + ", ".join(
            f"{k} {results[k]['mean_dice']:.4f} ± {results[k]['std_dice']:.4f}"
            for k in ("start", "supervised", "rl")
        )
        + f"; winner: {winner}; total {timings['total_s']:.0f} s; wrote {args.out}"
    )
    return report


def _clean(value: Any) -> Any:
    """JSON-able copy: NaN becomes null, numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


if __name__ == "__main__":
    main()
