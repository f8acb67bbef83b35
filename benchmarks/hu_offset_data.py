"""A copy of a human training dataset whose organ HU vary per case: an experiment for
``benchmarks/hu_shift.py``'s finding that the human model tells organs apart by absolute HU.

Every TRAINING case gets one soft-tissue offset (uniform in +-``--global-hu``, applied to voxels
between -200 and 300 HU) plus one offset per labelled organ (uniform in +-``--organ-hu``,
applied to that organ's voxels in the same HU band): as if the patient's contrast timing,
fat content or scanner calibration were another. Air, lungs, fat below -200 HU and dense bone
above 300 HU keep their values; labels are copied unchanged. The validation cases of the
source model's split (``--splits``) are copied UNCHANGED, so validation Dice compares with the
source model's. The real copies (``real_cases`` in dataset.json) each get their own offsets:
ten variants of the one real CT instead of ten identical copies.

Usage::

    python benchmarks/hu_offset_data.py runs/human_model/data runs/human_model_hu/data \\
        --splits runs/human_model/model/train/splits.json
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> None:
    from vetseg.io.image import read_image, read_label, write_image

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--splits", type=Path, required=True)
    parser.add_argument("--global-hu", type=float, default=60.0)
    parser.add_argument("--organ-hu", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: choose a new folder.")
    dataset = json.loads((args.source / "dataset.json").read_text())
    val = set(json.loads(args.splits.read_text())["val"])
    (args.out / "imagesTr").mkdir(parents=True)
    (args.out / "labelsTr").mkdir()
    rng = np.random.default_rng(args.seed)
    offsets = {}
    for entry in dataset["training"]:
        case = Path(entry["label"]).name.removesuffix(".nii.gz")
        image_src = args.source / entry["image"]
        label_src = args.source / entry["label"]
        shutil.copy(label_src, args.out / "labelsTr" / label_src.name)
        if case in val:
            shutil.copy(image_src, args.out / "imagesTr" / image_src.name)
            continue
        image, meta = read_image(image_src)
        labels, _ = read_label(label_src, reference=meta, reference_shape=image.shape)
        soft = (image > -200) & (image < 300)
        shifted = image.astype(np.float32)
        shift = float(rng.uniform(-args.global_hu, args.global_hu))
        shifted[soft] += shift
        organ_shifts = {}
        for organ_id in np.unique(labels):
            if organ_id == 0:
                continue
            extra = float(rng.uniform(-args.organ_hu, args.organ_hu))
            shifted[soft & (labels == organ_id)] += extra
            organ_shifts[int(organ_id)] = round(extra, 1)
        offsets[case] = {"global": round(shift, 1), "organs": organ_shifts}
        out = np.clip(np.rint(shifted), -1024, 3071).astype(np.int16)
        write_image(out, meta, args.out / "imagesTr" / image_src.name)
        print(case, offsets[case]["global"], flush=True)
    dataset["description"] += (
        f" HU-offset copy (benchmarks/hu_offset_data.py): training cases' soft tissue shifted by"
        f" +-{args.global_hu} HU per case and +-{args.organ_hu} HU per organ; validation cases"
        " unchanged."
    )
    dataset["hu_offsets"] = offsets
    (args.out / "dataset.json").write_text(json.dumps(dataset, indent=1))


if __name__ == "__main__":
    main()
