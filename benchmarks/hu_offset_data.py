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


def write_hu_offset_dataset(
    source: Path,
    out: Path,
    val: set[str],
    global_hu: float = 60.0,
    organ_hu: float = 30.0,
    seed: int = 0,
) -> dict[str, dict]:
    """Write the copy (see the module docstring); returns the offsets drawn per case."""
    from vetseg.io.image import read_image, read_label, write_image

    if out.exists():
        raise SystemExit(f"{out} exists: choose a new folder.")
    dataset = json.loads((source / "dataset.json").read_text())
    (out / "imagesTr").mkdir(parents=True)
    (out / "labelsTr").mkdir()
    rng = np.random.default_rng(seed)
    offsets: dict[str, dict] = {}
    for entry in dataset["training"]:
        case = Path(entry["label"]).name.removesuffix(".nii.gz")
        image_src = source / entry["image"]
        label_src = source / entry["label"]
        shutil.copy(label_src, out / "labelsTr" / label_src.name)
        if case in val:
            shutil.copy(image_src, out / "imagesTr" / image_src.name)
            continue
        image, meta = read_image(image_src)
        labels, _ = read_label(label_src, reference=meta, reference_shape=image.shape)
        soft = (image > -200) & (image < 300)
        shifted = image.astype(np.float32)
        shift = float(rng.uniform(-global_hu, global_hu))
        shifted[soft] += shift
        organ_shifts = {}
        for organ_id in np.unique(labels):
            if organ_id == 0:
                continue
            extra = float(rng.uniform(-organ_hu, organ_hu))
            shifted[soft & (labels == organ_id)] += extra
            organ_shifts[int(organ_id)] = round(extra, 1)
        offsets[case] = {"global": round(shift, 1), "organs": organ_shifts}
        pixels = np.clip(np.rint(shifted), -1024, 3071).astype(np.int16)
        write_image(pixels, meta, out / "imagesTr" / image_src.name)
        print(case, offsets[case]["global"], flush=True)
    dataset["description"] = dataset.get("description", "") + (
        f" HU-offset copy (benchmarks/hu_offset_data.py): training cases' soft tissue shifted by"
        f" +-{global_hu} HU per case and +-{organ_hu} HU per organ; validation cases unchanged."
    )
    dataset["hu_offsets"] = offsets
    (out / "dataset.json").write_text(json.dumps(dataset, indent=1))
    return offsets


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--splits", type=Path, required=True)
    parser.add_argument("--global-hu", type=float, default=60.0)
    parser.add_argument("--organ-hu", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    val = set(json.loads(args.splits.read_text())["val"])
    write_hu_offset_dataset(args.source, args.out, val, args.global_hu, args.organ_hu, args.seed)


if __name__ == "__main__":
    main()
