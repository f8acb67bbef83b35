"""Bone on the labelled real DICOM series with and without the costal cartilage.

TotalSegmentator's labels (the series' reference) count the costal cartilages as bone, and so
does vetseg's mapping; a reference drawn by hand or by an HU threshold often leaves them out
(cartilage lies near 100-150 HU, not the 300+ of cortical bone). This scores the human model's
bone (post-processed, as ``vetseg evaluate`` scores it) three ways: as the reference stands,
with the cartilage voxels left out of both sides, and against a reference without the cartilage
(what a hand-drawn reference may be: bone the model calls there counts against it).

Usage::

    python benchmarks/bone_cartilage.py MODEL [MODEL ...] --out FILE
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SERIES = ROOT.parent / "shared" / "data" / "human" / "totalseg_example"


def bone_dice(model: Path) -> dict:
    """Bone Dice as the reference stands and without the costal cartilage, and the share of
    the cartilage the model calls bone."""
    from inference_tile import mask_dice as dice

    from vetseg.data.preprocess import inplane_offset, inplane_spacing
    from vetseg.inference.segmenter import Segmenter
    from vetseg.io.image import read_image, read_label, to_canonical
    from vetseg.labels import TOTALSEG_V2, totalseg_structure_to_organ

    image, meta = read_image(SERIES / "dicom_series")
    raw, _ = read_label(
        SERIES / "seg_dicom_series.nii.gz", reference=meta, reference_shape=image.shape
    )
    segmenter = Segmenter.load(model)
    orientation = segmenter.info.preprocess.orientation
    canonical, canonical_meta = to_canonical(image, meta, orientation)
    reference, _ = to_canonical(raw, meta, orientation)
    labels, _ = segmenter.segment_canonical(
        canonical, None, inplane_spacing(canonical_meta.spacing), inplane_offset(canonical_meta)
    )
    predicted = labels == segmenter.organs.index("bone") + 1
    names = {int(i): TOTALSEG_V2.get(int(i), str(i)) for i in np.unique(reference) if i}
    bone_ids = [i for i, n in names.items() if totalseg_structure_to_organ(n) == "bone"]
    truth = np.isin(reference, bone_ids)
    cartilage = np.isin(reference, [i for i, n in names.items() if n == "costal_cartilages"])

    return {
        "model_id": segmenter.info.model_id,
        "bone_dice": dice(predicted, truth),
        "bone_dice_without_costal_cartilage": dice(predicted & ~cartilage, truth & ~cartilage),
        # A hand-drawn reference that leaves the cartilage out: bone called there is wrong.
        "bone_dice_reference_without_cartilage": dice(predicted, truth & ~cartilage),
        "costal_cartilage_share_of_reference_bone": round(
            float(cartilage.sum()) / float(truth.sum()), 4
        ),
        "costal_cartilage_called_bone": round(float(predicted[cartilage].mean()), 4),
    }


def main(argv: list[str] | None = None) -> None:
    from vetseg.fileutil import atomic_write_json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if not SERIES.is_dir():
        raise SystemExit(f"{SERIES} is missing (../shared/data holds it)")
    result = {
        "command": "python benchmarks/bone_cartilage.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "reference": "TotalSegmentator output on the real DICOM series (not manual)",
        "models": {str(m): bone_dice(m) for m in args.models},
    }
    atomic_write_json(args.out, result)
    for name, row in result["models"].items():
        print(name, row)


if __name__ == "__main__":
    main()
