"""Which cases should the vet correct first? Uncertainty vs random selection on rabbit phantoms.

One initial rabbit model (from scratch on a few labelled phantoms, or ``--human`` for a real
transfer) is trained once. Then, through the workspace commands (prelabel, correct, refine):

1. **Does the score point at the bad drafts?** Every rabbit of the pool, and of a second
   ``check`` pool drawn with another seed, is pre-labelled; its uncertainty score is compared
   with the truth: pre-label Dice and correction effort (voxels changed / voxels drawn).
   Spearman rank correlations per pool. The score's definition was revised after seeing the
   first pool (see ``vetseg/workflow/prelabel.py``), so the check pool is the honest figure.
2. **Does it pay to correct them first?** For ``uncertainty`` and for random draws with several
   seeds, a fresh workspace pre-labels ``--per-round`` pool rabbits, the vet (the phantoms' true
   labels) corrects them, one refine round trains from the same initial model with the same
   training seed, and the new model is scored on held-out rabbits (whether promoted or not).

Synthetic phantoms, one round, a handful of cases: the figures are small-sample and say nothing
about real animals. Writes ``benchmarks/results/uncertainty_vs_random.json``.

Usage::

    python benchmarks/uncertainty_vs_random.py             # ~10 min on 2 loaded CPU cores
    python benchmarks/uncertainty_vs_random.py --pool 6 --random-seeds 0 --out /tmp/u.json
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from vetseg.config import AugmentConfig, PreprocessConfig, StageConfig
from vetseg.fileutil import atomic_write_json
from vetseg.labels import CORE_ORGANS

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("runs/uncertainty_vs_random"))
    parser.add_argument("--out", type=Path, default=RESULTS / "uncertainty_vs_random.json")
    parser.add_argument("--human", type=Path, default=None, help="Human model: transfer from it.")
    parser.add_argument("--labelled", type=int, default=4)
    parser.add_argument("--pool", type=int, default=10)
    parser.add_argument(
        "--check-pool", type=int, default=10, help="A second pool, only for the correlation."
    )
    parser.add_argument("--held-out", type=int, default=4)
    parser.add_argument("--per-round", type=int, default=3)
    parser.add_argument("--random-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--initial-epochs", type=int, default=8)
    parser.add_argument("--refine-epochs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def initial_model(args: argparse.Namespace, data: dict[str, Path]) -> Path:
    """The rabbit model every strategy starts from (trained once, cached in --work)."""
    from vetseg.models.files import ModelInfo, new_model_id, save_model
    from vetseg.models.human import HumanOrganNet
    from vetseg.training.stages import transfer

    out = args.work / "initial_model"
    if (out / "model.json").is_file():
        return out
    human = args.human
    if human is None:
        # An untrained human model only provides the architecture for --scratch training.
        human = args.work / "architecture_only"
        net = HumanOrganNet(len(CORE_ORGANS))
        save_model(
            net,
            human,
            ModelInfo(
                model_id=new_model_id("untrained"),
                architecture=net.architecture(),
                organs=CORE_ORGANS,
                preprocess=PreprocessConfig(size=args.size),
                stage="human",
            ),
        )
    config = StageConfig.transfer(
        epochs=args.initial_epochs,
        freeze_epochs=0 if args.human is None else args.initial_epochs // 3,
        lr=1e-3,
        batch_size=8,
        steps_per_epoch=args.steps,
        extend=0,
        preprocess=PreprocessConfig(size=args.size),
    )
    ratios = (args.labelled - 1, 1, 0)
    transfer(human, data["labelled"], out, config, from_scratch=args.human is None, ratios=ratios)
    return out


def make_workspace(root: Path, seed: int, data: dict[str, Path], model: Path) -> dict[str, Path]:
    """A rabbit workspace with the labelled and pool phantoms; returns pool id -> truth file."""
    from vetseg.data.datasets import open_dataset
    from vetseg.workflow.register import add_scans, use_model
    from vetseg.workflow.workspace import Workspace, WorkspaceSettings

    settings = WorkspaceSettings("rabbit", CORE_ORGANS, synthetic=True, seed=seed)
    labelled = open_dataset(data["labelled"], CORE_ORGANS).cases
    pool = open_dataset(data["pool"], CORE_ORGANS).cases
    with Workspace.create(root, settings) as ws, ws.changing():
        add_scans(
            ws,
            [c.image for c in labelled],
            [c.label for c in labelled],
            case_ids=[f"lab_{c.case_id}" for c in labelled],
        )
        add_scans(ws, [c.image for c in pool], case_ids=[f"pool_{c.case_id}" for c in pool])
        if ws.current_model() is None:
            use_model(ws, model)
    return {f"pool_{c.case_id}": c.label for c in pool}


def draft_quality(ws: Any, truth: dict[str, Path], run: int) -> list[dict[str, Any]]:
    """Per drafted case of a run: uncertainty, pre-label Dice and effort against the truth."""
    from vetseg.io.image import read_label
    from vetseg.workflow.correct import correction_effort
    from vetseg.workflow.demo_rounds import label_dice

    rows = []
    for draft in ws.prelabels():
        if draft.run != run:
            continue
        predicted, _ = read_label(ws.path(draft.path))
        true, _ = read_label(truth[draft.case_id])
        changed, drawn, effort = correction_effort(predicted, true)
        rows.append(
            {
                "case": draft.case_id,
                "rank": draft.queue_rank,
                "uncertainty": draft.uncertainty,
                "prelabel_dice": label_dice(predicted, true, len(CORE_ORGANS)),
                "effort": effort,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from vetseg.data.phantoms import write_phantom_dataset
    from vetseg.training.stages import evaluate
    from vetseg.workflow.correct import correct
    from vetseg.workflow.prelabel import prelabel
    from vetseg.workflow.rounds import refine_round
    from vetseg.workflow.workspace import Workspace

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    args.work.mkdir(parents=True, exist_ok=True)
    data = {
        "labelled": args.work / "data" / "labelled",
        "pool": args.work / "data" / "pool",
        "held_out": args.work / "data" / "held_out",
    }
    data["check_pool"] = args.work / "data" / "check_pool"
    sizes = {
        "labelled": args.labelled,
        "pool": args.pool,
        "held_out": args.held_out,
        "check_pool": args.check_pool,
    }
    seeds = {"labelled": 1, "pool": 2000, "held_out": 1000, "check_pool": 3000}
    for name, folder in data.items():
        if not (folder / "dataset.json").is_file():
            write_phantom_dataset(folder, "rabbit", sizes[name], seed=seeds[name])

    t0 = time.perf_counter()
    model = initial_model(args, data)
    timings["initial_model_s"] = round(time.perf_counter() - t0, 1)
    initial_heldout = evaluate(model, data["held_out"])["mean_dice"]

    # 1. Does the score point at the bad drafts? Pre-label every rabbit of both pools once.
    # The score's definition was chosen after looking at the first pool (see prelabel.py);
    # the second pool (other seed) is the out-of-sample check.
    t0 = time.perf_counter()
    correlations: dict[str, dict[str, float]] = {}
    pool_rows: dict[str, list[dict[str, Any]]] = {}
    for name in ("pool", "check_pool"):
        truth = make_workspace(args.work / f"ws_all_{name}", 0, {**data, "pool": data[name]}, model)
        with Workspace.open(args.work / f"ws_all_{name}") as ws:
            if not ws.prelabels():
                prelabel(ws, strategy="uncertainty")
            rows = draft_quality(ws, truth, 1)
        u = [r["uncertainty"] for r in rows]
        rho_dice = stats.spearmanr(u, [r["prelabel_dice"] for r in rows])
        rho_effort = stats.spearmanr(u, [r["effort"] for r in rows])
        correlations[name] = {
            "cases": len(rows),
            "spearman_vs_prelabel_dice": float(rho_dice.statistic),
            "p_vs_prelabel_dice": float(rho_dice.pvalue),
            "spearman_vs_effort": float(rho_effort.statistic),
            "p_vs_effort": float(rho_effort.pvalue),
            "mean_prelabel_dice": float(np.mean([r["prelabel_dice"] for r in rows])),
            "mean_effort": float(np.mean([r["effort"] for r in rows])),
        }
        pool_rows[name] = rows
    timings["score_pools_s"] = round(time.perf_counter() - t0, 1)

    # 2. One round per strategy from the same initial model and training seed.
    refine = StageConfig.refine(
        epochs=args.refine_epochs,
        freeze_epochs=round(args.refine_epochs * 2 / 3),  # DESIGN's 20 of 30
        lr=5e-4,
        batch_size=8,
        steps_per_epoch=args.steps,
        extend=0,
        seed=0,
        augment=AugmentConfig(),
    )
    arms = [("uncertainty", 0)] + [("random", s) for s in args.random_seeds]
    outcomes = []
    for strategy, seed in arms:
        t0 = time.perf_counter()
        name = f"{strategy}_{seed}"
        root = args.work / f"ws_{name}"
        truth = make_workspace(root, seed, data, model)
        with Workspace.open(root) as ws:
            if not ws.prelabels():
                prelabel(ws, cases=args.per_round, strategy=strategy)
            chosen = draft_quality(ws, truth, 1)
            for row in chosen:
                correct(ws, row["case"], truth[row["case"]])
            done = ws.db.execute("SELECT model_id, status FROM rounds").fetchone()
            if done is None or done["status"] == "running":
                refine_round(ws, refine, progress=False)
            (round_row,) = ws.db.execute("SELECT * FROM rounds").fetchall()
            new_model = ws.path(ws.model(round_row["model_id"]).path)
            heldout = evaluate(new_model, data["held_out"])["mean_dice"]
        outcomes.append(
            {
                "strategy": strategy,
                "workspace_seed": seed,
                "chosen": chosen,
                "chosen_mean_prelabel_dice": float(np.mean([r["prelabel_dice"] for r in chosen])),
                "chosen_mean_effort": float(np.mean([r["effort"] for r in chosen])),
                "new_model_heldout_dice": heldout,
                "promoted": round_row["status"] == "promoted",
                "parent_val_dice": round_row["parent_val_dice"],
                "new_val_dice": round_row["new_val_dice"],
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
        print(
            f"{name}: chose {[r['case'] for r in chosen]}, pre-label Dice "
            f"{outcomes[-1]['chosen_mean_prelabel_dice']:.3f}, held-out Dice after the round "
            f"{heldout:.3f} (start {initial_heldout:.3f})"
        )
    timings["total_s"] = round(time.perf_counter() - started, 1)

    random_arms = [o for o in outcomes if o["strategy"] == "random"]
    uncertainty_arm = outcomes[0]
    summary = {
        "spearman_vs_effort_pool": correlations["pool"]["spearman_vs_effort"],
        "spearman_vs_effort_check_pool": correlations["check_pool"]["spearman_vs_effort"],
        "spearman_vs_prelabel_dice_pool": correlations["pool"]["spearman_vs_prelabel_dice"],
        "spearman_vs_prelabel_dice_check_pool": correlations["check_pool"][
            "spearman_vs_prelabel_dice"
        ],
        "initial_heldout_dice": initial_heldout,
        "uncertainty_heldout_dice": uncertainty_arm["new_model_heldout_dice"],
        "random_heldout_dice_mean": float(
            np.mean([o["new_model_heldout_dice"] for o in random_arms])
        ),
        "random_heldout_dice_range": [
            float(min(o["new_model_heldout_dice"] for o in random_arms)),
            float(max(o["new_model_heldout_dice"] for o in random_arms)),
        ],
        "uncertainty_chosen_prelabel_dice": uncertainty_arm["chosen_mean_prelabel_dice"],
        "random_chosen_prelabel_dice_mean": float(
            np.mean([o["chosen_mean_prelabel_dice"] for o in random_arms])
        ),
    }
    report = {
        "what": "uncertainty vs random choice of the cases a vet corrects, one refine round, "
        "SYNTHETIC rabbit phantoms (the vet = true labels); small sample, not real animals",
        "command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "initial_model": "transfer from " + str(args.human) if args.human else "from scratch",
        "refine": dataclasses.asdict(refine),
        "summary": summary,
        "correlations": correlations,
        "pools": pool_rows,
        "arms": outcomes,
        "timings": timings,
        "machine": {"platform": platform.platform(), "torch_threads": args.threads},
    }
    atomic_write_json(args.out, report)
    print(json_summary(summary))
    print(f"wrote {args.out}")
    return report


def json_summary(summary: dict[str, Any]) -> str:
    return "\n".join(
        f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}" for k, v in summary.items()
    )


if __name__ == "__main__":
    main()
