"""Species-scaled pixel spacing against the scans' native spacing, for transfer (issue 10.1).

For the rabbit phantoms and mice synthesised from the real Digimouse atlas, the animal model is
transferred from the shipped human model twice with the same budget and tiles: once at the
species spacing (human spacing x the species' body scale, ``vetseg.species``) and once at the
training scans' native spacing. The default is chosen on VALIDATION Dice (one labelled case of
the k = 5 held back for epoch selection); the held-out Dice is reported beside it, not used.

Usage: python benchmarks/spacing_choice.py [--human-model DIR] [--out runs/spacing_choice]
Writes benchmarks/results/spacing_choice.json. Synthetic data (phantoms, atlas synthesis).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIGIMOUSE = ROOT.parent / "shared" / "data" / "mouse" / "digimouse" / "labels.nii.gz"


def datasets(out: Path) -> dict[str, tuple[Path, Path]]:
    """(labelled, held-out) dataset folders per setting, written once."""
    from vetseg.data.phantoms import write_phantom_dataset
    from vetseg.data.synth import synthesize_dataset
    from vetseg.labels import HUMAN_ORGANS

    found = {}
    rabbit = (out / "rabbit_labelled", out / "rabbit_heldout")
    if not (rabbit[0] / "dataset.json").is_file():
        write_phantom_dataset(rabbit[0], "rabbit", 5, seed=1)
    if not (rabbit[1] / "dataset.json").is_file():
        write_phantom_dataset(rabbit[1], "rabbit", 5, seed=1000)
    found["rabbit phantoms"] = rabbit
    if DIGIMOUSE.is_file():
        mouse = (out / "mouse_labelled", out / "mouse_heldout")
        if not (mouse[0] / "dataset.json").is_file():
            synthesize_dataset(DIGIMOUSE, mouse[0], 5, seed=1, organs=HUMAN_ORGANS)
        if not (mouse[1] / "dataset.json").is_file():
            synthesize_dataset(DIGIMOUSE, mouse[1], 5, seed=1000, organs=HUMAN_ORGANS)
        found["Digimouse atlas mice"] = mouse
    return found


def main() -> None:
    from vetseg.config import StageConfig
    from vetseg.demo import shipped_human_model
    from vetseg.training.stages import evaluate, transfer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--human-model", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "spacing_choice")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    human = args.human_model or shipped_human_model()
    config = StageConfig.transfer(
        epochs=args.epochs, freeze_epochs=3, lr=1e-3, batch_size=8, steps_per_epoch=args.steps,
        organ_balance=1.0, extend=0, val_slices=128,
    )  # fmt: skip
    report: dict = {
        "what": "species spacing vs native spacing for transfer (synthetic data)",
        "command": "python benchmarks/spacing_choice.py " + " ".join(sys.argv[1:]),
        "human_model": str(human),
        "budget": {"epochs": args.epochs, "steps": args.steps, "batch": 8, "tile": args.size},
        "settings": {},
    }
    for setting, (labelled, heldout) in datasets(args.out).items():
        rows = {}
        for spacing in ("species", "native"):
            folder = args.out / "models" / f"{setting.split()[0]}_{spacing}"
            t0 = time.perf_counter()
            if not (folder / "model.json").is_file():
                transfer(human, labelled, folder, config, spacing=spacing, size=args.size,
                         progress=False, ratios=(4, 1, 0))  # fmt: skip
            info = json.loads((folder / "model.json").read_text())
            held = evaluate(folder, heldout)
            rows[spacing] = {
                "spacing_mm": info["preprocess"]["spacing"],
                "rule": info["training"]["spacing_rule"],
                "val_mean_dice": info["metrics"]["val_mean_dice"],
                "heldout_mean_dice": held["mean_dice"],
                "heldout_per_organ": held["per_organ"],
                "seconds": round(time.perf_counter() - t0, 1),
            }
            print(
                setting,
                spacing,
                {k: rows[spacing][k] for k in ("spacing_mm", "val_mean_dice", "heldout_mean_dice")},
            )
        better = max(rows, key=lambda k: rows[k]["val_mean_dice"])
        report["settings"][setting] = {"runs": rows, "chosen_on_validation": better}
    out = ROOT / "benchmarks" / "results" / "spacing_choice.json"
    out.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
