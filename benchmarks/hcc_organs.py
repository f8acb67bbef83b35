"""Human models on the kidneys, spleen and lungs of a real contrast CT they never saw, against
an APPROXIMATE reference drawn by HU thresholds (not a manual label).

The one labelled real series (``totalseg_example/dicom_series``) holds no kidney and no lung,
and the other real patient (``../shared/data/human/hcc_tace_009/contrast_3phase``, 69 slices,
0.742 x 0.742 x 2.5 mm, contrast-enhanced) has no labels. Three of its organs are easy to draw
by HU. :func:`approximate_organs` draws the kidneys and the spleen each as: a 3 x 3 in-plane
median filter, an HU range inside a box, an in-plane opening, the connected part that covers
most of a window in one slice, holes filled per slice after a 3 x 3 closing.

- Kidneys (lowest 24 slices; the scan starts at mid-kidney): 120-330 HU (a homogeneous
  nephrogram in fat), a box per side, 5 x 5 opening (cuts the renal vessels), window in slice
  9. The parenchyma (68 and 69 ml in the field of view), not the renal sinus; the upper poles'
  last dim slices are left out.
- Spleen (enlarged, slices 1-52): 90-200 HU on the patient's left (the positive oral contrast
  of the stomach beside it is brighter), 7 x 7 opening, window in slice 25: about 610 ml.
- Lungs (the bases, slices 28-68): every connected part below -400 HU that does not touch the
  image's edge (the air around the body does) and holds at least 30,000 voxels (41 ml; the
  largest other inner air, gas in the stomach, holds 15 ml), holes filled per slice after a
  3 x 3 closing (the vessels inside): two parts of about 830 and 790 ml.

Checked by eye on previews, not by a radiologist: the figures are a proxy for what a labelled
contrast CT would show, and differences of a few hundredths mean nothing.

For each model: Dice per organ after vetseg's post-processing (what ``vetseg segment``
writes), the volumes, and where the reference's voxels went (which organ the model called
them).

Usage::

    python benchmarks/hcc_organs.py MODEL [MODEL ...] --out FILE.json [--preview FILE.png]
        [--fov MM]   # the scan cut to a centred field of MM first, as a smaller reconstruction
        [--shift-kidneys HU]   # HU added to the reference kidneys first (contrast timing)
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
# organ: (slices, HU range, box rows, box columns, opening, window slice, window rows, columns)
_RULES = {
    "kidney_right": (24, (120, 330), (240, 350), (100, 215), 5, 9, (260, 340), (100, 215)),
    "kidney_left": (24, (120, 330), (240, 350), (300, 415), 5, 9, (260, 340), (300, 415)),
    "spleen": (69, (90, 200), (100, 420), (330, 512), 7, 25, (200, 330), (420, 480)),
}


def approximate_organs(image: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks of both kidneys, the spleen and the lungs of the HCC_009 contrast series
    (see the module notes).

    Raises:
        ValueError: when the image is not laid out as that series (too few slices, rows or
            columns), or nothing in an organ's HU range lies in its window.
    """
    from scipy import ndimage

    if image.ndim != 3 or image.shape[0] <= 25 or image.shape[1] < 420 or image.shape[2] < 512:
        raise ValueError(f"expected the HCC_009 contrast series layout, got {image.shape}")
    out: dict[str, np.ndarray] = {}
    for organ, rule in _RULES.items():
        slices, (lo, hi), (r0, r1), (c0, c1), opening, seed, (w0, w1), (v0, v1) = rule
        smooth = ndimage.median_filter(image[:slices].astype(np.float32), size=(1, 3, 3))
        box = np.zeros(smooth.shape, dtype=bool)
        box[:, r0:r1, c0:c1] = True
        inside = box & (smooth > lo) & (smooth < hi)
        inside = ndimage.binary_opening(inside, np.ones((1, opening, opening), dtype=bool))
        parts, _ = ndimage.label(inside)
        window = parts[seed, w0:w1, v0:v1]
        ids, counts = np.unique(window[window > 0], return_counts=True)
        if len(ids) == 0:
            raise ValueError(f"nothing of {lo}-{hi} HU in the {organ} window of slice {seed}")
        mask = _filled_per_slice(parts == ids[np.argmax(counts)])
        full = np.zeros(image.shape, dtype=bool)
        full[:slices] = mask
        out[organ] = full
    out["lungs"] = _lungs(image)
    return out


_LUNG_HU = -400
_LUNG_MIN_VOXELS = 30_000


def _lungs(image: np.ndarray) -> np.ndarray:
    """The inner air parts of at least :data:`_LUNG_MIN_VOXELS` voxels, holes filled per slice.

    Raises:
        ValueError: when there is no such part.
    """
    from scipy import ndimage

    air = image < _LUNG_HU
    parts, count = ndimage.label(air)
    edge = np.unique(np.concatenate([parts[:, [0, -1], :].ravel(), parts[:, :, [0, -1]].ravel()]))
    sizes = np.bincount(parts.ravel(), minlength=count + 1)
    keep = sizes >= _LUNG_MIN_VOXELS
    keep[0] = False
    keep[edge] = False
    if not keep.any():
        raise ValueError(f"no inner part below {_LUNG_HU} HU of {_LUNG_MIN_VOXELS} voxels")
    return _filled_per_slice(keep[parts])


def _filled_per_slice(mask: np.ndarray) -> np.ndarray:
    """Each slice's holes filled after a 3 x 3 closing."""
    from scipy import ndimage

    closed = ndimage.binary_closing(mask, np.ones((1, 3, 3), dtype=bool))
    return np.stack([ndimage.binary_fill_holes(s) for s in closed])


def score(
    model: Path, image: np.ndarray, meta, reference: dict[str, np.ndarray], rules=None
) -> dict:
    """One model: Dice and volumes per organ, and what it called the reference's voxels
    (post-processing: ``rules``, a PostprocessConfig, default vetseg's own)."""
    from vetseg.inference.postprocess import PostprocessConfig
    from vetseg.inference.segmenter import Segmenter
    from vetseg.training.metrics import dice_per_organ

    segmenter = Segmenter.load(model, postprocess=rules or PostprocessConfig())
    labels = segmenter.predict(image, meta).labels
    organs = segmenter.organs
    voxel_ml = float(np.prod(meta.spacing)) / 1000.0
    out: dict = {"model_id": segmenter.info.model_id, "organs": {}}
    for organ, truth in reference.items():
        if organ not in organs:
            out["organs"][organ] = None
            continue
        predicted = labels == organs.index(organ) + 1
        called, counts = np.unique(labels[truth], return_counts=True)
        out["organs"][organ] = {
            "dice": round(float(dice_per_organ(predicted[None], truth[None], channel_dim=0)[0]), 3),
            "reference_ml": round(float(truth.sum()) * voxel_ml, 1),
            "predicted_ml": round(float(predicted.sum()) * voxel_ml, 1),
            "reference_called": {
                (organs[int(k) - 1] if k else "background"): round(float(c / truth.sum()), 3)
                for k, c in zip(called, counts, strict=True)
                if c / truth.sum() >= 0.01
            },
        }
    kidneys = [
        out["organs"][k]["dice"] for k in ("kidney_left", "kidney_right") if out["organs"][k]
    ]
    out["kidney_mean_dice"] = round(float(np.mean(kidneys)), 3) if kidneys else None
    return out


def write_preview(image: np.ndarray, reference: dict[str, np.ndarray], path: Path) -> None:
    """Slices 1, 6, 11, 16, 25, 40 and 55 with the reference organs tinted."""
    from PIL import Image

    rows = []
    tints = ([0, 120, 120], [120, 120, 0], [0, 0, 140], [140, 0, 100])
    for z in (1, 6, 11, 16, 25, 40, 55):
        if z >= image.shape[0]:
            continue
        grey = np.clip((image[z, 80:400, 60:500].astype(np.float32) + 160.0) / 400.0, 0, 1)
        rgb = np.repeat((grey * 255.0)[..., None], 3, axis=-1)
        for mask, tint in zip(reference.values(), tints, strict=True):
            m = mask[z, 80:400, 60:500]
            rgb[m] = 0.5 * rgb[m] + np.asarray(tint, dtype=np.float32)
        rows.append(rgb.astype(np.uint8))
    sheet = Image.fromarray(np.concatenate(rows, axis=0))
    # Half size (a 220 px wide column) keeps the committed image small.
    sheet.resize((sheet.width // 2, sheet.height // 2), Image.Resampling.LANCZOS).save(path)


def cut_field(image: np.ndarray, meta, reference: dict[str, np.ndarray], fov_mm: float):
    """The scan and its references cut to a centred in-plane field of ``fov_mm`` (a scanner
    that reconstructs a smaller field: the body may be cut at the sides), with the origin of
    the cut so that it stays where it was in the patient."""
    import dataclasses

    n = int(round(fov_mm / meta.spacing[0]))
    if not 0 < n <= min(image.shape[1:]):
        raise ValueError(f"a {fov_mm} mm field does not fit the scan's {image.shape[1:]} pixels")
    y0, x0 = (image.shape[1] - n) // 2, (image.shape[2] - n) // 2
    window = (slice(None), slice(y0, y0 + n), slice(x0, x0 + n))
    origin = (
        meta.origin[0] + x0 * meta.spacing[0],
        meta.origin[1] + y0 * meta.spacing[1],
        meta.origin[2],
    )
    cut = {k: np.ascontiguousarray(v[window]) for k, v in reference.items()}
    return np.ascontiguousarray(image[window]), dataclasses.replace(meta, origin=origin), cut


def resample_inplane(image: np.ndarray, meta, reference: dict[str, np.ndarray], pixel_mm: float):
    """The scan (linear) and its references (nearest; masks or uint8 label maps, dtype kept)
    resampled in-plane to square pixels of ``pixel_mm`` over the same field (a scanner that
    reconstructs on a finer or coarser matrix); slices unchanged. The origin moves with the
    first pixel's centre, so the patient stays where it was."""
    import dataclasses

    from scipy import ndimage

    if pixel_mm <= 0:
        raise ValueError(f"pixel size must be positive, got {pixel_mm}")
    rows = int(round(image.shape[1] * meta.spacing[1] / pixel_mm))
    cols = int(round(image.shape[2] * meta.spacing[0] / pixel_mm))
    zoom = (1.0, rows / image.shape[1], cols / image.shape[2])

    def resample(volume: np.ndarray, order: int) -> np.ndarray:
        return ndimage.zoom(volume, zoom, order=order, mode="nearest", grid_mode=True)

    new_x = meta.spacing[0] * image.shape[2] / cols
    new_y = meta.spacing[1] * image.shape[1] / rows
    origin = (
        meta.origin[0] + 0.5 * (new_x - meta.spacing[0]),
        meta.origin[1] + 0.5 * (new_y - meta.spacing[1]),
        meta.origin[2],
    )
    out_meta = dataclasses.replace(meta, spacing=(new_x, new_y, meta.spacing[2]), origin=origin)
    out_reference = {
        k: resample(v.astype(np.uint8), 0).astype(v.dtype) for k, v in reference.items()
    }
    return resample(image.astype(np.float32), 1), out_meta, out_reference


def shift_organs(
    image: np.ndarray, reference: dict[str, np.ndarray], organs: tuple[str, ...], hu: float
) -> np.ndarray:
    """A copy of ``image`` with ``hu`` added inside the reference masks of ``organs``."""
    shifted = image.astype(np.float32, copy=True)
    for organ in organs:
        shifted[reference[organ]] += hu
    return shifted


def main(argv: list[str] | None = None) -> None:
    from vetseg.fileutil import atomic_write_json
    from vetseg.io.image import read_image

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--scan", type=Path, default=SCAN)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--preview", type=Path, help="PNG of the reference on six slices")
    parser.add_argument("--rules", type=Path, help="post-processing rules (as vetseg segment)")
    parser.add_argument(
        "--shift-kidneys",
        type=float,
        default=0.0,
        metavar="HU",
        help="add HU to the voxels of both reference kidneys first (another nephrographic"
        " enhancement; the rest of the scan unchanged)",
    )
    parser.add_argument(
        "--pixel",
        type=float,
        metavar="MM",
        help="resample the scan and its references in-plane to this pixel size first (before"
        " --fov; e.g. 0.57 with --fov 292: a 512 x 512 matrix as the kept-out scan has)",
    )
    parser.add_argument(
        "--fov",
        type=float,
        help="cut the scan to a centred field of this many mm first (the body cut at the sides)",
    )
    args = parser.parse_args(argv)
    if not args.scan.exists():
        raise SystemExit(f"{args.scan} is missing (../shared/data holds it)")
    from vetseg.config import load_json
    from vetseg.inference.postprocess import PostprocessConfig

    rules = PostprocessConfig.from_json(load_json(args.rules)) if args.rules else None
    image, meta = read_image(args.scan)
    reference = approximate_organs(image)
    if args.preview:
        write_preview(image, reference, args.preview)
    if args.pixel is not None:
        image, meta, reference = resample_inplane(image, meta, reference, args.pixel)
    if args.fov is not None:
        image, meta, reference = cut_field(image, meta, reference, args.fov)
    if args.shift_kidneys:
        image = shift_organs(image, reference, ("kidney_left", "kidney_right"), args.shift_kidneys)
    result = {
        "command": "python benchmarks/hcc_organs.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "scan": str(args.scan),
        "reference": "approximate: HU thresholds and connected parts (see the script), not manual",
        "field_of_view_mm": args.fov,
        "pixel_mm": args.pixel,
        "kidneys_shifted_hu": args.shift_kidneys,
        "reference_ml": {
            k: round(float(v.sum()) * float(np.prod(meta.spacing)) / 1000.0, 1)
            for k, v in reference.items()
        },
        "models": {str(m): score(m, image, meta, reference, rules) for m in args.models},
    }
    atomic_write_json(args.out, result)
    for name, row in result["models"].items():
        dice = {k: v["dice"] if v else None for k, v in row["organs"].items()}
        print(name, "kidneys", row["kidney_mean_dice"], dice)


if __name__ == "__main__":
    main()
