"""``vetseg demo``: the whole method on built-in synthetic phantoms, sized for a 2-core CPU.

phantoms -> human model -> rabbit transfer with a few labelled rabbits -> evaluation on held-out
rabbits, next to the zero-shot human model (organs mapped) and the same animal architecture
trained from scratch on the same rabbits with the same budget. Everything runs on synthetic
phantoms: the figures show that the pipeline works, not how it does on real animals.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from vetseg.config import PreprocessConfig, StageConfig
from vetseg.errors import InputError
from vetseg.fileutil import atomic_write_json, atomic_write_text
from vetseg.labels import CORE_ORGANS, HUMAN_TO_ANIMAL
from vetseg.species import linear_scale


@dataclass(frozen=True)
class DemoConfig:
    """Sizes of the demo; the defaults finish in well under 10 minutes on 2 CPU cores.

    Attributes:
        labelled: labelled rabbits for transfer and scratch (k).
        held_out: held-out rabbits for the final evaluation.
        human_cases: human phantoms, used only when the human model is trained here.
        size: model input size.
        human: settings of the human model, when trained here.
        animal: settings of transfer and scratch training (same budget for both).
        seed: seed of phantoms and training.
        train_human: train the human model here instead of using the shipped one.
        human_model: start from this human model folder instead of the shipped one.
        rounds: correction rounds after the evaluation (pre-label, correct, refine; see
            :mod:`vetseg.workflow.demo_rounds`); 0 for none.
    """

    labelled: int = 5
    held_out: int = 5
    human_cases: int = 24
    size: int = 96
    human: StageConfig = dataclasses.field(
        default_factory=lambda: StageConfig.human(
            epochs=10,
            lr=1e-3,
            batch_size=16,
            steps_per_epoch=60,
            extend=0,
            # 4 mm pixels: a 384 mm human phantom is one 96 px tile (a quick human model).
            preprocess=PreprocessConfig(size=96, spacing=4.0),
        )
    )
    animal: StageConfig = dataclasses.field(
        default_factory=lambda: StageConfig.transfer(
            epochs=8,
            freeze_epochs=3,
            lr=1e-3,
            batch_size=8,
            steps_per_epoch=40,
            organ_balance=1.0,
            extend=0,
            preprocess=PreprocessConfig(size=96),
        )
    )
    seed: int = 0
    train_human: bool = False
    human_model: str | None = None
    rounds: int = 0

    @classmethod
    def full(cls) -> DemoConfig:
        """A longer run: more phantoms, more epochs, the human model trained here (~1 h on CPU)."""
        return cls(
            labelled=5,
            held_out=10,
            human_cases=60,
            size=128,
            human=StageConfig.human(
                epochs=20,
                lr=1e-3,
                batch_size=16,
                steps_per_epoch=150,
                extend=2,
                preprocess=PreprocessConfig(size=128, spacing=1.5),
            ),
            animal=StageConfig.transfer(
                epochs=30,
                freeze_epochs=10,
                lr=1e-3,
                batch_size=16,
                steps_per_epoch=40,
                extend=5,
                preprocess=PreprocessConfig(size=128),
            ),
            train_human=True,
        )


def shipped_human_model() -> Path | None:
    """The human model that ships with vetseg (its MADE_BY.txt says how it was made)."""
    folder = resources.files("vetseg") / "assets" / "human_model"
    path = Path(str(folder))
    return path if (path / "model.json").is_file() else None


def run_demo(out: Path, config: DemoConfig, progress: bool = True) -> dict[str, Any]:
    """Run the demo into ``out`` and return the Dice results of the three models."""
    from vetseg.data.phantoms import write_phantom_dataset
    from vetseg.reporting import markdown_dice_table, print_dice_table
    from vetseg.training.stages import evaluate, train_human, transfer

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / "demo.json").is_file():
        raise InputError(
            f"{out}: folder exists and is not an earlier demo's; choose another --out."
        )
    started = time.perf_counter()
    timings: dict[str, float] = {}
    data = out / "data"
    rabbit_train = data / "rabbit_labelled"
    rabbit_test = data / "rabbit_heldout"
    if not (rabbit_train / "dataset.json").is_file():
        write_phantom_dataset(rabbit_train, "rabbit", config.labelled, seed=config.seed + 1)
    if not (rabbit_test / "dataset.json").is_file():
        write_phantom_dataset(rabbit_test, "rabbit", config.held_out, seed=config.seed + 1000)

    human_model = Path(config.human_model) if config.human_model else None
    if human_model is None and not config.train_human:
        human_model = shipped_human_model()
    if human_model is None:
        human_data = data / "human"
        if not (human_data / "dataset.json").is_file():
            write_phantom_dataset(human_data, "human", config.human_cases, seed=config.seed)
        human_model = out / "models" / "human"
        if not (human_model / "model.json").is_file():
            t0 = time.perf_counter()
            train_human(human_data, human_model, config.human, progress=progress)
            timings["human_training_s"] = round(time.perf_counter() - t0, 1)
    human_pre = json.loads((human_model / "model.json").read_text())["preprocess"]
    # Tiles of the demo's size (the body is fully convolutional); pixels at the rabbit's
    # species spacing when the human model has a spacing, else the legacy squashed slices.
    animal_size = config.size if human_pre.get("spacing") else human_pre["size"]
    animal_cfg = dataclasses.replace(
        config.animal, preprocess=dataclasses.replace(config.animal.preprocess, size=animal_size)
    )
    # Zero-shot, the human model sees a rabbit at human scale (organs as many pixels as a
    # human's): the species' body scale, as transfer's spacing rule.
    body_scale = 1.0 / linear_scale("rabbit") if human_pre.get("spacing") else 1.0
    # Of the k labelled rabbits, one validates (selection); the held-out rabbits test.
    ratios = (config.labelled - 1, 1, 0)
    models = {
        "transfer": out / "models" / "rabbit_transfer",
        "scratch": out / "models" / "rabbit_scratch",
    }
    for name, folder in models.items():
        if (folder / "model.json").is_file():
            continue
        t0 = time.perf_counter()
        transfer(
            human_model,
            rabbit_train,
            folder,
            animal_cfg,
            size=animal_size,
            from_scratch=name == "scratch",
            progress=progress,
            ratios=ratios,
        )
        timings[f"{name}_training_s"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    results = {
        "zero-shot human": evaluate(
            human_model, rabbit_test, organ_map=HUMAN_TO_ANIMAL, body_scale=body_scale
        ),
        "scratch": evaluate(models["scratch"], rabbit_test),
        "vetseg transfer": evaluate(models["transfer"], rabbit_test),
    }
    timings["evaluation_s"] = round(time.perf_counter() - t0, 1)
    timings["total_s"] = round(time.perf_counter() - started, 1)
    organs = list(CORE_ORGANS)
    print_dice_table(results, organs, synthetic=True)
    from vetseg.models.files import relative_path

    # Paths relative to the demo's folder: no machine's absolute path in the result file.
    settings = dataclasses.asdict(config)
    if settings.get("human_model"):
        settings["human_model"] = relative_path(settings["human_model"], out)
    for result in results.values():
        for key in ("model", "data"):
            if isinstance(result.get(key), str):
                result[key] = relative_path(result[key], out)
    report = {
        "what": "vetseg demo on synthetic phantoms (not real animals)",
        "config": settings,
        "human_model": relative_path(human_model, out),
        "results": results,
        "timings": timings,
    }
    atomic_write_json(out / "demo.json", report)
    atomic_write_text(out / "demo.md", markdown_dice_table(results, organs) + "\n")
    # evaluate() gives None where no organ could be scored; that compares as nothing found.
    mean = {
        name: r["mean_dice"] if r["mean_dice"] is not None else 0.0 for name, r in results.items()
    }
    gain = mean["vetseg transfer"] - max(mean["scratch"], mean["zero-shot human"])
    print(
        f"held-out rabbits: {config.held_out}; labelled rabbits: {config.labelled}; "
        f"transfer beats the better baseline by {gain:+.3f} mean Dice; "
        f"total {timings['total_s']:.0f} s. Results in {out / 'demo.json'}"
    )
    if config.rounds:
        from vetseg.workflow.demo_rounds import run_demo_rounds

        report["rounds"] = run_demo_rounds(
            out, config.rounds, models["transfer"], rabbit_train, rabbit_test,
            seed=config.seed, progress=progress,
        )  # fmt: skip
    return report


__all__ = ["DemoConfig", "run_demo", "shipped_human_model"]
