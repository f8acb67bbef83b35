"""Train the human model that ships with vetseg: real labelled human CT plus varied phantoms.

Recipe (each step resumes when re-run; nothing is redone that is already on disk):

1. ``WORK/data``: an MSD dataset of ``--phantoms`` wide-variety human phantoms
   (``vetseg phantoms --variety wide``: contrast phases, noise, kernels, slice thickness,
   fields of view, body sizes, table, arms, metal; ``wide-kidneys`` with ``--varied-kidneys``:
   kidneys as real contrast scans show them too; ``wide-ribs`` with ``--varied-ribs``: those
   kidneys, and ribs as real CT shows them, costal cartilage included; ``wide-stomach`` with
   ``--varied-stomach``: those, and half the stomachs collapsed around food) plus the real
   TotalSegmentator example CT
   (``../shared/data/human/totalseg_example/ct.nii.gz``, labels mapped to vetseg's 12 human
   organs) written ``--real-copies`` times, so that about a tenth of the slices drawn are real.
2. ``WORK/model/train/splits.json`` is written first: every real copy in train, validation on
   phantoms only (the one real scan cannot also be a fair validation case).
3. Only with ``--hu-offset GLOBAL ORGAN`` (not the shipped model's recipe): ``WORK/data_hu``, a
   copy in which every TRAINING case's soft tissue (-200..300 HU) is shifted by up to +-GLOBAL
   HU and each organ by up to +-ORGAN HU more (``benchmarks/hu_offset_data.py``; validation
   cases unchanged; each real copy gets its own offsets). Tried at 60 30: far more robust to
   HU shifts, slightly worse at the HU the data were drawn at
   (``benchmarks/results/hu_offset_experiment.json``).
4. ``vetseg train-human WORK/data --out WORK/model`` (or ``WORK/data_hu``; ``--hu-shift P``: the
   same kind of shift drawn afresh per training slice instead) at 1.5 mm pixels in
   128 px tiles; the model records that it runs on 192 px tiles when it segments a scan
   (``--tile``; measured by ``benchmarks/inference_tile.py``).
5. The selected epoch is saved in half precision to ``src/vetseg/assets/human_model`` with its
   log and MADE_BY.txt.
6. Held-out real check: the real DICOM series ``totalseg_example/dicom_series`` (another
   patient, another scanner set-up, never trained on) is evaluated with ``vetseg evaluate``;
   figures go to ``benchmarks/results/human_model_real.json``.

Usage: python benchmarks/make_human_model.py [--work runs/human_model] [--phantoms 100] ...
The real data folder is required (this recipe is about real CT).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "human" / "totalseg_example"
VETSEG = [str(Path(sys.executable).parent / "vetseg")]


def run(cmd: list[str], log: Path | None = None) -> None:
    print("$", " ".join(cmd), flush=True)
    if log is None:
        subprocess.run(cmd, check=True)
        return
    with open(log, "a") as handle:
        subprocess.run(cmd, check=True, stdout=handle, stderr=subprocess.STDOUT)


def write_real_cases(data: Path, copies: int, phases: bool = False) -> list[str]:
    """Add the real TotalSegmentator example (labels in vetseg's human ids) to the dataset.

    With ``phases``, each copy is a contrast-phase variant of the (non-contrast) scan
    (:func:`vetseg.data.phases.phase_variant`; phases in the phantoms' proportions, bolus
    0.8-1.2, seed = copy number) instead of an identical copy."""
    from vetseg.io.image import read_image, read_label, write_image
    from vetseg.labels import HUMAN_ORGANS, TOTALSEG_V2, remap_labels, totalseg_mapping

    image, meta = read_image(SHARED / "ct.nii.gz")
    raw, _ = read_label(SHARED / "seg.nii.gz", reference=meta, reference_shape=image.shape)
    names = json.loads((SHARED / "labels.json").read_text())
    # The example's labels.json names TotalSegmentator v2 structures by id.
    mapping = totalseg_mapping(HUMAN_ORGANS)
    for key, name in names.items():
        if int(key) in TOTALSEG_V2 and TOTALSEG_V2[int(key)] != name:
            raise SystemExit(f"labels.json id {key} is {name}, not {TOTALSEG_V2[int(key)]}")
    labels = remap_labels(raw.astype(np.int64), mapping, HUMAN_ORGANS, strict=False)
    ids = []
    drawn = {}
    for k in range(copies):
        case = f"real_totalseg_{k:02d}"
        pixels = image
        if phases:
            from vetseg.data.phantoms.variety import _PHASE_WEIGHTS
            from vetseg.data.phases import phase_variant

            rng = np.random.default_rng(k)
            # Systematic sampling of the phantoms' phase weights: ten copies are 2 non-contrast,
            # 2 arterial, 5 portal venous, 1 delayed (rounding at the borders).
            share = np.cumsum(list(_PHASE_WEIGHTS.values()))
            share /= share[-1]
            phase = list(_PHASE_WEIGHTS)[int(np.searchsorted(share, (k + 0.5) / copies, "right"))]
            bolus = float(rng.uniform(0.8, 1.2))
            structures = {int(key): name for key, name in names.items()}
            pixels, gain = phase_variant(image, raw, structures, phase, rng, bolus)
            drawn[case] = {"phase": phase, "bolus": round(bolus, 3), "gain_hu": gain}
            print(case, phase, f"bolus {bolus:.2f}", flush=True)
        write_image(pixels, meta, data / "imagesTr" / f"{case}_0000.nii.gz")
        write_image(labels.astype(np.uint8), meta, data / "labelsTr" / f"{case}.nii.gz")
        ids.append(case)
    dataset = json.loads((data / "dataset.json").read_text())
    dataset["training"] += [
        {"image": f"./imagesTr/{c}_0000.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in ids
    ]
    dataset["numTraining"] = len(dataset["training"])
    dataset["description"] += (
        f" Plus {copies} copies of one REAL CT (TotalSegmentator example, Apache-2.0; labels are"
        " TotalSegmentator outputs) as cases real_totalseg_*."
        + (" Each copy is a contrast-phase variant (vetseg.data.phases)." if phases else "")
    )
    dataset["real_cases"] = ids
    if phases:
        dataset["real_phases"] = drawn
    (data / "dataset.json").write_text(json.dumps(dataset, indent=1))
    return ids


def phantom_variety(args: argparse.Namespace) -> str:
    """The phantoms' variety that ``--varied-kidneys`` / ``--varied-ribs`` choose."""
    if args.varied_stomach:
        return "wide-stomach"
    if args.varied_ribs:
        return "wide-ribs"
    return "wide-kidneys" if args.varied_kidneys else "wide"


def write_held_out(out: Path) -> Path:
    """The real DICOM series and its reference as a pairs dataset (labels on the scan's grid)."""
    from vetseg.io.image import read_image, read_label, write_image

    if (out / "labels.json").is_file():
        return out
    image, meta = read_image(SHARED / "dicom_series")
    labels, _ = read_label(
        SHARED / "seg_dicom_series.nii.gz", reference=meta, reference_shape=image.shape
    )
    out.mkdir(parents=True, exist_ok=True)
    write_image(image, meta, out / "dicom_series.nii.gz")
    write_image(labels.astype(np.uint8), meta, out / "dicom_series_seg.nii.gz")
    shutil.copy(SHARED / "labels.json", out / "labels.json")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "human_model")
    parser.add_argument("--phantoms", type=int, default=100)
    parser.add_argument("--real-copies", type=int, default=10)
    parser.add_argument("--val-phantoms", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=18)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument(
        "--tile",
        type=int,
        default=192,
        help="Tile the model runs on when it segments a scan (192: measured by"
        " benchmarks/inference_tile.py; training uses --size tiles).",
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--val-slices", type=int, default=192)
    parser.add_argument(
        "--dest", type=Path, default=ROOT / "src" / "vetseg" / "assets" / "human_model"
    )
    parser.add_argument(
        "--hu-offset",
        type=float,
        nargs=2,
        default=(0.0, 0.0),
        metavar=("GLOBAL", "ORGAN"),
        help="Shift every training case's soft tissue by up to +-GLOBAL HU and each organ by up"
        " to +-ORGAN HU more (benchmarks/hu_offset_data.py), so that organs are told apart by"
        " shape and context, not by absolute HU; 0 0 (the default, the shipped model): train on"
        " the data as drawn. 60 30 was tried: results/hu_offset_experiment.json.",
    )
    parser.add_argument(
        "--hu-shift",
        type=float,
        default=0.0,
        metavar="P",
        help="Online instead of --hu-offset's fixed copy: each training slice's soft tissue is"
        " moved with chance P by up to +-40 HU and each organ's by +-20 HU more, drawn afresh"
        " every time (train-human --hu-shift; 0, the default: off).",
    )
    parser.add_argument(
        "--real-phases",
        action="store_true",
        help="Write each real copy as a contrast-phase variant of the non-contrast real CT"
        " (vetseg.data.phases.phase_variant) instead of ten identical non-contrast copies.",
    )
    parser.add_argument(
        "--varied-kidneys",
        action="store_true",
        help="Phantoms of variety wide-kidneys: kidneys as real contrast scans show them"
        " (homogeneous nephrogram, larger renal sinus, lumpier perirenal fat, further from the"
        " midline); without it, the wide phantoms the shipped model was trained on.",
    )
    parser.add_argument(
        "--varied-ribs",
        action="store_true",
        help="Phantoms of variety wide-ribs: the wide-kidneys cases with ribs as real CT shows"
        " them (a thin cortex around marrow, thinner towards the front, costal cartilage"
        " labelled bone); implies --varied-kidneys.",
    )
    parser.add_argument(
        "--varied-stomach",
        action="store_true",
        help="Phantoms of variety wide-stomach: the wide-ribs cases with half the stomachs"
        " collapsed around food (a thick rugal wall, little gas, food as dense as soft tissue),"
        " as many real abdominal CTs show it; implies --varied-ribs.",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="Seed of the network's initialisation, sampling and augmentation (the shipped model:"
        " 0); the phantoms and the split do not change with it.",
    )
    parser.add_argument(
        "--init",
        type=Path,
        default=None,
        help="Fine-tune this human model (train-human --init: its weights, organs and input"
        " definition; a fresh Adam) instead of training from a random start; its recipe is kept"
        " as PARENT_MADE_BY.txt next to the new model's.",
    )
    parser.add_argument("--skip-train", action="store_true", help="only the held-out check")
    parser.add_argument(
        "--results",
        type=Path,
        default=ROOT / "benchmarks" / "results" / "human_model_real.json",
        help="Where the held-out real figures go (an experiment writes elsewhere).",
    )
    args = parser.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"{SHARED} is missing: this recipe trains on real CT.")
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    variety = phantom_variety(args)
    data, model = work / "data", work / "model"
    started = time.time()
    if not (data / "dataset.json").is_file():
        run(
            [
                *VETSEG,
                "phantoms",
                str(data),
                "--species",
                "human",
                "--variety",
                variety,
                "--cases",
                str(args.phantoms),
                "--seed",
                "100",
                "--workers",
                "2",
            ]
        )
        write_real_cases(data, args.real_copies, args.real_phases)
    dataset = json.loads((data / "dataset.json").read_text())
    real = list(dataset["real_cases"])
    phantoms = sorted(
        e["image"].split("/")[-1][: -len("_0000.nii.gz")] for e in dataset["training"]
    )
    phantoms = [p for p in phantoms if p not in real]
    splits_file = model / "train" / "splits.json"
    if not splits_file.is_file():
        rng = np.random.default_rng(0)
        val = sorted(rng.choice(phantoms, args.val_phantoms, replace=False).tolist())
        train = sorted(set(phantoms) - set(val)) + real
        splits_file.parent.mkdir(parents=True, exist_ok=True)
        splits_file.write_text(json.dumps({"train": train, "val": val, "test": []}, indent=1))
    train_data = data
    if any(args.hu_offset):
        from hu_offset_data import write_hu_offset_dataset

        train_data = work / "data_hu"
        if not (train_data / "dataset.json").is_file():
            val = set(json.loads(splits_file.read_text())["val"])
            shutil.rmtree(train_data, ignore_errors=True)
            write_hu_offset_dataset(data, train_data, val, *args.hu_offset, seed=0)
    if not args.skip_train:
        from vetseg.labels import HUMAN_ORGANS

        run(
            [
                *VETSEG,
                "train-human",
                str(train_data),
                "--out",
                str(model),
                "--spacing",
                "1.5",
                "--size",
                str(args.size),
                "--tile",
                str(args.tile),
                "--epochs",
                str(args.epochs),
                "--steps-per-epoch",
                str(args.steps),
                "--batch-size",
                str(args.batch_size),
                "--lr",
                str(args.lr),
                "--extend",
                "0",
                "--seed",
                str(args.seed),
                "--organs",
                ",".join(HUMAN_ORGANS),
                "--resume",
                "--val-slices",
                str(args.val_slices),
                *(["--init", str(args.init)] if args.init else []),
                *(["--hu-shift", str(args.hu_shift)] if args.hu_shift else []),
            ],
            log=work / "train.log",
        )
        train_seconds = time.time() - started
        ship(model, args.dest, work, train_seconds, args)
    held_out = write_held_out(work / "held_out_dicom_series")
    result_file = args.results
    run([*VETSEG, "evaluate", str(args.dest), str(held_out), "--json", str(work / "held_out.json")])
    result = json.loads((work / "held_out.json").read_text())
    result["command"] = "python benchmarks/make_human_model.py " + " ".join(sys.argv[1:])
    result["note"] = (
        "Held-out REAL CT (TotalSegmentator example DICOM series, 20 slices, another patient than"
        " the real training scan); reference labels are TotalSegmentator outputs."
    )
    result["unlabelled_real"] = unlabelled_volumes(args.dest, work)
    result_file.write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
    print(json.dumps(result.get("per_organ"), indent=1))


def unlabelled_volumes(model: Path, work: Path) -> dict:
    """Organ volumes on the unlabelled real series of another patient (HCC-TACE-Seg HCC_009:
    expected a liver of about 1.5-2.5 l and an enlarged spleen), with previews."""
    out = {}
    root = SHARED.parent / "hcc_tace_009"
    for series in ("contrast_3phase", "precontrast"):
        if not (root / series).is_dir():
            continue
        prefix = work / f"hcc_{series}"
        files = ["--out", f"{prefix}.nii.gz", "--report", str(prefix), "--preview", f"{prefix}.png"]
        run([*VETSEG, "segment", str(model), str(root / series), *files])
        report = json.loads(Path(f"{prefix}.json").read_text())
        rows = report["organs"] if isinstance(report, dict) and "organs" in report else report
        out[series] = {r["organ"]: r.get("volume_ml") for r in rows}
    return out


def _shown(path: Path) -> Path:
    """``path`` relative to the project when it lies inside it (for model cards)."""
    path = path.resolve()
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def _hu_shift_note(augment: dict) -> str:
    """The model card's sentence on the soft-tissue HU shift, from the settings the model
    recorded (empty when it trained without one)."""
    if not augment.get("hu_shift"):
        return ""
    return (
        f" Each training slice's soft tissue moved with chance {augment['hu_shift']:g} by up to"
        f" +-{augment['hu_shift_case']:g} HU and +-{augment['hu_shift_organ']:g} HU more per"
        " organ, drawn afresh per sample (train-human --hu-shift)."
    )


def ship(model: Path, dest: Path, work: Path, seconds: float, args: argparse.Namespace) -> None:
    """Save the selected epoch in half precision with its log and recipe."""
    from vetseg.models.files import load_model, save_model

    net, info = load_model(model)
    metrics = (model / "train" / "metrics.jsonl").read_text().splitlines()
    epoch_s = [json.loads(line)["seconds"] for line in metrics if line.strip()]
    parent_recipe = None
    if args.init is not None and (args.init / "MADE_BY.txt").is_file():
        # Read before dest may replace it; the parent's own parents' recipes follow its own.
        parent_recipe = (args.init / "MADE_BY.txt").read_text()
        if (args.init / "PARENT_MADE_BY.txt").is_file():
            parent_recipe += (
                "\n--- the recipe of its parent, as that folder kept it ---\n\n"
                + (args.init / "PARENT_MADE_BY.txt").read_text()
            )
    if dest.exists():
        shutil.rmtree(dest)
    save_model(net, dest, info, half=True)
    shutil.copy(model / "train" / "metrics.jsonl", dest / "metrics.jsonl")
    (dest / "MADE_BY.txt").write_text(
        "The human model that ships with vetseg (fp16 safetensors + model.json).\n\n"
        f"Made by: python benchmarks/make_human_model.py {' '.join(sys.argv[1:])}\n"
        f"Data: {args.phantoms} wide-variety SYNTHETIC human phantoms (vetseg phantoms --variety"
        f" {phantom_variety(args)} --seed 100) plus one REAL CT"
        " (TotalSegmentator example, 3 mm, labels from"
        f" TotalSegmentator) written {args.real_copies} times; validation on"
        f" {args.val_phantoms} phantoms. Training cases' soft tissue shifted by up to"
        f" +-{args.hu_offset[0]:g} HU per case and +-{args.hu_offset[1]:g} HU per organ"
        " (benchmarks/hu_offset_data.py; 0 0: none)."
        + _hu_shift_note(info.training.get("config", {}).get("augment", {}))
        + (
            " Real copies as contrast-phase variants (vetseg.data.phases)."
            if args.real_phases
            else ""
        )
        + "\n"
        f"Scale: {info.preprocess.spacing} mm pixels, trained on {info.preprocess.size} px"
        f" tiles, run on {info.preprocess.tile_size} px tiles;"
        f" intensity statistics {info.preprocess.intensity}.\n"
        + (
            f"Started from: the human model {info.parent} ({args.init}), fine-tuned; its own"
            " recipe: PARENT_MADE_BY.txt.\n"
            if args.init is not None
            else ""
        )
        + f"Training: {args.epochs} epochs x {args.steps} steps of {args.batch_size} tiles, Adam"
        f" lr {args.lr}, on 2 CPU cores; the epochs took {sum(epoch_s) / 60:.0f} min in all"
        f" (each {min(epoch_s):.0f}-{max(epoch_s):.0f} s: the machine was shared with other"
        f" jobs; at the fastest epoch's pace {len(epoch_s) * min(epoch_s) / 60:.0f} min);"
        f" this invocation's wall time {seconds / 60:.0f} min.\n"
        f"Selected epoch {info.metrics.get('best_epoch')}, validation mean Dice"
        f" {info.metrics.get('val_mean_dice')} (phantoms).\n"
        f"Held-out real figures: {_shown(args.results)}.\n"
    )
    if parent_recipe is not None:
        (dest / "PARENT_MADE_BY.txt").write_text(parent_recipe)
    print("shipped", dest)


if __name__ == "__main__":
    main()
