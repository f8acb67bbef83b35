"""Post-processing of single organs: keep only the largest part, or also every part at least
half its size? Measured over several human models on the labelled real series and on the
validation phantoms of the shipped recipe.

Each model segments each scan once without post-processing; the label map is then cleaned
with vetseg's default rules as they were (``also_keep_ratio`` 0: the largest part only) and as
they are (0.5 for the soft-tissue organs), and scored against the reference, per organ.

Usage::

    python benchmarks/postprocess_ratio.py MODEL [MODEL ...] --out FILE.json

Data: the held-out real DICOM series (``runs/human_model/held_out_dicom_series``, written by
``benchmarks/make_human_model.py``) and the validation phantoms of
``runs/human_model/model/train/splits.json`` in ``runs/human_model/data``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "runs" / "human_model"


def _cases() -> list[tuple[str, str, np.ndarray, object, np.ndarray]]:
    from vetseg.io.image import read_image, read_label
    from vetseg.labels import HUMAN_ORGANS, remap_labels, totalseg_mapping

    held_out = WORK / "held_out_dicom_series"
    image, meta = read_image(held_out / "dicom_series.nii.gz")
    raw, _ = read_label(
        held_out / "dicom_series_seg.nii.gz", reference=meta, reference_shape=image.shape
    )
    mapping = totalseg_mapping(HUMAN_ORGANS)
    out = [
        (
            "real",
            "dicom_series",
            image,
            meta,
            remap_labels(raw, mapping, HUMAN_ORGANS, strict=False),
        )
    ]
    for case in json.loads((WORK / "model" / "train" / "splits.json").read_text())["val"]:
        image, meta = read_image(WORK / "data" / "imagesTr" / f"{case}_0000.nii.gz")
        labels, _ = read_label(
            WORK / "data" / "labelsTr" / f"{case}.nii.gz",
            reference=meta,
            reference_shape=image.shape,
        )
        out.append(("phantom", case, image, meta, labels))
    return out


def main(argv: list[str] | None = None) -> None:
    from vetseg.data.preprocess import inplane_offset, inplane_spacing
    from vetseg.fileutil import atomic_write_json
    from vetseg.inference.postprocess import PostprocessConfig, postprocess_labels
    from vetseg.inference.segmenter import Segmenter
    from vetseg.io.image import to_canonical

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    now = PostprocessConfig()
    before = PostprocessConfig(
        rules={o: dataclasses.replace(r, also_keep_ratio=0.0) for o, r in now.rules}
    )
    configs = {"largest_only": before, "half_ratio": now}
    cases = _cases()
    scores: dict = {name: {"real": {}, "phantom": {}} for name in configs}
    for model in args.models:
        segmenter = Segmenter.load(model, postprocess=PostprocessConfig(enabled=False))
        organs = segmenter.organs
        for kind, _, image, meta, reference in cases:
            orientation = segmenter.info.preprocess.orientation
            canonical, cmeta = to_canonical(image, meta, orientation)
            ref, _ = to_canonical(reference, meta, orientation)
            raw, _ = segmenter.segment_canonical(
                canonical, None, inplane_spacing(cmeta.spacing), inplane_offset(cmeta)
            )
            for name, config in configs.items():
                labels = postprocess_labels(raw.copy(), organs, cmeta.spacing, config)
                for index, organ in enumerate(organs, start=1):
                    truth = ref == index
                    if not truth.any():
                        continue
                    pred = labels == index
                    dice = 2.0 * float((truth & pred).sum()) / float(truth.sum() + pred.sum())
                    scores[name][kind].setdefault(organ, []).append(dice)
        print("done", model, flush=True)
    summary = {
        name: {
            kind: {
                "per_organ": {o: round(float(np.mean(v)), 4) for o, v in per.items()},
                "mean": round(float(np.mean([np.mean(v) for v in per.values()])), 4),
                "n_scores_per_organ": {o: len(v) for o, v in per.items()},
            }
            for kind, per in kinds.items()
        }
        for name, kinds in scores.items()
    }
    result = {
        "command": "python benchmarks/postprocess_ratio.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "models": [json.loads((m / "model.json").read_text())["model_id"] for m in args.models],
        "what": "Mean Dice per organ over models (and cases): single organs keeping only their"
        " largest part vs also every part of at least half its size.",
        "summary": summary,
    }
    atomic_write_json(args.out, result)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
