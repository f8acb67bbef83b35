"""Which tile a human model should run on when it segments a scan, measured; and a copy of the
model that runs on the chosen one.

The human model is trained on 128 px tiles (192 mm at 1.5 mm pixels): big enough for one organ,
too small for the body around it. At inference a 290 mm field is covered by overlapping tiles,
and a kidney near a tile's edge is seen without the spine or the other kidney beside it; the
stage-2 model then called the medial part of a real left kidney "right" (HCC_009). The network
is fully convolutional, so it can run on larger tiles than it trained on
(``PreprocessConfig.tile``); whether that helps is measured here, per tile size, on:

- the labelled real DICOM series (liver, spleen, bone, ...; TotalSegmentator labels),
- HCC_009's kidneys, spleen and lungs (approximate HU references: benchmarks/hcc_organs.py),
- the model's six validation phantoms (3D, ``--variety``), regenerated from their seeds.

Everything is post-processed as ``vetseg segment`` writes it. The HCC_009 and series figures
also chose the shipped model, so they are not independent of it.

Usage::

    python benchmarks/inference_tile.py MODEL --tiles 128,192,256 \\
        --out benchmarks/results/inference_tile.json
    python benchmarks/inference_tile.py MODEL --set 192 --dest DIR

``--set``: DIR gets a copy of MODEL that runs on that tile: the same weights under a new model id
whose parent is MODEL's (its labels differ, so it is another model), MADE_BY.txt extended.
DIR may be MODEL itself (then it is replaced in place, atomically file by file).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

#: Seeds of the shipped model's validation phantoms (``vetseg phantoms --seed 100``, ids of its
#: split: human_004, human_026, ...).
VAL_IDS = (4, 26, 30, 49, 61, 80)
#: Files of a model folder that are kept when it is copied (caches are not).
KEPT = ("MADE_BY.txt", "PARENT_MADE_BY.txt", "metrics.jsonl")
#: Cached bf16 accuracy decisions, made for one model id and tile.
CHECKS = "precision_checks.json"


def read_recipe(model: Path) -> dict[str, str]:
    """The recipe files (:data:`KEPT`) a model folder holds, by name."""
    return {name: (model / name).read_text() for name in KEPT if (model / name).is_file()}


def write_derived(net, info, dest: Path, recipe: dict[str, str], note: str) -> Path:
    """Save ``net`` under ``info`` (a new model derived from another) into ``dest`` with the
    source's ``recipe`` files, MADE_BY.txt extended by ``note``; the folder's compiled caches
    (made for another model id) are removed. Every file is replaced atomically."""
    from vetseg.fileutil import atomic_write_text
    from vetseg.models.files import save_model

    dest.mkdir(parents=True, exist_ok=True)
    for cache in [*dest.glob("openvino-*.blob"), dest / CHECKS]:
        cache.unlink(missing_ok=True)
    save_model(net, dest, info, half=info.weights_dtype == "float16")
    for name, text in recipe.items():
        atomic_write_text(dest / name, text + note if name == "MADE_BY.txt" else text)
    return dest


def resave_inference_setting(
    model: Path,
    dest: Path,
    changes: dict,
    key: str,
    describe,
    command: str | None = None,
    why: str = "benchmarks/inference_tile.py",
) -> Path:
    """Write to ``dest`` the model at ``model`` with inference-only ``changes`` to its input
    definition (e.g. ``{"tile": 192}``): same weights, new model id, parent = ``model``'s id,
    ``training[key]`` recording the change and ``command``, MADE_BY.txt extended by
    ``describe(old_info, new_info)``, the command and where the measurement lies (``why``).
    ``dest`` may be ``model`` itself: everything is read before anything is written, and every
    file is replaced atomically."""
    from vetseg.models.files import load_model, new_model_id

    net, info = load_model(model)
    recipe = read_recipe(model)
    new = dataclasses.replace(
        info,
        model_id=new_model_id(info.stage),
        parent=info.model_id,
        preprocess=dataclasses.replace(info.preprocess, **changes),
        training={
            **info.training,
            key: {**changes, "weights_of": info.model_id, "command": command},
        },
        created="",
    )
    note = (
        "\n"
        + describe(info, new)
        + (f" Made by: {command}." if command else "")
        + f" Why and the measurement: {why}.\n"
    )
    return write_derived(net, new, dest, recipe, note)


def retile(model: Path, tile: int | None, dest: Path, command: str | None = None) -> Path:
    """Write to ``dest`` the model at ``model`` with inference tile ``tile`` (None: the
    training tile): same weights, new model id, parent = ``model``'s id (see
    :func:`resave_inference_setting`; ``dest`` may be ``model`` itself)."""

    def describe(old, new) -> str:
        return (
            f"Inference tile: the weights of {old.model_id} (trained on {old.preprocess.size}"
            f" px tiles, run on {old.preprocess.tile_size} px) saved as {new.model_id}, run on"
            f" {new.preprocess.tile_size} px tiles; nothing retrained."
        )

    return resave_inference_setting(
        model, dest, {"tile": tile}, "inference_tile", describe, command
    )


def mask_dice(a: np.ndarray, b: np.ndarray) -> float | None:
    """vetseg's Dice of two masks, rounded; None when both are empty."""
    from vetseg.training.metrics import dice_per_organ

    value = float(dice_per_organ(a[None], b[None], channel_dim=0)[0])
    return None if np.isnan(value) else round(value, 4)


def series_figures(model: Path, held_out: Path) -> dict:
    """Dice per organ on the labelled real DICOM series, scored as ``vetseg evaluate`` scores
    what ``vetseg segment`` writes (``held_out``: make_human_model.py's copy of the series);
    only the organs the reference holds."""
    from vetseg.training.evaluation import evaluate

    result = evaluate(model, held_out)
    return {
        organ: round(dice, 4)
        for organ, dice in result["per_organ"].items()
        if dice is not None and result["summary"][organ]["ok"]
    }


def phantom_figures(model: Path, variety: str) -> dict:
    """Mean Dice per organ over the validation phantoms (3D, post-processed)."""
    from vetseg.data.phantoms import make_phantom
    from vetseg.inference.postprocess import PostprocessConfig
    from vetseg.inference.segmenter import Segmenter
    from vetseg.io.image import ImageMeta

    segmenter = Segmenter.load(model, postprocess=PostprocessConfig())
    per_organ: dict[str, list[float]] = {}
    for k in VAL_IDS:
        phantom = make_phantom("human", np.random.default_rng([100, k]), True, variety)
        meta = ImageMeta(spacing=tuple(float(s) for s in phantom.spacing), origin=phantom.origin)
        labels = segmenter.predict(phantom.ct.astype(np.float32), meta).labels
        for i, organ in enumerate(segmenter.organs, 1):
            if organ not in phantom.organs:
                continue
            truth = phantom.labels == phantom.organs.index(organ) + 1
            value = mask_dice(labels == i, truth)
            if value is not None:
                per_organ.setdefault(organ, []).append(value)
    means = {organ: round(float(np.mean(v)), 4) for organ, v in per_organ.items()}
    return {"per_organ": means, "mean": round(float(np.mean(list(means.values()))), 4)}


def measure(model: Path, tiles: list[int], variety: str) -> dict:
    import hcc_organs
    from make_human_model import write_held_out

    from vetseg.io.image import read_image

    image, meta = read_image(hcc_organs.SCAN)
    reference = hcc_organs.approximate_organs(image)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        held_out = write_held_out(Path(tmp) / "held_out_dicom_series")
        for tile in tiles:
            started = time.perf_counter()
            copy = retile(model, tile, Path(tmp) / f"tile_{tile}")
            hcc = hcc_organs.score(copy, image, meta, reference)
            out[str(tile)] = {
                "series": series_figures(copy, held_out),
                "hcc_009": {o: (v or {}).get("dice") for o, v in hcc["organs"].items()},
                "hcc_009_ml": {o: (v or {}).get("predicted_ml") for o, v in hcc["organs"].items()},
                "validation_phantoms": phantom_figures(copy, variety),
                "seconds": round(time.perf_counter() - started, 1),
            }
            print(tile, json.dumps(out[str(tile)]), flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--tiles", help="comma-separated tile sizes to measure, e.g. 128,192")
    parser.add_argument("--variety", default="wide-kidneys", help="of the validation phantoms")
    parser.add_argument("--out", type=Path, help="JSON of the measurement")
    parser.add_argument("--set", type=int, dest="tile", help="write a copy that runs on this tile")
    parser.add_argument("--dest", type=Path, help="where --set writes the model")
    args = parser.parse_args(argv)
    command = "python benchmarks/inference_tile.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    if args.tile is not None:
        if args.dest is None:
            parser.error("--set needs --dest")
        retile(args.model, args.tile, args.dest, command)
        print("wrote", args.dest)
        return
    if not args.tiles or args.out is None:
        parser.error("give --tiles and --out (measure), or --set and --dest (write a copy)")
    from vetseg.fileutil import atomic_write_json
    from vetseg.models.files import read_model_info

    info = read_model_info(args.model)
    result = {
        "command": command,
        "model_id": info.model_id,
        "trained_on_tiles": info.preprocess.size,
        "note": "HCC_009 references are approximate (HU thresholds); the series and HCC_009 also"
        " chose the shipped model, so these figures are not independent of it.",
        "tiles": measure(args.model, [int(t) for t in args.tiles.split(",")], args.variety),
    }
    atomic_write_json(args.out, result)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
