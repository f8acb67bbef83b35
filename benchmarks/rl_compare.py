"""Does RL fine-tuning (S104) help? Held-out Dice of three continuations of one transfer model.

On rabbit phantoms with 5 labelled cases (4 train, 1 validation) and separate held-out rabbits,
one transfer model is trained once (cached in ``--work``), then for every seed:

(a) ``start``: no further training;
(b) ``supervised``: the same number of optimiser updates of plain supervised fine-tuning
    (vetseg's Trainer as a refine round runs it: BCE + Tversky, augmentation, BatchNorm in
    train mode, nothing frozen), Adam at the refine default lr 1e-4;
(c) ``rl``: PPO-style RL fine-tuning as DESIGN section 5 defines it (greedy baseline),
    ``--steps`` online updates each followed by ``replay_updates`` offline updates from the
    replay pool, Adam at the RL default lr 1e-5;
(c') ``rl_mean_baseline``: the same with the leave-one-out mean baseline (``--no-mean-variant``
    skips it).

All keep their final weights (no selection): the comparison is update for update with the same
batch of images. ``--sweep-lrs`` instead runs each method at several learning rates and
reports validation Dice only (the held-out rabbits unused), to check the defaults. Dice is
volume-level per held-out case at model resolution (axial slices at ``--size``), averaged over
the organs present, then over cases. Phantoms prove nothing about real animals.

Writes ``benchmarks/results/rl_compare.json`` (figures, settings, timings and the command).

Usage::

    python benchmarks/rl_compare.py                    # ~10 min on 2 CPU cores
    python benchmarks/rl_compare.py --sweep-lrs 1e-5 3e-5 1e-4 \
        --out benchmarks/results/rl_lr_sweep.json
    python benchmarks/rl_compare.py --direction-check \
        --out benchmarks/results/rl_direction.json
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
    parser.add_argument("--sft-lr", type=float, default=StageConfig.refine().lr)
    parser.add_argument("--rl-lr", type=float, default=RLConfig().lr)
    parser.add_argument(
        "--no-mean-variant",
        dest="mean_variant",
        action="store_false",
        help="skip the RL variant with the leave-one-out mean baseline",
    )
    parser.add_argument(
        "--direction-check",
        action="store_true",
        help="instead: does a small step along each baseline's gradient estimate raise Dice?",
    )
    parser.add_argument(
        "--sweep-lrs",
        type=float,
        nargs="*",
        default=None,
        help="instead: validation Dice of each method at these learning rates (first seed)",
    )
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


def _run_supervised(
    start_model: torch.nn.Module,
    prepared: Any,
    organs: tuple[str, ...],
    val_cases: list[Any],
    config: StageConfig,
) -> torch.nn.Module:
    """(b): the Trainer for ``steps_per_epoch`` updates (one epoch, nothing frozen)."""
    from vetseg.data.slices import SliceDataset
    from vetseg.training.trainer import Trainer

    train_set = SliceDataset(
        prepared.train,
        organs,
        config.preprocess,
        augment=config.augment,
        empty_slice_rate=config.empty_slice_rate,
        seed=config.seed,
    )
    model = copy.deepcopy(start_model)
    torch.manual_seed(config.seed)
    with tempfile.TemporaryDirectory() as tmp:
        Trainer(model, train_set, val_cases, organs, config, Path(tmp), progress=False).fit()
    return model


def _run_rl(
    start_model: torch.nn.Module, rl_set: Any, config: RLConfig
) -> tuple[torch.nn.Module, list[dict[str, Any]]]:
    """(c): PPO-style RL fine-tuning; returns the tuned model and its per-step log."""
    from vetseg.training.rl import PPOFineTuner

    model = copy.deepcopy(start_model)
    torch.manual_seed(config.seed)
    tuner = PPOFineTuner(model, rl_set, config, rl_set.slice_weights())
    return model, tuner.run()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from vetseg.data.datasets import load_case, open_dataset
    from vetseg.data.slices import SliceDataset
    from vetseg.training.stages import prepare_data
    from vetseg.training.trainer import make_validation_cases, nanmean

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
    sft_template = StageConfig.refine(
        epochs=1,
        freeze_epochs=0,
        lr=args.sft_lr,
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
        lr=args.rl_lr,
        batch_size=args.batch,
    )
    rl_set = SliceDataset(prepared.train, organs, preprocess, empty_slice_rate=0.0)
    command = " ".join(shlex.quote(a) for a in ["python", *sys.argv])

    if args.direction_check:
        return _direction_check(args, start_model, rl_set, rl_template, command)
    if args.sweep_lrs:
        return _sweep(
            args,
            start_model,
            prepared,
            organs,
            val_cases,
            rl_set,
            sft_template,
            rl_template,
            command,
            started,
        )

    t0 = time.perf_counter()
    start_table = _case_table(start_model, test_cases, n)
    start_val = _case_table(start_model, val_cases, n)
    timings["evaluation_s"] = round(time.perf_counter() - t0, 1)
    methods = ["start", "supervised", "rl"] + (["rl_mean_baseline"] if args.mean_variant else [])
    tables: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    val_tables: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    seconds: dict[str, list[float]] = {m: [] for m in methods[1:]}
    rl_logs: dict[str, list[list[dict[str, Any]]]] = {m: [] for m in methods[2:]}
    for seed in args.seeds:
        tables["start"].append(start_table)
        val_tables["start"].append(start_val)
        for method in methods[1:]:
            t0 = time.perf_counter()
            if method == "supervised":
                model = _run_supervised(
                    start_model,
                    prepared,
                    organs,
                    val_cases,
                    dataclasses.replace(sft_template, seed=seed),
                )
            else:
                baseline = "mean" if method == "rl_mean_baseline" else "greedy"
                config = dataclasses.replace(rl_template, seed=seed, baseline=baseline)
                model, log = _run_rl(start_model, rl_set, config)
                rl_logs[method].append(log)
            seconds[method].append(time.perf_counter() - t0)
            tables[method].append(_case_table(model, test_cases, n))
            val_tables[method].append(_case_table(model, val_cases, n))
        print(
            f"seed {seed}: held-out mean Dice "
            + "  ".join(f"{m} {nanmean(tables[m][-1]):.4f}" for m in methods),
            flush=True,
        )

    results = {m: _summary(t, organs) for m, t in tables.items()}
    for m in methods[1:]:
        results[m]["seconds_per_run"] = round(float(np.mean(seconds[m])), 1)
        results[m]["gain_over_start"] = results[m]["mean_dice"] - results["start"]["mean_dice"]
        results[m]["validation_mean_dice"] = _summary(val_tables[m], organs)["mean_dice"]
    results["start"]["validation_mean_dice"] = nanmean(start_val)
    rl_seeds, sft_seeds = results["rl"]["per_seed"], results["supervised"]["per_seed"]
    winner = max(methods, key=lambda m: results[m]["mean_dice"])

    def curve(logs: list[list[dict[str, Any]]], key: str) -> list[float]:
        # Mean over seeds of the per-step log, in blocks of sync_every steps.
        values = np.array([[r[key] for r in log] for log in logs], dtype=float)
        block = min(args.sync_every, values.shape[1])
        usable = values[:, : values.shape[1] // block * block]
        blocks = np.nanmean(usable.reshape(len(logs), -1, block), axis=(0, 2))
        return [round(float(v), 4) for v in blocks]

    timings["total_s"] = round(time.perf_counter() - started, 1)
    report = {
        "what": (
            "Held-out rabbit-phantom Dice after (a) no further training, (b) supervised "
            "fine-tuning, (c) PPO-style RL fine-tuning as DESIGN section 5 defines it (greedy "
            "baseline), and (c') the same RL with a leave-one-out mean baseline, all from one "
            "transfer model (synthetic phantoms, not real animals)"
        ),
        "command": command,
        "start_model": {
            "path": str(start_dir),
            "model_id": info.model_id,
            "parent": info.parent,
            "val_mean_dice_at_selection": info.metrics.get("val_mean_dice"),
            "human_model": _human_record(info.parent, args, start_dir),
        },
        "data": {
            "labelled_rabbits": 5,
            "split": prepared.splits,
            "held_out_rabbits": len(test_cases),
            "size": preprocess.size,
            "organs": list(organs),
            "dice": "volume-level per held-out case at model resolution, mean over organs "
            "present, then over cases",
        },
        "budget": {
            "optimizer_updates_each": updates,
            "rl_online_steps": args.steps,
            "rl_replay_updates_per_step": args.replay_updates,
            "batch_images": args.batch,
            "rl_samples_per_image": args.samples,
            "lr_supervised": args.sft_lr,
            "lr_rl": args.rl_lr,
        },
        "seeds": args.seeds,
        "results": results,
        "rl_minus_supervised_per_seed": [r - s for r, s in zip(rl_seeds, sft_seeds, strict=True)],
        "winner": winner,
        "rl_curves_per_sync_block": {
            m: {k: curve(logs, k) for k in ("reward", "penalty", "d_old", "d_new", "advantage")}
            for m, logs in rl_logs.items()
        },
        "rl_config": to_dict(rl_template),
        "supervised_config": to_dict(sft_template),
        "timings": timings,
        "machine": _machine(args),
    }
    atomic_write_json(args.out, _clean(report))
    print(
        f"held-out mean Dice (mean ± sd over {len(args.seeds)} seeds): "
        + ", ".join(
            f"{m} {results[m]['mean_dice']:.4f} ± {results[m]['std_dice']:.4f}" for m in methods
        )
        + f"; winner: {winner}; total {timings['total_s']:.0f} s; wrote {args.out}"
    )
    return report


def _human_record(human_id: str | None, args: argparse.Namespace, start_dir: Path) -> Any:
    """Where the human model came from: its id and the command recorded in its model.json."""
    from vetseg.models.files import read_model_info

    candidates = [args.human] if args.human else [args.work / f"human_{args.size}"]
    for path in candidates:
        if path is not None and (Path(path) / "model.json").is_file():
            human = read_model_info(Path(path))
            if human.model_id == human_id:
                return {
                    "path": str(path),
                    "model_id": human.model_id,
                    "command": human.training.get("command"),
                    "config": human.training.get("config"),
                    "val_mean_dice": human.metrics.get("val_mean_dice"),
                }
    return {"model_id": human_id}


def _machine(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "torch_threads": args.threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "processor": platform.processor() or platform.machine(),
    }


def _sweep(
    args: argparse.Namespace,
    start_model: torch.nn.Module,
    prepared: Any,
    organs: tuple[str, ...],
    val_cases: list[Any],
    rl_set: Any,
    sft_template: StageConfig,
    rl_template: RLConfig,
    command: str,
    started: float,
) -> dict[str, Any]:
    """Learning rates of each fine-tuning by validation Dice only (the held-out set unused)."""
    from vetseg.training.trainer import nanmean

    seed = args.seeds[0]
    rows = []
    for lr in args.sweep_lrs:
        t0 = time.perf_counter()
        model = _run_supervised(
            start_model,
            prepared,
            organs,
            val_cases,
            dataclasses.replace(sft_template, lr=lr, seed=seed),
        )
        rows.append(
            {
                "method": "supervised",
                "lr": lr,
                "seconds": time.perf_counter() - t0,
                "val_mean_dice": nanmean(_case_table(model, val_cases, len(organs))),
            }
        )
        for baseline in ("greedy", "mean"):
            t0 = time.perf_counter()
            config = dataclasses.replace(rl_template, lr=lr, seed=seed, baseline=baseline)
            model, _ = _run_rl(start_model, rl_set, config)
            rows.append(
                {
                    "method": f"rl ({baseline} baseline)",
                    "lr": lr,
                    "seconds": time.perf_counter() - t0,
                    "val_mean_dice": nanmean(_case_table(model, val_cases, len(organs))),
                }
            )
        for row in rows[-3:]:
            print(
                f"lr {lr:g} {row['method']}: validation Dice {row['val_mean_dice']:.4f}", flush=True
            )
    report = {
        "what": "validation Dice (1 labelled rabbit) of each fine-tuning at each learning rate, "
        "seed 0; selection only, the held-out rabbits are not used",
        "command": command,
        "start_val_mean_dice": nanmean(_case_table(start_model, val_cases, len(organs))),
        "rows": rows,
        "rl_config": to_dict(rl_template),
        "supervised_config": to_dict(sft_template),
        "total_s": round(time.perf_counter() - started, 1),
        "machine": _machine(args),
    }
    atomic_write_json(args.out, _clean(report))
    print(f"wrote {args.out}")
    return report


def _direction_check(
    args: argparse.Namespace,
    start_model: torch.nn.Module,
    rl_set: Any,
    rl_template: RLConfig,
    command: str,
    samples: int = 64,
    images: int = 8,
) -> dict[str, Any]:
    """Step along each baseline's policy-gradient estimate (64 samples x 8 training slices) and
    measure the expected sampled Dice and the greedy Dice on the same slices before and after
    (fresh samples with a fixed seed, so both sides see the same random numbers)."""
    from vetseg.training.rl import (
        PPOFineTuner,
        clipped_surrogate,
        greedy_baseline,
        leave_one_out_mean,
        mask_dice,
        sample_masks,
    )

    config = dataclasses.replace(rl_template, samples_per_image=samples, batch_size=images)
    tuner = PPOFineTuner(copy.deepcopy(start_model), rl_set, config, rl_set.slice_weights())
    ids = tuner.draw_images()
    batch, reference = tuner.load_batch(ids)

    def dice(model: torch.nn.Module) -> dict[str, float]:
        with torch.no_grad():
            logits = model(batch)
        masks = sample_masks(logits, samples, torch.Generator().manual_seed(12345))
        return {
            "expected_sampled_dice": float(np.nanmean(mask_dice(masks, reference).numpy())),
            "greedy_dice": float(np.nanmean(mask_dice(logits > 0, reference).numpy())),
        }

    rollout = tuner.rollout(ids)
    with torch.no_grad():
        greedy = greedy_baseline(
            tuner.new(batch), tuner.old(batch), reference, config.kappa
        ).expand_as(rollout.reward)
    advantages = {
        "greedy": rollout.reward - greedy,
        "mean": rollout.reward - leave_one_out_mean(rollout.reward),
    }
    rows: list[dict[str, Any]] = [{"baseline": None, "step": 0.0, **dice(tuner.new)}]
    for name, advantage in advantages.items():
        loss = clipped_surrogate(rollout.logp_new, rollout.logp_old, advantage, config.clip).loss
        params = [p for p in tuner.new.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, params, retain_graph=True)
        norm = torch.sqrt(sum((g**2).sum() for g in grads))
        for step in (1e-3, 1e-2, 3e-2):
            model = copy.deepcopy(tuner.new)
            with torch.no_grad():
                for p, g in zip(
                    [p for p in model.parameters() if p.requires_grad], grads, strict=True
                ):
                    p -= step * g / norm
            rows.append({"baseline": name, "step": step, **dice(model)})
            print(rows[-1], flush=True)
    # Control: steps of the same lengths in one random (isotropic) direction.
    generator = torch.Generator().manual_seed(0)
    params = [p for p in tuner.new.parameters() if p.requires_grad]
    direction = [torch.randn(p.shape, generator=generator) for p in params]
    norm = torch.sqrt(sum((d**2).sum() for d in direction))
    for step in (1e-3, 1e-2, 3e-2):
        model = copy.deepcopy(tuner.new)
        with torch.no_grad():
            for p, d in zip(
                [p for p in model.parameters() if p.requires_grad], direction, strict=True
            ):
                p -= step * d / norm
        rows.append({"baseline": "random direction (control)", "step": step, **dice(model)})
        print(rows[-1], flush=True)
    report = {
        "what": "expected sampled Dice and greedy Dice of 8 training slices after one plain "
        "gradient step of the given L2 length along the clipped-surrogate gradient estimated "
        "from 64 samples per slice, for the greedy and the leave-one-out mean baseline, and "
        "along a random direction (control)",
        "command": command,
        "mean_advantage": {k: float(np.nanmean(v.numpy())) for k, v in advantages.items()},
        "rows": rows,
        "machine": _machine(args),
    }
    atomic_write_json(args.out, _clean(report))
    print(f"wrote {args.out}")
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
