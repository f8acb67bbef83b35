"""The labelled real series seen as the kept-out scan's scanner would write it.

Issue 10's kept-out contrast CT is a 512 x 512 matrix of 0.57 mm pixels: a 292 mm field,
narrower than most abdomens, so the body is cut at the sides. The real DICOM series with
labels (TotalSegmentator's, 0.977 mm pixels over a 500 mm field) is scored here as written and
after the same change of geometry, image and reference together (``benchmarks/hcc_organs.py``'s
``--pixel`` / ``--fov`` for HCC_009's approximate references; this is the series' counterpart,
with its labelled liver, spleen and bone):

- ``native``: the series as it is,
- ``fov292``: cut to a centred 292 mm field at its own pixels,
- ``pixel057_fov292``: resampled in-plane to 0.57 mm (image linear, labels nearest), then cut
  to the centred 292 mm field: 512 x 512 as the kept-out scan.

Scored as ``benchmarks/inference_tile.py`` scores the series (``vetseg evaluate`` of what
``vetseg segment`` writes), only organs present in the reference after the cut. The series
chose the shipped model, so these figures are not independent of it; what they show is whether
the geometry alone moves them.

Usage::

    python benchmarks/series_geometry.py MODEL [MODEL ...] --out FILE.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: The kept-out scan's field of view (mm) and pixel size (mm).
FIELD_MM = 292.0
PIXEL_MM = 0.57
#: Variants: name -> (pixel size or None, field or None), applied in that order.
VARIANTS = {
    "native": (None, None),
    "fov292": (None, FIELD_MM),
    "pixel057_fov292": (PIXEL_MM, FIELD_MM),
}


def geometry_copy(base: Path, folder: Path, pixel_mm: float | None, fov_mm: float | None) -> dict:
    """Write the series in ``base`` into ``folder`` resampled to ``pixel_mm`` then cut to a
    centred ``fov_mm`` field (None: unchanged); returns the copy's grid."""
    from hcc_organs import cut_field, resample_inplane

    from vetseg.io.image import read_image, read_label, write_image

    image, meta = read_image(base / "dicom_series.nii.gz")
    labels, _ = read_label(
        base / "dicom_series_seg.nii.gz", reference=meta, reference_shape=image.shape
    )
    reference = {"labels": labels.astype(np.uint8)}
    if pixel_mm is not None:
        image, meta, reference = resample_inplane(image, meta, reference, pixel_mm)
    if fov_mm is not None:
        image, meta, reference = cut_field(image, meta, reference, fov_mm)
    folder.mkdir(parents=True)
    write_image(image.astype(np.float32), meta, folder / "dicom_series.nii.gz")
    write_image(reference["labels"].astype(np.uint8), meta, folder / "dicom_series_seg.nii.gz")
    shutil.copy(base / "labels.json", folder / "labels.json")
    return {
        "shape": list(image.shape),
        "spacing_mm": [round(float(s), 4) for s in meta.spacing],
        "field_mm": round(float(image.shape[2] * meta.spacing[0]), 1),
    }


def main(argv: list[str] | None = None) -> None:
    from inference_tile import series_figures
    from make_human_model import write_held_out

    from vetseg.fileutil import atomic_write_json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    results: dict = {}
    grids = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = write_held_out(Path(tmp) / "held_out_dicom_series")
        folders = {}
        for name, (pixel, fov) in VARIANTS.items():
            folders[name] = Path(tmp) / name
            grids[name] = geometry_copy(base, folders[name], pixel, fov)
        for model in args.models:
            rows = {name: series_figures(model, folder) for name, folder in folders.items()}
            results[str(model)] = rows
            print(model, json.dumps(rows), flush=True)
    atomic_write_json(
        args.out,
        {
            "what": __doc__.splitlines()[0],
            "grids": grids,
            "command": "python benchmarks/series_geometry.py "
            + " ".join(str(m) for m in args.models)
            + f" --out {args.out}",
            "models": results,
        },
    )


if __name__ == "__main__":
    main()
