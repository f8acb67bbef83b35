"""Where could human pre-training mislead an animal model? Organ intensities side by side.

Issue 12 part 3 asks for the cause of negative transfer per organ. A transferred stem and body
have learned what each organ looks like in HUMAN training data (the shipped human model: wide
human phantoms + the real example CT); an animal organ whose CT values lie elsewhere looks to
them like another tissue. This script measures, per organ, the median and the 10th-90th
percentile of HU inside the organ's labels in each dataset, and the shift of the animal median
from the human one in units of the human model's intensity scale (``preprocess.intensity``,
the standard deviation it divides by), so organs can be ranked by how far they move.

Datasets: human = wide human phantoms (``vetseg phantoms --variety wide``, as the shipped model
was trained on) and, where ../shared/data is present, the real example CT in the
TotalSegmentator layout; animal = rabbit phantoms and CT-like mice synthesised from the
Digimouse atlas (as ``benchmarks/label_efficiency.py`` makes them). All but the real CT are
SYNTHETIC: the gaps are those of vetseg's generators, which are meant to follow published
tissue values (a mouse lung in micro-CT is denser than a human one: smaller alveoli and the
partial volume of vessels and walls at 0.1-0.3 mm).

    python benchmarks/intensity_gap.py [--cases 3] [--out benchmarks/results/intensity_gap.json]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
SHARED = ROOT.parent / "shared" / "data"
DIGIMOUSE = SHARED / "mouse" / "digimouse" / "labels.nii.gz"
TOTALSEG = SHARED / "human" / "totalseg_layout"
HUMAN_MODEL = ROOT / "src" / "vetseg" / "assets" / "human_model"


def organ_statistics(folder: Path, organs: tuple[str, ...]) -> dict[str, Any]:
    """Per organ: voxels, median HU and its 10th, 25th, 75th, 90th percentiles, all cases."""
    from vetseg.data.datasets import load_case, open_dataset

    dataset = open_dataset(folder, organs=organs)
    values: dict[str, list[np.ndarray]] = {name: [] for name in organs}
    for case in dataset.cases:
        loaded = load_case(dataset, case)
        if loaded.labels is None:
            continue
        for index, name in enumerate(organs, start=1):
            inside = loaded.image[loaded.labels == index]
            if inside.size:
                values[name].append(inside.astype(np.float32))
    out: dict[str, Any] = {}
    for name, parts in values.items():
        if not parts:
            continue
        hu = np.concatenate(parts)
        p10, p25, p50, p75, p90 = np.percentile(hu, [10, 25, 50, 75, 90])
        out[name] = {
            "voxels": int(hu.size),
            "median_hu": round(float(p50), 1),
            "p10_hu": round(float(p10), 1),
            "p25_hu": round(float(p25), 1),
            "p75_hu": round(float(p75), 1),
            "p90_hu": round(float(p90), 1),
        }
    return out


def make_datasets(work: Path, cases: int) -> dict[str, Path]:
    from vetseg.data.phantoms import write_phantom_dataset
    from vetseg.data.synth import synthesize_dataset
    from vetseg.labels import HUMAN_ORGANS

    folders = {}
    folders["human phantoms (wide)"] = work / "human_wide"
    write_phantom_dataset(folders["human phantoms (wide)"], "human", cases, seed=7, variety="wide")
    folders["rabbit phantoms"] = work / "rabbit"
    write_phantom_dataset(folders["rabbit phantoms"], "rabbit", cases, seed=7)
    if DIGIMOUSE.is_file():
        folders["Digimouse mice (synthesised)"] = work / "mouse"
        synthesize_dataset(DIGIMOUSE, folders["Digimouse mice (synthesised)"], cases, seed=7,
                           organs=HUMAN_ORGANS)  # fmt: skip
    if TOTALSEG.is_dir():
        folders["real human CT (example, 30 slices)"] = TOTALSEG
    return folders


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from vetseg.labels import HUMAN_ORGANS
    from vetseg.models.files import read_model_info

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=3, help="synthetic cases per dataset")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/intensity_gap.json")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="vetseg-gap-"))
    info = read_model_info(HUMAN_MODEL)
    _, scale = info.preprocess.intensity
    organs = tuple(HUMAN_ORGANS)
    stats = {name: organ_statistics(folder, organs)
             for name, folder in make_datasets(work, args.cases).items()}  # fmt: skip
    human = stats["human phantoms (wide)"]
    real = stats.get("real human CT (example, 30 slices)", {})
    shifts: dict[str, dict[str, Any]] = {}
    for animal in ("rabbit phantoms", "Digimouse mice (synthesised)"):
        for organ, s in stats.get(animal, {}).items():
            if organ not in human:
                continue
            shift = s["median_hu"] - human[organ]["median_hu"]
            shifts.setdefault(animal, {})[organ] = {
                "shift_hu": round(shift, 1),
                "shift_in_model_units": round(shift / scale, 3),
                # The animal organ's typical voxel is not a typical voxel of the human organ.
                "outside_human_iqr": not (
                    human[organ]["p25_hu"] <= s["median_hu"] <= human[organ]["p75_hu"]
                ),
            }
    report = {
        "what": "organ HU (median, p10, p90) per dataset and the animal-minus-human shift; "
        "SYNTHETIC data except the real example CT",
        "command": shlex.join(["python", "benchmarks/intensity_gap.py", *(argv or sys.argv[1:])]),
        "human_model_intensity_scale_hu": scale,
        "statistics": stats,
        "shift_from_human_phantoms": shifts,
        "real_ct_vs_human_phantoms_hu": {
            organ: round(s["median_hu"] - human[organ]["median_hu"], 1)
            for organ, s in real.items()
            if organ in human
        },  # fmt: skip
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for animal, organs_shift in shifts.items():
        print(animal)
        for organ, s in sorted(organs_shift.items(), key=lambda kv: -abs(kv[1]["shift_hu"])):
            flag = "  outside the human organ's p25-p75" if s["outside_human_iqr"] else ""
            print(
                f"  {organ:<16} {s['shift_hu']:+8.1f} HU ({s['shift_in_model_units']:+.2f}){flag}"
            )
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
