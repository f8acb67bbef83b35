"""Slice-to-slice consistency: probability smoothing vs neighbouring slices as input channels.

For each dataset and seed two animal models are transferred from the shipped human model
(``src/vetseg/assets/human_model``) with the same budget: the patent's one-channel stem
(``context_slices`` 0) and a stem that also sees one neighbouring slice on each side
(``--context-slices 1``, 3 channels; the human stem's weights go to the centre channel, the
neighbours' start at zero). Four variants are scored on the held-out cases (split 2:1:1 by
case, never by slice):

* ``baseline``: one-channel model, each slice alone (vetseg's default today);
* ``smooth1`` / ``smooth2``: the same model with ``--smooth-slices 1`` / ``2`` (organ
  probabilities averaged over neighbouring slices, binomial weights);
* ``context1``: the 3-channel model, no smoothing.

Validation cases choose; test cases are reported apart and never choose. Per variant and split:
Dice per organ (scored where the reference holds the organ), its mean, and the slice
consistency (:mod:`vetseg.inference.consistency`): neighbour-slice Dice of the prediction and
of the reference, and their gap (positive: the prediction flickers more than the anatomy).
Labels are made as ``vetseg segment`` makes them (threshold 0.5, most probable organ, default
post-processing); the probabilities of a case are computed once and smoothed for each radius.

Datasets (both SYNTHETIC): ``rabbit`` phantoms (:mod:`vetseg.data.phantoms`) and ``mouse``:
CT-like images synthesised from the real Digimouse atlas labels
(``../shared/data/mouse/digimouse``).

Writes ``benchmarks/results/slice_consistency.json``; a run per dataset adds to the others'.

Usage (one process per dataset, then merged; about 80 s of training per model and a minute of
scoring on this 2-core machine when nothing else runs: 3 seeds x 2 models, about 13 min for
rabbit and 7 min for mouse)::

    python benchmarks/slice_consistency.py --datasets rabbit --epochs 6 --freeze 2 --steps 12 \
        --val-slices 32 --seeds 0 1 2 --threads 2 \
        --out benchmarks/results/slice_consistency_rabbit.json
    python benchmarks/slice_consistency.py --datasets mouse ... (the same, _mouse.json)
    python benchmarks/slice_consistency.py --combine benchmarks/results/slice_consistency_*.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vetseg.config import PreprocessConfig, StageConfig
from vetseg.fileutil import atomic_write_json

REPO = Path(__file__).resolve().parents[1]
HUMAN = REPO / "src" / "vetseg" / "assets" / "human_model"
VARIANTS = ("baseline", "smooth1", "smooth2", "context1")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "slice_consistency")
    results = REPO / "benchmarks" / "results"
    parser.add_argument("--out", type=Path, default=results / "slice_consistency.json")
    parser.add_argument("--atlas", type=Path, default=REPO.parent / "shared/data/mouse/digimouse")
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--freeze", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--val-slices", type=int, default=48)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--datasets", nargs="+", default=["rabbit", "mouse"])
    parser.add_argument(
        "--combine",
        type=Path,
        nargs="+",
        help="Only merge these result files (e.g. one run per dataset in parallel) into --out "
        "and choose the default from all their datasets.",
    )
    return parser.parse_args(argv)


def smoothed_labels(probs: np.ndarray, radius: int, threshold: float = 0.5) -> np.ndarray:
    """Labels from probabilities ``[z, n, y, x]`` averaged over ``radius`` slices each side,
    as :class:`~vetseg.inference.segmenter.Segmenter` with ``smooth_slices=radius`` does."""
    from vetseg.inference.segmenter import slice_weights

    total = probs.shape[0]
    weights = slice_weights(radius).astype(np.float32)
    labels = np.zeros((total, *probs.shape[2:]), dtype=np.uint8)
    for k in range(total):
        near = np.arange(max(0, k - radius), min(total, k + radius + 1))
        w = weights[np.abs(near - k)]
        mean = np.tensordot(w / w.sum(), probs[near].astype(np.float32), axes=1)
        best = mean.argmax(axis=0)
        labels[k] = np.where(mean.max(axis=0) > threshold, best + 1, 0)
    return labels


def _dice(prediction: np.ndarray, reference: np.ndarray, organ_id: int) -> float | None:
    pred, ref = prediction == organ_id, reference == organ_id
    if not ref.any():
        return None  # not in this case's reference: not scored
    return float(2 * np.sum(pred & ref) / (pred.sum() + ref.sum()))


def _summary(scores: list[tuple[np.ndarray, np.ndarray]], organs: tuple[str, ...]) -> dict:
    """Dice per organ and consistency over ``(labels, reference)`` pairs of cases."""
    from vetseg.inference.consistency import slice_consistency

    dice: dict[str, list[float]] = {o: [] for o in organs}
    pred_nd: list[float] = []
    ref_nd: list[float] = []
    gaps: dict[str, list[float]] = {o: [] for o in organs}
    for labels, reference in scores:
        for index, organ in enumerate(organs, start=1):
            score = _dice(labels, reference, index)
            if score is not None:
                dice[organ].append(score)
        for organ, row in slice_consistency(labels, reference, organs).items():
            if row["gap"] is not None:
                gaps[organ].append(row["gap"])  # type: ignore[arg-type]
                pred_nd.append(row["prediction"])  # type: ignore[arg-type]
                ref_nd.append(row["reference"])  # type: ignore[arg-type]
    scored = {o: float(np.mean(v)) for o, v in dice.items() if v}
    return {
        "mean_dice": float(np.mean(list(scored.values()))),
        "dice": scored,
        "neighbour_dice_prediction": float(np.mean(pred_nd)),
        "neighbour_dice_reference": float(np.mean(ref_nd)),
        "consistency_gap": float(np.mean([x for v in gaps.values() for x in v])),
        "gap_by_organ": {o: float(np.mean(v)) for o, v in gaps.items() if v},
    }


def score_model(model_dir: Path, data: Path, radii: dict[str, int]) -> dict[str, Any]:
    """``{split: {variant: summary}}`` for one model on its validation and test cases."""
    from vetseg.data.datasets import load_case, open_dataset, read_splits
    from vetseg.data.preprocess import inplane_spacing
    from vetseg.inference.postprocess import PostprocessConfig, postprocess_labels
    from vetseg.inference.segmenter import Segmenter
    from vetseg.models.files import load_model

    model, info = load_model(model_dir)
    splits = read_splits(model_dir / "train" / "splits.json")
    dataset = open_dataset(data, organs=info.organs)
    segmenter = Segmenter(model, info)
    out: dict[str, Any] = {}
    for split in ("val", "test"):
        pairs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {v: [] for v in radii}
        for case_id in splits[split]:
            case = load_case(dataset, dataset.case(case_id), info.preprocess.orientation)
            spacing = case.canonical_meta.spacing
            probs = segmenter.probabilities_canonical(case.image, inplane_spacing(spacing))
            probs = probs.astype(np.float16)
            for variant, radius in radii.items():
                labels = smoothed_labels(probs, radius)
                labels = postprocess_labels(labels, info.organs, spacing, PostprocessConfig())
                pairs[variant].append((labels, case.labels))
            del probs
        out[split] = {
            v: _summary(p, info.organs) | {"cases": splits[split]} for v, p in pairs.items()
        }
    return out


def train(data: Path, out: Path, args: argparse.Namespace, seed: int, context: int) -> float:
    """Transfer one model (if not there yet); returns the seconds it took (0 when reused)."""
    from vetseg.training.stages import transfer

    if (out / "model.json").is_file():
        return 0.0
    config = StageConfig.transfer(  # no extension epochs: a fixed, comparable budget
        epochs=args.epochs,
        freeze_epochs=args.freeze,
        steps_per_epoch=args.steps,
        batch_size=args.batch_size,
        val_slices=args.val_slices,
        lr=1e-3,
        extend=0,
        seed=seed,
        preprocess=PreprocessConfig(context_slices=context),
    )
    started = time.perf_counter()
    # resume: a run stopped part-way continues from its checkpoint (the same weights).
    transfer(HUMAN, data, out, config, ratios=(2, 1, 1), progress=False, resume=True)
    return time.perf_counter() - started


def _mean_over_seeds(runs: list[dict[str, Any]], split: str, variant: str) -> dict[str, Any]:
    rows = [run["scores"][split][variant] for run in runs]
    organs = sorted({o for row in rows for o in row["dice"]})
    return {
        "mean_dice": float(np.mean([r["mean_dice"] for r in rows])),
        "dice": {o: float(np.mean([r["dice"][o] for r in rows if o in r["dice"]])) for o in organs},
        "neighbour_dice_prediction": float(np.mean([r["neighbour_dice_prediction"] for r in rows])),
        "neighbour_dice_reference": float(np.mean([r["neighbour_dice_reference"] for r in rows])),
        "consistency_gap": float(np.mean([r["consistency_gap"] for r in rows])),
    }


def choose(datasets: dict[str, Any]) -> dict[str, Any]:
    """The default: a variant only if it beats the baseline's VALIDATION Dice on every dataset."""
    gains = {
        variant: {
            name: entry["summary"]["val"][variant]["mean_dice"]
            - entry["summary"]["val"]["baseline"]["mean_dice"]
            for name, entry in datasets.items()
        }
        for variant in VARIANTS
        if variant != "baseline"
    }
    better = [v for v, g in gains.items() if g and all(x > 0 for x in g.values())]
    chosen = max(better, key=lambda v: min(gains[v].values())) if better else "baseline"
    return {"rule": choose.__doc__, "validation_gain_over_baseline": gains, "chosen": chosen}


def main(argv: list[str] | None = None) -> None:
    from vetseg.data.phantoms import write_phantom_dataset
    from vetseg.data.synth import synthesize_dataset

    args = parse_args(argv)
    if args.combine:
        merged: dict[str, Any] = {"datasets": {}, "combined_from": [str(p) for p in args.combine]}
        for path in args.combine:
            part = json.loads(path.read_text())
            merged = {**part, **merged, "datasets": merged["datasets"] | part["datasets"]}
        merged["choice"] = choose(merged["datasets"])
        atomic_write_json(args.out, merged)
        print(json.dumps(merged["choice"], indent=1))
        return
    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {
        "what": "held-out Dice and slice consistency: baseline, --smooth-slices 1/2, "
        "--context-slices 1; chosen on VALIDATION cases, TEST reported apart; SYNTHETIC data "
        "(rabbit phantoms; images synthesised from the Digimouse atlas)",
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "datasets": {},
    }
    if args.out.is_file():  # a run per dataset adds to the others' figures
        results["datasets"] = json.loads(args.out.read_text()).get("datasets", {})
    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    for name in args.datasets:
        data = args.work / f"{name}_data"
        if not data.exists():
            if name == "rabbit":
                write_phantom_dataset(data, species="rabbit", cases=args.cases, seed=3)
            else:
                synthesize_dataset(args.atlas / "labels.nii.gz", data, cases=args.cases, seed=3)
        runs = []
        for seed in args.seeds:
            run: dict[str, Any] = {"seed": seed, "train_seconds": {}, "scores": {}}
            for context in (0, 1):
                model_dir = args.work / f"{name}_seed{seed}_context{context}"
                seconds = train(data, model_dir, args, seed, context)
                run["train_seconds"][f"context{context}"] = seconds
                started = time.perf_counter()
                radii = {"baseline": 0, "smooth1": 1, "smooth2": 2} if context == 0 else {}
                scores = score_model(model_dir, data, radii or {"context1": 0})
                for split, by_variant in scores.items():
                    run["scores"].setdefault(split, {}).update(by_variant)
                print(f"{name} seed {seed} context {context}: trained {seconds:.0f} s, "
                      f"scored {time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip
            runs.append(run)
            for variant in VARIANTS:
                for split in ("val", "test"):
                    row = run["scores"][split][variant]
                    print(f"  {split:4s} {variant:8s} Dice {row['mean_dice']:.3f} neighbour "
                          f"{row['neighbour_dice_prediction']:.3f} (ref "
                          f"{row['neighbour_dice_reference']:.3f})", flush=True)  # fmt: skip
        results["datasets"][name] = {
            "command": command,
            "runs": runs,
            "summary": {
                split: {v: _mean_over_seeds(runs, split, v) for v in VARIANTS}
                for split in ("val", "test")
            },
        }
        results["choice"] = choose(results["datasets"])
        atomic_write_json(args.out, results)
    print(json.dumps(results.get("choice"), indent=1))


if __name__ == "__main__":
    main()
