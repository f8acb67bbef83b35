"""Does averaging organ probabilities across neighbouring slices (``--smooth-slices``) help?

For each dataset a small animal model is transferred from the shipped human phantom model
(``src/vetseg/assets/human_model``) and its held-out TEST cases (split 2:1:1 by case,
never seen in training or selection) are segmented with ``smooth_slices`` 0, 1 and 2, with
``vetseg segment``'s default post-processing. Reported per setting: mean Dice over organs and
cases, and the slice consistency (:mod:`vetseg.inference.consistency`): neighbour-slice Dice of
the prediction and of the reference, and their gap (positive: the prediction flickers more than
the anatomy).

Datasets (both SYNTHETIC, said so in the output):
* ``rabbit``: rabbit phantoms (:mod:`vetseg.data.phantoms`);
* ``mouse``: CT-like images synthesised from the real Digimouse atlas labels
  (``../shared/data/mouse/digimouse``; skipped when absent).

Writes ``benchmarks/results/slice_smoothing.json``.

Usage::

    python benchmarks/slice_smoothing.py --epochs 4 --freeze 2 --steps 15   # ~15 min, 2 CPUs
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

from vetseg.config import StageConfig
from vetseg.fileutil import atomic_write_json

REPO = Path(__file__).resolve().parents[1]
HUMAN = REPO / "src" / "vetseg" / "assets" / "human_model"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "slice_smoothing")
    results = REPO / "benchmarks" / "results"
    parser.add_argument("--out", type=Path, default=results / "slice_smoothing.json")
    parser.add_argument("--atlas", type=Path, default=REPO.parent / "shared/data/mouse/digimouse")
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--freeze", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--radii", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--datasets", nargs="+", default=["rabbit", "mouse"])
    return parser.parse_args(argv)


def _dice(prediction: np.ndarray, reference: np.ndarray, organ_id: int) -> float | None:
    pred, ref = prediction == organ_id, reference == organ_id
    if not ref.any():
        return None  # not in this case's reference: not scored
    return float(2 * np.sum(pred & ref) / (pred.sum() + ref.sum()))


def measure(model_dir: Path, data: Path, radii: list[int]) -> dict[str, Any]:
    """Held-out test Dice and slice consistency of a model for each smoothing radius."""
    from vetseg.data.datasets import load_case, open_dataset, read_splits
    from vetseg.inference.consistency import slice_consistency
    from vetseg.inference.postprocess import PostprocessConfig
    from vetseg.inference.segmenter import Segmenter
    from vetseg.models.files import load_model

    model, info = load_model(model_dir)
    test_ids = read_splits(model_dir / "train" / "splits.json")["test"]
    dataset = open_dataset(data, organs=info.organs)
    orientation = info.preprocess.orientation
    loaded = [load_case(dataset, dataset.case(cid), orientation) for cid in test_ids]
    out: dict[str, Any] = {"test_cases": test_ids, "organs": list(info.organs), "by_radius": {}}
    for radius in radii:
        segmenter = Segmenter(model, info, postprocess=PostprocessConfig(), smooth_slices=radius)
        dice: dict[str, list[float]] = {o: [] for o in info.organs}
        gaps: dict[str, list[float]] = {o: [] for o in info.organs}
        pred_nd: dict[str, list[float]] = {o: [] for o in info.organs}
        ref_nd: dict[str, list[float]] = {o: [] for o in info.organs}
        started = time.perf_counter()
        for case in loaded:
            labels = segmenter.predict(case.image, case.canonical_meta).labels
            for index, organ in enumerate(info.organs, start=1):
                score = _dice(labels, case.labels, index)
                if score is not None:
                    dice[organ].append(score)
            for organ, row in slice_consistency(labels, case.labels, info.organs).items():
                if row["gap"] is not None:
                    gaps[organ].append(row["gap"])  # type: ignore[arg-type]
                    pred_nd[organ].append(row["prediction"])  # type: ignore[arg-type]
                    ref_nd[organ].append(row["reference"])  # type: ignore[arg-type]
        scored = {o: float(np.mean(v)) for o, v in dice.items() if v}
        out["by_radius"][str(radius)] = {
            "mean_dice": float(np.mean(list(scored.values()))),
            "dice": scored,
            "neighbour_dice_prediction": float(np.mean([x for v in pred_nd.values() for x in v])),
            "neighbour_dice_reference": float(np.mean([x for v in ref_nd.values() for x in v])),
            "consistency_gap": float(np.mean([x for v in gaps.values() for x in v])),
            "gap_by_organ": {o: float(np.mean(v)) for o, v in gaps.items() if v},
            "seconds": time.perf_counter() - started,
        }
        row = out["by_radius"][str(radius)]
        print(
            f"  smooth {radius}: mean Dice {row['mean_dice']:.3f}, neighbour Dice "
            f"{row['neighbour_dice_prediction']:.3f} (reference "
            f"{row['neighbour_dice_reference']:.3f}), gap {row['consistency_gap']:+.3f}",
            flush=True,
        )
    return out


def main(argv: list[str] | None = None) -> None:
    from vetseg.data.phantoms import write_phantom_dataset
    from vetseg.data.synth import synthesize_dataset
    from vetseg.training.stages import transfer

    args = parse_args(argv)
    torch.set_num_threads(2)
    results: dict[str, Any] = {
        "what": "held-out TEST Dice and slice consistency with --smooth-slices 0/1/2; "
        "SYNTHETIC data (rabbit phantoms; images synthesised from the Digimouse atlas)",
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "settings": vars(args) | {"work": str(args.work), "out": str(args.out)},
        "datasets": {},
    }
    if args.out.is_file():  # a run per dataset adds to the others' figures
        results["datasets"] = json.loads(args.out.read_text()).get("datasets", {})
    results["settings"]["atlas"] = str(args.atlas)
    for name in args.datasets:
        data = args.work / f"{name}_data"
        if not data.exists():
            if name == "rabbit":
                write_phantom_dataset(data, species="rabbit", cases=args.cases, seed=3)
            else:
                atlas = args.atlas / "labels.nii.gz"
                if not atlas.is_file():
                    print(f"{atlas} absent: {name} skipped")
                    continue
                synthesize_dataset(atlas, data, cases=args.cases, seed=3)
        model_dir = args.work / f"{name}_model"
        config = StageConfig.transfer(  # no extension epochs: a fixed, comparable budget
            epochs=args.epochs,
            freeze_epochs=args.freeze,
            steps_per_epoch=args.steps,
            lr=1e-3,
            extend=0,
        )
        started = time.perf_counter()
        if not (model_dir / "model.json").is_file():
            transfer(HUMAN, data, model_dir, config, ratios=(2, 1, 1), progress=False)
        train_seconds = time.perf_counter() - started
        print(f"{name}: model in {train_seconds:.0f} s", flush=True)
        results["datasets"][name] = measure(model_dir, data, args.radii) | {
            "train_seconds": train_seconds,
            "command": results["command"],
        }
        atomic_write_json(args.out, results)
    print(json.dumps({k: v["by_radius"] for k, v in results["datasets"].items()}, indent=1))


if __name__ == "__main__":
    main()
