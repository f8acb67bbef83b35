"""How much the real series' figures move when nothing but the resampling phase changes.

The held-out real DICOM series (TotalSegmentator labels) is written six times with its origin
moved by fractions of a pixel (image and reference together: the anatomy and the reference do
not change, only where the 1.5 mm model grid samples them), and every model is scored on each
copy as ``benchmarks/inference_tile.py`` scores the series (``vetseg evaluate`` of what
``vetseg segment`` writes). The spread is the noise floor of a candidate rule's series lines;
HCC_009's counterpart is in the README ("Stage 4 candidates").

Usage::

    python benchmarks/series_offset_noise.py MODEL [MODEL ...] --out FILE.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: Origin moves in pixels (x, y), as for HCC_009.
OFFSETS = ((0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (0.5, 0.5), (-0.33, 0.25), (0.25, -0.4))


def shifted_copies(base: Path, root: Path) -> list[Path]:
    """Pairs folders of the series in ``base`` with the origin moved by each of :data:`OFFSETS`."""
    from vetseg.io.image import read_image, read_label, write_image

    image, meta = read_image(base / "dicom_series.nii.gz")
    labels, _ = read_label(
        base / "dicom_series_seg.nii.gz", reference=meta, reference_shape=image.shape
    )
    folders = []
    for i, (dx, dy) in enumerate(OFFSETS):
        x, y, z = meta.origin
        moved = dataclasses.replace(
            meta, origin=(x + dx * meta.spacing[0], y + dy * meta.spacing[1], z)
        )
        folder = root / f"offset_{i}"
        folder.mkdir(parents=True)
        write_image(image, moved, folder / "dicom_series.nii.gz")
        write_image(labels.astype(np.uint8), moved, folder / "dicom_series_seg.nii.gz")
        shutil.copy(base / "labels.json", folder / "labels.json")
        folders.append(folder)
    return folders


def summary(rows: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean, range and sample standard deviation per organ scored on every copy."""
    organs = [o for o in rows[0] if all(o in r for r in rows)]
    return {
        o: {
            "mean": round(float(np.mean([r[o] for r in rows])), 4),
            "min": min(r[o] for r in rows),
            "max": max(r[o] for r in rows),
            "sd": round(float(np.std([r[o] for r in rows], ddof=1)), 4),
        }
        for o in organs
    }


def main(argv: list[str] | None = None) -> None:
    from inference_tile import series_figures
    from make_human_model import write_held_out

    from vetseg.fileutil import atomic_write_json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = write_held_out(Path(tmp) / "held_out_dicom_series")
        folders = shifted_copies(base, Path(tmp))
        for model in args.models:
            rows = [series_figures(model, folder) for folder in folders]
            results[str(model)] = {"rows": rows, "summary": summary(rows)}
            print(model, json.dumps(results[str(model)]["summary"]), flush=True)
    atomic_write_json(
        args.out,
        {
            "what": __doc__.splitlines()[0],
            "offsets_px": [list(o) for o in OFFSETS],
            "command": "python benchmarks/series_offset_noise.py "
            + " ".join(str(m) for m in args.models)
            + f" --out {args.out}",
            "models": results,
        },
    )


if __name__ == "__main__":
    main()
