"""A cheaper refinement module? Expansion ratio 4 (default) vs 2: speed at 512, Dice on the demo.

Usage: python benchmarks/refine_expand.py [--demo demo_out] [--out FILE.json]

1. Speed: the animal model at 512 x 512 (random weights, batches of 4, 2 threads) with the
   scSE-MobileNetV3 module at expansion 4 and 2, exported to ONNX and run by ONNX Runtime in one
   process, interleaved, 6 batches each: median slices/s and GFLOP per slice.
2. Dice: the demo's transfer (shipped human phantom model -> rabbit phantoms, the demo's
   settings and seed) trained once per expansion ratio, evaluated on the demo's held-out
   rabbits. Needs the data of a finished ``vetseg demo --out DIR`` (about 3 min per model).

One seed on synthetic phantoms: a first look, not a decision.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from benchcommon import bench_model, interleaved_medians

from vetseg.fileutil import atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results"
EXPANDS = (4, 2)


def speed(threads: int = 2, batch: int = 4, size: int = 512) -> dict[str, dict[str, float]]:
    from torch.utils.flop_counter import FlopCounterMode

    from vetseg.inference.engines import OnnxEngine, export_onnx_bytes
    from vetseg.models import HumanOrganNet

    torch.manual_seed(0)
    human = HumanOrganNet(7)
    engines, gflop = {}, {}
    for expand in EXPANDS:
        model, info = bench_model(size, expand=expand, human=human)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.zeros(1, 1, size, size))
        gflop[expand] = counter.get_total_flops() / 1e9
        engines[expand] = OnnxEngine(export_onnx_bytes(model, info), threads=threads)
    x = np.random.default_rng(0).standard_normal((batch, 1, size, size), np.float32)
    medians = interleaved_medians({e: lambda f=engines[e]: f(x) for e in EXPANDS}, 6)
    return {
        f"expand_{e}": {
            "slices_per_s": round(batch / medians[e], 2),
            "gflop_per_slice": round(gflop[e], 2),
        }
        for e in EXPANDS
    }


def dice(demo: Path) -> dict[str, dict[str, float]]:
    from vetseg.demo import DemoConfig, shipped_human_model
    from vetseg.training.stages import evaluate, transfer

    config = DemoConfig()
    human_model = shipped_human_model()
    if human_model is None:
        raise SystemExit("the shipped human phantom model is missing")
    labelled, heldout = demo / "data" / "rabbit_labelled", demo / "data" / "rabbit_heldout"
    if not (labelled / "dataset.json").is_file() or not (heldout / "dataset.json").is_file():
        raise SystemExit(f"{demo}: run `vetseg demo --out {demo}` first (its data is used here)")
    from vetseg.models.files import read_model_info

    size = read_model_info(human_model).preprocess.size
    animal = dataclasses.replace(
        config.animal, preprocess=dataclasses.replace(config.animal.preprocess, size=size)
    )
    work = Path(tempfile.mkdtemp(prefix="vetseg-expand-"))
    out: dict[str, dict[str, float]] = {}
    for expand in EXPANDS:
        started = time.perf_counter()
        transfer(
            human_model,
            labelled,
            work / f"expand_{expand}",
            animal,
            expand=expand,
            progress=False,
            ratios=(config.labelled - 1, 1, 0),
        )
        result = evaluate(work / f"expand_{expand}", heldout)
        out[f"expand_{expand}"] = {
            "heldout_mean_dice": _rounded(result["mean_dice"]),
            "per_organ": {k: _rounded(v) for k, v in result["per_organ"].items()},
            "heldout_mean_hd95_mm": _rounded(result["mean_hd95_mm"]),
            "training_s": round(time.perf_counter() - started, 1),
        }
        print(f"expand {expand}: {out[f'expand_{expand}']}", flush=True)
    return out


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo", type=Path, default=Path("demo_out"))
    parser.add_argument("--out", type=Path, default=RESULTS / "refine_expand.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    result = {
        "command": "python benchmarks/refine_expand.py",
        "note": "one seed, synthetic phantoms, random weights for speed",
        "speed_onnxruntime_512": speed(),
    }
    print(result["speed_onnxruntime_512"], flush=True)
    result["demo_transfer"] = dice(args.demo)
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
