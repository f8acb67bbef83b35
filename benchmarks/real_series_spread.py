"""Several human models on one labelled real series: Dice with and without post-processing,
how confidently each misses, and the parts its spleen comes in.

Made to see how far the real-CT figures move between trainings (README, "The human model"):
for each model and each organ of the reference, Dice after vetseg's default post-processing
(what ``vetseg segment`` writes) and before it, and the share of the reference organ where the
model's probability for that organ is below 0.1 (a confident miss, which no threshold
recovers). For the ``--parts`` organ (default spleen), every connected part the model predicts
before post-processing (1 ml or more): its volume and the reference organ it lies in.

Data: a pairs folder (``labels.json`` + ``NAME.nii.gz`` / ``NAME_seg.nii.gz``; labels in
TotalSegmentator v2 ids, mapped to the model's organs); by default the held-out real DICOM
series that ``benchmarks/make_human_model.py`` writes to ``runs/human_model/held_out_dicom_series``
(built here from ``../shared/data`` when missing).

Usage::

    python benchmarks/real_series_spread.py MODEL [MODEL ...] --out FILE.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HELD_OUT = ROOT / "runs" / "human_model" / "held_out_dicom_series"


def _dice(a: np.ndarray, b: np.ndarray) -> float | None:
    total = int(a.sum()) + int(b.sum())
    return None if total == 0 else round(2.0 * float((a & b).sum()) / total, 4)


def measure(model: Path, image: np.ndarray, meta, reference: np.ndarray, parts: str) -> dict:
    """One model on one scan; ``reference`` in the model's organ ids on the scan's grid."""
    from scipy import ndimage

    from vetseg.data.preprocess import inplane_offset, inplane_spacing
    from vetseg.inference.postprocess import PostprocessConfig, postprocess_labels
    from vetseg.inference.segmenter import Segmenter
    from vetseg.io.image import to_canonical

    segmenter = Segmenter.load(model, postprocess=PostprocessConfig(enabled=False))
    organs = segmenter.organs
    canonical, cmeta = to_canonical(image, meta, segmenter.info.preprocess.orientation)
    ref, _ = to_canonical(reference, meta, segmenter.info.preprocess.orientation)
    spacing = inplane_spacing(cmeta.spacing)
    raw, _ = segmenter.segment_canonical(canonical, None, spacing, inplane_offset(cmeta))
    cleaned = postprocess_labels(raw.copy(), organs, cmeta.spacing, PostprocessConfig())
    probability = segmenter.probabilities_canonical(canonical.astype(np.float32), spacing)
    out: dict = {"model_id": segmenter.info.model_id, "organs": {}}
    for index, organ in enumerate(organs, start=1):
        truth = ref == index
        if not truth.any():
            continue
        out["organs"][organ] = {
            "dice": _dice(cleaned == index, truth),
            "dice_before_postprocess": _dice(raw == index, truth),
            "confident_miss_share": round(
                float((probability[:, index - 1][truth] < 0.1).mean()), 3
            ),
        }
    if parts in organs:
        index = organs.index(parts) + 1
        components, count = ndimage.label(raw == index)
        voxel_ml = float(np.prod(cmeta.spacing)) / 1000.0
        rows = []
        for k in range(1, count + 1):
            where = components == k
            volume = float(where.sum()) * voxel_ml
            if volume < 1.0:
                continue
            inside, counts = np.unique(ref[where], return_counts=True)
            lies_in = (
                organs[int(inside[np.argmax(counts)]) - 1]
                if inside[np.argmax(counts)]
                else "background"
            )
            rows.append(
                {
                    "ml": round(volume, 1),
                    "lies_in": lies_in,
                    "share": round(float(counts.max() / counts.sum()), 2),
                }
            )
        out[f"{parts}_parts_before_postprocess"] = sorted(rows, key=lambda r: -r["ml"])
    return out


def main(argv: list[str] | None = None) -> None:
    from vetseg.fileutil import atomic_write_json
    from vetseg.io.image import read_image, read_label
    from vetseg.labels import TOTALSEG_V2, remap_labels, totalseg_mapping

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--data", type=Path, default=HELD_OUT, help="pairs folder (see above)")
    parser.add_argument("--parts", default="spleen", help="organ whose predicted parts are listed")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.data == HELD_OUT and not (HELD_OUT / "labels.json").is_file():
        sys.path.insert(0, str(Path(__file__).parent))
        from make_human_model import SHARED, write_held_out

        if not SHARED.is_dir():
            raise SystemExit(f"{SHARED} is missing and no --data was given.")
        write_held_out(HELD_OUT)
    names = json.loads((args.data / "labels.json").read_text())
    for key, name in names.items():
        if int(key) in TOTALSEG_V2 and TOTALSEG_V2[int(key)] != name:
            raise SystemExit(f"{args.data}/labels.json: id {key} is {name}, not TotalSegmentator's")
    scans = sorted(p for p in args.data.glob("*.nii.gz") if not p.name.endswith("_seg.nii.gz"))
    if not scans:
        raise SystemExit(f"{args.data}: no NAME.nii.gz / NAME_seg.nii.gz pairs")
    result: dict = {
        "command": "python benchmarks/real_series_spread.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "data": str(args.data),
        "scans": {},
    }
    for scan in scans:
        image, meta = read_image(scan)
        raw, _ = read_label(
            scan.with_name(scan.name.replace(".nii.gz", "_seg.nii.gz")),
            reference=meta,
            reference_shape=image.shape,
        )
        per_model = {}
        for model in args.models:
            organs = json.loads((model / "model.json").read_text())["organs"]
            reference = remap_labels(
                raw.astype(np.int64), totalseg_mapping(organs), organs, strict=False
            )
            per_model[str(model)] = measure(model, image, meta, reference, args.parts)
            print(scan.name, model, json.dumps(per_model[str(model)]["organs"]), flush=True)
        result["scans"][scan.name.removesuffix(".nii.gz")] = per_model
    atomic_write_json(args.out, result)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
