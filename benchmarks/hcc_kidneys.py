"""Human models on the kidneys of a real contrast CT they never saw, against an APPROXIMATE
reference drawn by HU thresholds (not a manual label).

The one labelled real series (``totalseg_example/dicom_series``) holds no kidney, and the
other real patient (``../shared/data/human/hcc_tace_009/contrast_3phase``, 69 slices, 0.742 x
0.742 x 2.5 mm, contrast-enhanced) has no labels. Its kidneys, in the lowest 24 slices, are
easy to draw by HU: a homogeneous nephrogram of 120-330 HU in fat. :func:`approximate_kidneys`
draws them: a 3 x 3 in-plane median filter, 120 < HU < 330 inside a box per side, a 5 x 5
in-plane opening (cuts the renal vessels), the connected part that covers most of the box's
window in slice 9, holes filled per slice after a 3 x 3 closing. It takes the parenchyma
(68 and 69 ml in the field of view), not the renal sinus; the upper poles' last dim slices are
left out. Checked by eye on previews, not by a radiologist: the figures are a proxy for what a
labelled contrast CT would show, and differences of a few hundredths mean nothing.

For each model: Dice per kidney after vetseg's post-processing (what ``vetseg segment``
writes), the volumes, and where the reference's kidney voxels went (which organ the model
called them).

Usage::

    python benchmarks/hcc_kidneys.py MODEL [MODEL ...] --out FILE.json [--preview FILE.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCAN = ROOT.parent / "shared" / "data" / "human" / "hcc_tace_009" / "contrast_3phase"

# Array layout of the series as vetseg.io.image.read_image returns it: [z, y, x], slice 0 the
# lowest (caudal), x towards the image's right (the patient's left).
_SLICES = 24
_ROWS = (240, 350)
_BOXES = {"kidney_right": (100, 215), "kidney_left": (300, 415)}
_SEED_SLICE, _SEED_ROWS = 9, (260, 340)


def approximate_kidneys(image: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks of both kidneys of the HCC_009 contrast series (see the module notes).

    Raises:
        ValueError: when the image is not laid out as that series (too few slices or rows),
            or no bright part lies in a kidney's window.
    """
    from scipy import ndimage

    if image.ndim != 3 or image.shape[0] <= _SLICES or image.shape[1] < _ROWS[1]:
        raise ValueError(f"expected the HCC_009 contrast series layout, got {image.shape}")
    smooth = ndimage.median_filter(image[:_SLICES].astype(np.float32), size=(1, 3, 3))
    out: dict[str, np.ndarray] = {}
    for organ, (c0, c1) in _BOXES.items():
        box = np.zeros(smooth.shape, dtype=bool)
        box[:, _ROWS[0] : _ROWS[1], c0:c1] = True
        bright = box & (smooth > 120) & (smooth < 330)
        bright = ndimage.binary_opening(bright, np.ones((1, 5, 5), dtype=bool))
        parts, _ = ndimage.label(bright)
        window = parts[_SEED_SLICE, _SEED_ROWS[0] : _SEED_ROWS[1], c0:c1]
        ids, counts = np.unique(window[window > 0], return_counts=True)
        if len(ids) == 0:
            raise ValueError(f"no bright part in the {organ} window of slice {_SEED_SLICE}")
        kidney = parts == ids[np.argmax(counts)]
        kidney = np.stack(
            [
                ndimage.binary_fill_holes(ndimage.binary_closing(s, np.ones((3, 3), dtype=bool)))
                for s in kidney
            ]
        )
        full = np.zeros(image.shape, dtype=bool)
        full[:_SLICES] = kidney
        out[organ] = full
    return out


def score(model: Path, image: np.ndarray, meta, reference: dict[str, np.ndarray]) -> dict:
    """One model: Dice and volumes per kidney, and what it called the reference's voxels."""
    from vetseg.inference.postprocess import PostprocessConfig
    from vetseg.inference.segmenter import Segmenter

    segmenter = Segmenter.load(model, postprocess=PostprocessConfig())
    labels = segmenter.predict(image, meta).labels
    organs = segmenter.organs
    voxel_ml = float(np.prod(meta.spacing)) / 1000.0
    out: dict = {"model_id": segmenter.info.model_id, "kidneys": {}}
    for organ, truth in reference.items():
        if organ not in organs:
            out["kidneys"][organ] = None
            continue
        predicted = labels == organs.index(organ) + 1
        total = int(truth.sum()) + int(predicted.sum())
        called, counts = np.unique(labels[truth], return_counts=True)
        out["kidneys"][organ] = {
            "dice": round(2.0 * float((truth & predicted).sum()) / total, 3),
            "reference_ml": round(float(truth.sum()) * voxel_ml, 1),
            "predicted_ml": round(float(predicted.sum()) * voxel_ml, 1),
            "reference_called": {
                (organs[int(k) - 1] if k else "background"): round(float(c / truth.sum()), 3)
                for k, c in zip(called, counts, strict=True)
                if c / truth.sum() >= 0.01
            },
        }
    dices = [v["dice"] for v in out["kidneys"].values() if v]
    out["mean_dice"] = round(float(np.mean(dices)), 3) if dices else None
    return out


def write_preview(image: np.ndarray, reference: dict[str, np.ndarray], path: Path) -> None:
    """Slices 1, 6, 11, 16 of the lower body with the reference kidneys tinted."""
    from PIL import Image

    rows = []
    for z in (1, 6, 11, 16):
        grey = np.clip((image[z, 220:380, 80:440].astype(np.float32) + 160.0) / 400.0, 0, 1)
        rgb = np.repeat((grey * 255.0)[..., None], 3, axis=-1)
        for mask, tint in zip(reference.values(), ([0, 120, 120], [120, 120, 0]), strict=True):
            m = mask[z, 220:380, 80:440]
            rgb[m] = 0.5 * rgb[m] + np.asarray(tint, dtype=np.float32)
        rows.append(rgb.astype(np.uint8))
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def main(argv: list[str] | None = None) -> None:
    from vetseg.fileutil import atomic_write_json
    from vetseg.io.image import read_image

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--scan", type=Path, default=SCAN)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--preview", type=Path, help="PNG of the reference on four slices")
    args = parser.parse_args(argv)
    if not args.scan.exists():
        raise SystemExit(f"{args.scan} is missing (../shared/data holds it)")
    image, meta = read_image(args.scan)
    reference = approximate_kidneys(image)
    if args.preview:
        write_preview(image, reference, args.preview)
    result = {
        "command": "python benchmarks/hcc_kidneys.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "scan": str(args.scan),
        "reference": "approximate: HU thresholds and connected parts (see the script), not manual",
        "models": {str(m): score(m, image, meta, reference) for m in args.models},
    }
    atomic_write_json(args.out, result)
    for name, row in result["models"].items():
        kid = row["kidneys"]
        print(name, row["mean_dice"], {k: v["dice"] if v else None for k, v in kid.items()})


if __name__ == "__main__":
    main()
