"""Before/after previews of a REAL mouse head: the pre-label without and with slice smoothing.

A mouse-head model (made by ``benchmarks/mouse_head_prelabel.py``: trained from ONE labelled
template plus augmented copies of it) segments one real, unlabelled head micro-CT
(``../shared/data/mouse/heads``) with ``smooth_slices`` 0 and ``--smooth`` (as ``vetseg segment
--smooth-slices``). The three views (axial, coronal, sagittal mid-slices) of each go into one
PNG under ``docs/images/``; the figures (neighbour-slice Dice of each label map, voxels that
change) go to ``benchmarks/results/slice_consistency_preview.json``. There is no reference for
a real head: the previews show stripes, not accuracy.

Usage::

    python benchmarks/slice_consistency_preview.py --model runs/mouse_head/model --smooth 2
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vetseg.fileutil import atomic_path, atomic_write_json

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "runs" / "mouse_head" / "model")
    heads = REPO.parent / "shared" / "data" / "mouse" / "heads"
    parser.add_argument("--head", type=Path, default=heads / "AKR_J_.nii.gz")
    parser.add_argument("--smooth", type=int, default=2)
    parser.add_argument(
        "--context-model",
        type=Path,
        help="A second mouse-head model trained with neighbouring slices as input channels "
        "(`benchmarks/mouse_head_prelabel.py --context-slices 1`): its pre-label, each slice "
        "alone, is a third row.",
    )
    parser.add_argument("--width", type=int, default=800, help="PNG width in pixels.")
    parser.add_argument("--images", type=Path, default=REPO / "docs" / "images")
    results = REPO / "benchmarks" / "results" / "slice_consistency_preview.json"
    parser.add_argument("--out", type=Path, default=results)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    from vetseg.inference.consistency import neighbour_dice
    from vetseg.inference.postprocess import PostprocessConfig
    from vetseg.inference.segmenter import Segmenter
    from vetseg.io.image import read_image, to_canonical
    from vetseg.viz.preview import render_preview

    args = parse_args(argv)
    torch.set_num_threads(1)
    scan, meta = read_image(args.head)
    case = args.head.name.removesuffix(".nii.gz")
    pictures, figures, labels_by = [], {}, {}
    variants = [("smooth0", args.model, 0), (f"smooth{args.smooth}", args.model, args.smooth)]
    if args.context_model is not None:
        variants.append(("context", args.context_model, 0))
    model_ids = {}
    for key, model, smooth in variants:
        segmenter = Segmenter.load(model, postprocess=PostprocessConfig(), smooth_slices=smooth)
        labels = segmenter.predict(scan, meta).labels
        labels_by[key] = labels
        model_ids[key] = segmenter.info.model_id
        names = {i + 1: o for i, o in enumerate(segmenter.organs)}
        canonical = to_canonical(labels, meta, segmenter.info.preprocess.orientation)[0]
        figures[key] = {organ: neighbour_dice(canonical, i) for i, organ in names.items()}
        context = segmenter.info.preprocess.context_slices
        if context:
            how = f"{1 + 2 * context} slices as input channels"
        else:
            how = "each slice alone" if smooth == 0 else f"--smooth-slices {smooth}"
        title = f"{case}: REAL mouse head, pre-label, {how} (model from ONE template)"
        pictures.append(render_preview(scan, meta, labels, names, title=title))
    width = max(p.width for p in pictures)
    sheet = Image.new("RGB", (width, sum(p.height for p in pictures)), "white")
    top = 0
    for picture in pictures:
        sheet.paste(picture, (0, top))
        top += picture.height
    scale = args.width / sheet.width
    sheet = sheet.resize((args.width, round(sheet.height * scale)), Image.LANCZOS)
    png = args.images / f"slice_consistency_{case}.png"
    with atomic_path(png) as tmp:
        # A 128-colour palette keeps the sheet small (grey CT and a few organ colours).
        sheet.quantize(colors=128).save(tmp, format="PNG", optimize=True)
    baseline = labels_by["smooth0"]
    changed = {key: int(np.count_nonzero(baseline != labels)) for key, labels in labels_by.items()}
    del changed["smooth0"]
    report = {
        "what": "REAL mouse head pre-label each slice alone, with slice smoothing and (if "
        "given) by a model with neighbouring slices as input channels; neighbour-slice Dice of "
        "each label map (no reference exists for a real head)",
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "head": args.head.name,
        "model": str(args.model),
        "context_model": str(args.context_model) if args.context_model else None,
        "model_ids": model_ids,
        "neighbour_dice": figures,
        "voxels_changed": changed,
        "voxels_labelled": int(np.count_nonzero(baseline)),
        "preview": str(png.relative_to(REPO)) if png.is_relative_to(REPO) else str(png),
    }
    atomic_write_json(args.out, report)
    print(report)


if __name__ == "__main__":
    main()
