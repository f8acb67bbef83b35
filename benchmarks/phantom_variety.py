"""Wide-variety human phantoms: seconds per case and a preview montage of the first cases.

    PYTHONPATH=src python benchmarks/phantom_variety.py --cases 6 \
        --png docs/images/phantom_human_varied.png --json benchmarks/results/phantom_variety.json

Each case is drawn as ``vetseg phantoms --variety wide`` draws it (``default_rng([seed, k])``)
and shown with vetseg's own preview (axial, coronal, sagittal mid-slices with the labels). The
default variety is timed on the same seeds for comparison. SYNTHETIC data: the figures say how
fast and how varied the generator is, nothing about real scans.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from vetseg.data.phantoms import make_phantom, phantom_meta
from vetseg.viz.preview import render_preview


def _caption(setup: dict) -> str:
    """One line that says what a case drew."""
    return (
        f"SYNTHETIC {setup['phase']}, {setup['region']}, size {setup['size']:.2f}, "
        f"fat {setup['fat_mm']:.0f} mm, arms {setup['arms']}, metal {setup['metal']}, "
        f"oral {setup['oral_contrast']}, {setup['kernel']} kernel, {setup['slice_mm']} mm, "
        f"noise {setup['noise_hu']:.0f} HU"
    )


def main(argv: list[str] | None = None) -> int:
    """Time ``--cases`` wide and default phantoms, write the montage and the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--png", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    panels, wide_s, default_s, cases = [], [], [], []
    for k in range(args.cases):
        started = time.perf_counter()
        p = make_phantom("human", np.random.default_rng([args.seed, k]), variety="wide")
        wide_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        make_phantom("human", np.random.default_rng([args.seed, k]))
        default_s.append(time.perf_counter() - started)
        names = {i + 1: name for i, name in enumerate(p.organs)}
        cases.append({"shape": list(p.ct.shape), "spacing": list(p.spacing), **p.setup})
        if args.png:
            title = f"case {k}: " + _caption(dict(p.setup))
            panels.append(render_preview(p.ct, phantom_meta(p), p.labels, names, title))
        print(f"case {k}: {wide_s[-1]:.2f} s wide, {default_s[-1]:.2f} s default, "
              f"{p.ct.shape}", flush=True)  # fmt: skip

    if args.png and panels:
        columns = 2
        rows = -(-len(panels) // columns)
        width = max(p.width for p in panels)
        height = max(p.height for p in panels)
        montage = Image.new("RGB", (columns * width, rows * height), (12, 12, 16))
        for i, panel in enumerate(panels):
            montage.paste(panel, ((i % columns) * width, (i // columns) * height))
        args.png.parent.mkdir(parents=True, exist_ok=True)
        montage.save(args.png)
    figures = {
        "command": " ".join(["python", *sys.argv]),
        "synthetic": True,
        "cases": args.cases,
        "seconds_per_case_wide": float(np.mean(wide_s)),
        "seconds_per_case_default": float(np.mean(default_s)),
        "seconds_wide": [round(s, 3) for s in wide_s],
        "machine": platform.processor() or platform.machine(),
        "setups": cases,
    }
    print(
        f"wide {figures['seconds_per_case_wide']:.2f} s/case, "
        f"default {figures['seconds_per_case_default']:.2f} s/case"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
