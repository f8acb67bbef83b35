"""``vetseg demo --rounds N``: the pre-label / correct / retrain loop on phantoms, after the demo.

The demo's transfer model becomes the current model of a workspace (``OUT/workspace``) holding
the k labelled rabbits and a pool of unlabelled ones. Each round then runs the real commands:

1. ``prelabel`` the ``per_round`` most uncertain pool rabbits;
2. play the vet: ``correct`` each draft with the phantom's true label (a real vet's corrections
   are not perfect; these are), which measures the correction effort;
3. ``refine`` from the current model on labelled + corrected rabbits, promotion rule included;
4. evaluate the current model on the demo's held-out rabbits.

Printed per round: held-out Dice of the current model, pre-label Dice (draft against truth) and
correction effort against drawing from nothing. Everything is a workspace command, so a killed
demo re-run continues where it stopped. Synthetic phantoms: the figures show the loop works,
not how it does on real animals.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vetseg.config import StageConfig
from vetseg.fileutil import atomic_write_json
from vetseg.labels import CORE_ORGANS
from vetseg.models.files import relative_path


@dataclass(frozen=True)
class RoundsConfig:
    """Sizes of the demo's correction rounds (defaults: a few minutes per round on 2 CPU cores).

    Attributes:
        per_round: rabbits pre-labelled and corrected per round.
        spare: pool rabbits beyond ``rounds * per_round`` (so the last round still chooses).
        strategy: ``"uncertainty"`` or ``"random"``.
        refine: the refine rounds' training settings, shrunk from DESIGN's 30 epochs for a CPU
            demo (a similar frozen share, no extension epochs); the input size and window are
            always the parent model's.
    """

    per_round: int = 3
    spare: int = 2
    strategy: str = "uncertainty"
    refine: StageConfig = field(
        default_factory=lambda: StageConfig.refine(
            epochs=4,
            freeze_epochs=3,
            lr=5e-4,
            batch_size=8,
            steps_per_epoch=15,
            extend=0,
        )
    )


def label_dice(prediction: np.ndarray, truth: np.ndarray, n_organs: int) -> float:
    """Mean Dice over the organs present in either map (NaN when there is none)."""
    scores = []
    for organ in range(1, n_organs + 1):
        p, t = prediction == organ, truth == organ
        total = int(p.sum()) + int(t.sum())
        if total:
            scores.append(2.0 * int((p & t).sum()) / total)
    return float(np.mean(scores)) if scores else float("nan")


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _dataset_cases(folder: Path) -> list[Any]:
    from vetseg.data.datasets import open_dataset

    dataset = open_dataset(folder, organs=CORE_ORGANS)
    identity = {i + 1: organ for i, organ in enumerate(CORE_ORGANS)}
    if {k: v for k, v in dataset.mapping.items() if v} != identity:
        raise ValueError(f"{folder}: phantom label ids are not vetseg's CORE_ORGANS ids")
    return list(dataset.cases)


def _setup_workspace(
    root: Path, transfer_model: Path, labelled: Path, pool: Path, seed: int
) -> dict[str, Path]:
    """Create (or reopen) the demo workspace; return pool case id -> true label file."""
    from vetseg.workflow.register import add_scans, use_model
    from vetseg.workflow.workspace import Workspace, WorkspaceSettings

    settings = WorkspaceSettings(
        species="rabbit", organs=CORE_ORGANS, synthetic=True, seed=seed, refine={}
    )
    lab_cases = _dataset_cases(labelled)
    pool_cases = _dataset_cases(pool)
    with Workspace.create(root, settings) as ws, ws.changing():
        add_scans(
            ws,
            [c.image for c in lab_cases],
            [c.label for c in lab_cases],
            case_ids=[f"lab_{c.case_id}" for c in lab_cases],
        )
        add_scans(
            ws, [c.image for c in pool_cases], case_ids=[f"pool_{c.case_id}" for c in pool_cases]
        )
        if ws.current_model() is None:
            use_model(ws, transfer_model, note="the demo's transfer model")
    return {f"pool_{c.case_id}": c.label for c in pool_cases}


def _round_record(
    ws: Any, number: int, truth: dict[str, Path], held_out_dice: float
) -> dict[str, Any]:
    """What one round did, read back from the workspace."""
    from vetseg.io.image import read_label
    from vetseg.workflow.rounds import rounds

    n_organs = len(ws.settings.organs)
    row = next(r for r in rounds(ws) if r["round"] == number)
    drafts = [p for p in ws.prelabels() if p.run == number]
    dice, effort, changed, drawn = [], [], 0, 0
    for draft in drafts:
        predicted, _ = read_label(ws.path(draft.path))
        true, _ = read_label(truth[draft.case_id])
        dice.append(label_dice(predicted, true, n_organs))
        fix = next(c for c in ws.corrections(draft.case_id) if c.prelabel_id == draft.id)
        effort.append(fix.effort)
        changed += fix.changed_voxels
        drawn += fix.drawn_voxels
    logged = [
        a["details"]
        for a in ws.audit_log()
        if a["action"] == "refine" and a["details"].get("round") == number
    ]
    return {
        "round": number,
        "corrected": [d.case_id for d in drafts],
        "uncertainty": [d.uncertainty for d in drafts],
        "prelabel_dice": _nanmean(dice),
        "prelabel_dice_per_case": dice,
        "correction_effort": _nanmean(effort),
        "correction_effort_pooled": changed / drawn if drawn else float("nan"),
        "parent": row["parent"],
        "model": row["model_id"],
        "promoted": row["status"] == "promoted",
        "parent_val_dice": row["parent_val_dice"],
        "new_val_dice": row["new_val_dice"],
        "val_cases": row["val_cases"],
        # Validation cases the parent trained or selected on (matched by content; None for a
        # round recorded before this was logged): the comparison favours the parent on them.
        "val_seen_by_parent": logged[-1].get("val_seen_by_parent") if logged else None,
        "heldout_dice": held_out_dice,
    }


def run_demo_rounds(
    out: Path,
    rounds: int,
    transfer_model: Path,
    labelled: Path,
    held_out: Path,
    *,
    seed: int = 0,
    config: RoundsConfig | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run ``rounds`` correction rounds after the demo (see the module notes).

    Args:
        out: the demo's output folder (the workspace goes to ``out/workspace``).
        rounds: number of rounds.
        transfer_model: the demo's transfer model (round 0).
        labelled: the demo's labelled rabbits (MSD layout).
        held_out: the demo's held-out rabbits (MSD layout), never trained on.
        seed: seed of the pool phantoms and of the workspace.
        config: round sizes; default :class:`RoundsConfig` at the transfer model's input size.
        progress: show training progress.

    Returns:
        ``{"rounds": [...], "heldout_dice_round0": float, ...}``, also written to
        ``out/demo_rounds.json``.
    """
    from vetseg.data.phantoms import write_phantom_dataset
    from vetseg.models.files import read_model_info
    from vetseg.training.stages import evaluate
    from vetseg.workflow.correct import correct
    from vetseg.workflow.prelabel import prelabel
    from vetseg.workflow.rounds import refine_round
    from vetseg.workflow.workspace import Workspace

    out = Path(out)
    config = config or RoundsConfig()
    pool = out / "data" / "rabbit_pool"
    if not (pool / "dataset.json").is_file():
        cases = rounds * config.per_round + config.spare
        write_phantom_dataset(pool, "rabbit", cases, seed=seed + 2000)
    root = out / "workspace"
    truth = _setup_workspace(root, transfer_model, labelled, pool, seed)

    cache_file = out / "demo_rounds_eval.json"
    cache: dict[str, float] = json.loads(cache_file.read_text()) if cache_file.is_file() else {}

    def held_out_dice(model_dir: Path, model_id: str) -> float:
        if model_id not in cache:
            # What vetseg segment writes (post-processed), as the demo's own table scores.
            mean = evaluate(model_dir, held_out)["mean_dice"]
            cache[model_id] = float("nan") if mean is None else float(mean)
            atomic_write_json(cache_file, cache)
        return cache[model_id]

    records: list[dict[str, Any]] = []
    with Workspace.open(root) as ws:
        start = ws.require_current_model()
        used_preprocess = dataclasses.asdict(read_model_info(ws.path(start.path)).preprocess)
        baseline = held_out_dice(ws.path(start.path), start.model_id)
        print(f"round 0: starting model {start.model_id}, held-out Dice {baseline:.3f}")
        # The round trains at its parent's input size and window (refine_round sees to it).
        refine_config = dataclasses.replace(config.refine, seed=seed)
        for number in range(1, rounds + 1):
            finished = ws.db.execute(
                "SELECT 1 FROM rounds WHERE round = ? AND status != 'running'", (number,)
            ).fetchone()
            if finished is None:
                has_run = ws.db.execute(
                    "SELECT 1 FROM prelabel_runs WHERE run = ? AND status = 'done'", (number,)
                ).fetchone()
                if has_run is None:
                    result = prelabel(ws, cases=config.per_round, strategy=config.strategy)
                    if result.run is None:
                        print("the pool is used up: no unlabelled rabbit left")
                        break
                for case in ws.cases("prelabelled"):  # the vet corrects the whole queue
                    correct(ws, case.case_id, truth[case.case_id])
                outcome = refine_round(ws, refine_config, progress=progress)
                print(outcome.message)
            current = ws.require_current_model()
            record = _round_record(
                ws, number, truth, held_out_dice(ws.path(current.path), current.model_id)
            )
            records.append(record)
            print(
                f"round {number}: corrected {len(record['corrected'])} rabbits; pre-label Dice "
                f"{record['prelabel_dice']:.3f}; correction effort "
                f"{record['correction_effort']:.3f} of drawing from nothing; held-out Dice "
                f"{record['heldout_dice']:.3f} ("
                + ("new model promoted" if record["promoted"] else "model kept, not promoted")
                + ")"
            )
    report = {
        "what": "vetseg demo correction rounds on synthetic phantoms (not real animals); the "
        "vet is played by the phantoms' true labels",
        "workspace": relative_path(root, out),
        "strategy": config.strategy,
        "per_round": config.per_round,
        # Every round trains at its parent's preprocessing (spacing, tile, window, intensity),
        # not at the StageConfig default this config carries: record what the models used.
        "refine": {**dataclasses.asdict(refine_config), "preprocess": used_preprocess},
        "heldout_dice_round0": baseline,
        "rounds": records,
    }
    atomic_write_json(out / "demo_rounds.json", report)
    _print_table(baseline, records)
    return report


def _print_table(baseline: float, records: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="correction rounds (synthetic phantoms; the vet = true labels)")
    for column in (
        "round",
        "corrected",
        "pre-label Dice",
        "effort vs drawing",
        "val Dice new / parent",
        "model",
        "held-out Dice",
    ):
        table.add_column(column, justify="right")
    table.add_row("0", "-", "-", "-", "-", "start", f"{baseline:.3f}")
    for r in records:
        table.add_row(
            str(r["round"]),
            str(len(r["corrected"])),
            f"{r['prelabel_dice']:.3f}",
            f"{r['correction_effort']:.3f}",
            f"{r['new_val_dice']:.3f} / {r['parent_val_dice']:.3f}",
            "promoted" if r["promoted"] else "kept parent",
            f"{r['heldout_dice']:.3f}",
        )
    Console().print(table)
    for r in records:
        if r.get("val_seen_by_parent"):
            print(
                f"round {r['round']}: the parent had seen validation case(s) "
                f"{', '.join(r['val_seen_by_parent'])} (too few new cases); its Dice is favoured."
            )


__all__ = ["RoundsConfig", "label_dice", "run_demo_rounds"]
