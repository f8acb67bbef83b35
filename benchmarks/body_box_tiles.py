"""Tiles over the body's box vs tiles over the whole field: accuracy, invariance and work.

A model with a pixel spacing sees a slice through ``size x size`` tiles. Since this change
inference places them over each slice's body box (pixels above -500 HU,
:func:`vetseg.data.preprocess.plan_tiles`) and labels the air outside background without
running the network; before, tiles covered the whole field of view. This script runs both
ways on the same scans with the same model and engine and reports, per scan:

* tiles run and seconds in the network ("model" step), both ways;
* per-organ Dice of the two label maps against each other (how much the answer moved);
* Dice against the reference where the scans have one (``vetseg.training.evaluation.evaluate``
  both ways: post-processed as ``vetseg segment`` does, organ names mapped as ``vetseg
  evaluate`` maps them);
* field-of-view invariance both ways: the scan padded with 100 mm of air on every side
  (-1000 HU plus the scan's own air noise), per-organ Dice of the labels on the shared voxels.

Scans: the real held-out TotalSegmentator DICOM series (20 slices, reference labels), the two
real unlabelled HCC-TACE-Seg series (512 x 512), and two wide-variety SYNTHETIC human
phantoms of a seed the shipped model never trained on (900). Without ../shared only the
phantoms run.

Usage::

    python benchmarks/body_box_tiles.py --out benchmarks/results/body_box_tiles.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "human"
sys.path.insert(0, str(ROOT / "benchmarks"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "src/vetseg/assets/human_model")
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--phantoms", type=int, default=2)
    parser.add_argument("--pad-mm", type=float, default=100.0)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "body_box_tiles")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/body_box_tiles.json")
    return parser.parse_args(argv)


def scans(args: argparse.Namespace) -> list[tuple[str, Path, Path | None]]:
    """(name, scan file or DICOM folder, labelled dataset holding it or None)."""
    from vetseg.data.phantoms import write_phantom_dataset

    out: list[tuple[str, Path, Path | None]] = []
    if SHARED.is_dir():
        from make_human_model import write_held_out

        held = write_held_out(args.work / "held_out_dicom_series")
        out.append(("real_dicom_series_heldout", held / "dicom_series.nii.gz", held))
        for series in ("contrast_3phase", "precontrast"):
            folder = SHARED / "hcc_tace_009" / series
            if folder.is_dir():
                out.append((f"real_hcc_{series}_unlabelled", folder, None))
    phantoms = args.work / "phantoms_human_wide_900"
    if not (phantoms / "dataset.json").is_file():
        write_phantom_dataset(phantoms, "human", args.phantoms, seed=900, variety="wide")
    for image in sorted((phantoms / "imagesTr").glob("*.nii.gz"))[: args.phantoms]:
        name = image.name.removesuffix("_0000.nii.gz").removesuffix(".nii.gz")
        out.append((f"synthetic_{name}_seed900", image, phantoms))
    return out


def _shown(path: Path) -> str:
    """A path as the results show it: relative to the repository where it lies inside."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def dice(a: np.ndarray, b: np.ndarray) -> float | None:
    total = int(a.sum()) + int(b.sum())
    return None if total == 0 else float(2 * int((a & b).sum()) / total)


def per_organ(a: np.ndarray, b: np.ndarray, organs: tuple[str, ...]) -> dict[str, float | None]:
    return {name: dice(a == i, b == i) for i, name in enumerate(organs, start=1)}


def main(argv: list[str] | None = None) -> None:
    import vetseg.data.preprocess as pre
    from vetseg.inference.postprocess import PostprocessConfig
    from vetseg.inference.segmenter import Segmenter
    from vetseg.io.image import read_image
    from vetseg.training.evaluation import evaluate

    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    segmenter = Segmenter.load(
        args.model, engine=args.engine, threads=args.threads, postprocess=PostprocessConfig()
    )
    organs = segmenter.organs
    counted = [0]
    engine = segmenter.engine

    def counting(batch: np.ndarray, release: bool = False) -> np.ndarray:
        counted[0] += batch.shape[0]
        return engine(batch, release=release) if release else engine(batch)

    segmenter.engine = counting
    real_body_level = pre.body_level

    def tiling(mode: str) -> None:
        pre.body_level = real_body_level if mode == "body" else (lambda _p: None)

    def run(volume: np.ndarray, meta: Any, mode: str) -> tuple[np.ndarray, int, float]:
        tiling(mode)
        counted[0] = 0
        try:
            prediction = segmenter.predict(volume, meta)
        finally:
            tiling("body")
        return prediction.labels, counted[0], float(prediction.seconds.get("model", 0.0))

    results: dict[str, Any] = {}
    reference: dict[str, Any] = {}
    for name, path, dataset in scans(args):
        volume, meta = read_image(path)
        print(f"{name}: {volume.shape}", flush=True)
        row: dict[str, Any] = {"shape": list(volume.shape), "spacing": list(meta.spacing)}
        # Padding along the two in-plane axes of the canonical volume: find them from the
        # spacing order (volume axes are z, y, x for every scan read here).
        pad = [int(round(args.pad_mm / s)) for s in meta.spacing[::-1]]
        pad[0] = 0
        air = volume.min()
        padded = np.pad(volume, [(p, p) for p in pad], constant_values=air)
        # The scanner writes where the first voxel lies: padding moves the origin.
        direction = np.asarray(meta.direction, dtype=np.float64).reshape(3, 3)
        shift = direction @ (np.array(pad[::-1], dtype=np.float64) * np.array(meta.spacing))
        padded_meta = dataclasses.replace(
            meta, origin=tuple(float(v) for v in np.array(meta.origin) - shift)
        )
        shared = tuple(slice(p, p + n) for p, n in zip(pad, volume.shape, strict=True))
        labels = {}
        for mode in ("all", "body"):
            labels[mode], tiles, seconds = run(volume, meta, mode)
            on_padded, tiles_padded, seconds_padded = run(padded, padded_meta, mode)
            row[mode] = {
                "tiles": tiles,
                "model_seconds": round(seconds, 2),
                "tiles_padded": tiles_padded,
                "model_seconds_padded": round(seconds_padded, 2),
                "padded_vs_own": per_organ(on_padded[shared], labels[mode], organs),
            }
            if dataset is not None and mode not in reference.get(str(dataset), {}):
                tiling(mode)
                try:
                    scored = evaluate(args.model, dataset, engine=args.engine)
                finally:
                    tiling("body")
                reference.setdefault(str(dataset), {})[mode] = {
                    "per_case": scored["per_case"],
                    "per_organ": scored["per_organ"],
                    "mean_dice": scored["mean_dice"],
                }
        row["body_vs_all"] = per_organ(labels["body"], labels["all"], organs)
        row["voxels_changed"] = int((labels["body"] != labels["all"]).sum())
        results[name] = row
        print(json.dumps(row), flush=True)
    out = {
        "command": "python benchmarks/body_box_tiles.py " + " ".join(argv or sys.argv[1:]),
        "model": _shown(args.model),
        "engine": args.engine,
        "threads": args.threads,
        "pad_mm": args.pad_mm,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "scans": results,
        "dice_vs_reference": {_shown(Path(k)): v for k, v in reference.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, allow_nan=False) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
