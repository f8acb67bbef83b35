"""How much does the human model's answer depend on absolute soft-tissue HU?

Real CT varies in soft-tissue HU by tens of units between patients, contrast timings and
scanners (a fatty liver lies near 0 HU, an enhanced one above 100). This diagnostic shifts the
soft tissue (voxels between -200 and 300 HU; air, lungs, fat below -200 and dense bone above
300 untouched) of real scans by a few HU offsets and segments each with the shipped human
model as ``vetseg segment`` does (default engine, default post-processing), reporting organ
volumes in ml. A model that recognises organs by shape and context changes little; one that
recognises them by HU changes a lot.

Scans: the two real, unlabelled HCC-TACE-Seg HCC_009 series (``../shared/data/human``): volumes
only, no reference labels.

Usage::

    python benchmarks/hu_shift.py --out benchmarks/results/hu_shift.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HCC = ROOT.parent / "shared" / "data" / "human" / "hcc_tace_009"


def main(argv: list[str] | None = None) -> None:
    from vetseg.fileutil import atomic_write_json
    from vetseg.inference.postprocess import PostprocessConfig
    from vetseg.inference.segmenter import Segmenter
    from vetseg.io.image import read_image

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "src/vetseg/assets/human_model")
    parser.add_argument("--shifts", type=int, nargs="+", default=[-100, -50, 0, 50, 100])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/hu_shift.json")
    args = parser.parse_args(argv)
    if not HCC.is_dir():
        raise SystemExit(f"{HCC} is missing: this diagnostic needs the real HCC_009 series.")
    segmenter = Segmenter.load(
        args.model, engine="auto", threads=args.threads, postprocess=PostprocessConfig()
    )
    volumes: dict[str, dict[str, dict[str, float]]] = {}
    for series in ("contrast_3phase", "precontrast"):
        scan, meta = read_image(HCC / series)
        voxel_ml = float(np.prod(meta.spacing)) / 1000.0
        soft = (scan > -200) & (scan < 300)
        volumes[series] = {}
        for shift in args.shifts:
            shifted = scan.astype(np.float32)
            shifted[soft] += shift
            labels = segmenter.predict(shifted, meta).labels
            counts = np.bincount(labels.ravel(), minlength=len(segmenter.organs) + 1)[1:]
            volumes[series][f"{shift:+d}"] = {
                organ: round(float(n * voxel_ml), 1)
                for organ, n in zip(segmenter.organs, counts, strict=True)
            }
            print(series, f"{shift:+d} HU", volumes[series][f"{shift:+d}"], flush=True)
    atomic_write_json(
        args.out,
        {
            "what": "organ volumes (ml) of the shipped human model on REAL unlabelled CT with "
            "the soft tissue (-200..300 HU) shifted by a fixed offset; no reference labels",
            "command": "python benchmarks/hu_shift.py " + " ".join(argv or sys.argv[1:]),
            "model": segmenter.info.model_id,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "volumes_ml": volumes,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
