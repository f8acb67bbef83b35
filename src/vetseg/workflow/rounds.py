"""S103: a refine round (``vetseg refine``): retrain from the current model, promote only if better.

A round trains the current model (the parent) on every labelled and corrected case with the
refine-round defaults of DESIGN section 4 (30 epochs, the first 20 with the body frozen, 5 more
when the best validation Dice stays under 0.95) and a new 8:1:1 split of those cases by case.
The new model is written to ``models/round-<NNN>/`` and registered with its parent, metrics,
data and split.

Promotion rule
    The parent and the new model are scored with the same function (mean Dice over organs and
    cases, at model resolution) on the same cases: the new split's validation cases. The new
    model becomes current only if its Dice is at least the parent's; otherwise it is kept and
    registered, not promoted, and the command says so. The split keeps every case the parent
    or its ancestors trained on or selected their epoch with in train (:func:`seen_cases`), so
    the validation and test cases are new to the parent and the comparison is fair. Cases are
    matched by content (the digest each split records, :mod:`vetseg.data.identity`), not by
    name: a transfer model's ``rabbit_001`` is the workspace's ``lab_rabbit_001`` when it is the
    same scan. Only when too few new cases remain does the plain split stand; the parent may
    then have seen some validation cases, which favours it (the rule errs on the side of
    keeping a model that works): the round records which (``val_seen_by_parent``) and its note
    says so.

Interruptions
    The round (its parent, output folder and the label file of every case, pinned) is recorded
    before training starts; training checkpoints every epoch. A re-run after a kill resumes the
    recorded round from its checkpoint with the same cases and split, or, when the model was
    already written, goes straight to the comparison. If another model was made current in
    between (``vetseg use``), the interrupted round is marked abandoned and a new one starts.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vetseg.config import StageConfig
from vetseg.data.identity import KnownCases
from vetseg.errors import InputError
from vetseg.workflow.workspace import Workspace, now


@dataclass(frozen=True)
class RoundResult:
    """The outcome of one refine round.

    Attributes:
        round: the round number (1, 2, ...).
        parent_id: the model the round started from.
        model_id: the new model.
        promoted: whether the new model became current.
        parent_val_dice: the parent's mean Dice on the round's validation cases.
        new_val_dice: the new model's mean Dice on the same cases.
        val_cases: those cases.
        model_path: the new model's folder.
        resumed: True when this command finished an interrupted round.
        cases: case id -> label file the round trained on.
        val_seen_by_parent: the validation cases the parent or an ancestor trained or
            selected on (empty unless too few new cases remained).
    """

    round: int
    parent_id: str
    model_id: str
    promoted: bool
    parent_val_dice: float
    new_val_dice: float
    val_cases: list[str]
    model_path: Path
    resumed: bool
    cases: dict[str, str]
    val_seen_by_parent: list[str] = dataclasses.field(default_factory=list)

    @property
    def message(self) -> str:
        """One line for the user."""
        verdict = (
            "promoted: it is now the current model"
            if self.promoted
            else f"NOT promoted: kept in {self.model_path}, {self.parent_id} stays current"
        )
        return (
            f"round {self.round}: model {self.model_id} has validation Dice "
            f"{self.new_val_dice:.3f} against its parent's {self.parent_val_dice:.3f} on the "
            f"same {len(self.val_cases)} validation case(s); {verdict}."
        )


def promote(new_dice: float, parent_dice: float) -> bool:
    """The promotion rule: the new model must be at least as good on the same cases."""
    return new_dice >= parent_dice


def compare_on_validation(
    parent_path: Path, new_path: Path, dataset: Any, val_ids: list[str]
) -> tuple[float, float]:
    """Mean validation Dice of the parent and the new model on the same cases.

    Each model sees the cases through its own preprocessing (they are the same for a refine
    round) and is scored by :func:`vetseg.training.trainer.validation_dice`, the function
    that selected the new model's epoch.

    Returns:
        ``(parent_dice, new_dice)``.
    """
    from vetseg.data.datasets import load_case
    from vetseg.models.files import load_model
    from vetseg.training.trainer import make_validation_cases, nanmean, validation_dice

    loaded = [load_case(dataset, dataset.case(cid)) for cid in val_ids]
    out = []
    for path in (parent_path, new_path):
        model, info = load_model(path)
        if tuple(info.organs) != tuple(dataset.organs):
            raise InputError(f"{path}: organs {info.organs} differ from the round's organs.")
        cases = make_validation_cases(loaded, info.preprocess)
        out.append(nanmean(validation_dice(model, cases, len(info.organs))))
    return out[0], out[1]


def _train(
    parent_path: Path,
    dataset: Any,
    out: Path,
    config: StageConfig,
    progress: bool,
    keep_in_train: Sequence[str] | KnownCases = (),
    check_units: bool = True,
) -> None:
    """Train the round's model (resuming from ``out/train``'s checkpoint when there is one)."""
    from vetseg.training.stages import refine

    refine(
        parent_path,
        dataset,
        out,
        config,
        resume=True,
        progress=progress,
        ratios=(8, 1, 1),
        keep_in_train=keep_in_train,
        check_units=check_units,
    )


def seen_cases(workspace: Workspace, model_id: str) -> KnownCases:
    """Cases ``model_id`` or any ancestor in the workspace trained on or validated with.

    Read from each model's recorded split (train and val): by content digest where the split
    recorded one (so a case is recognised under any name), by name where it did not (older
    model files). A model without a split (trained elsewhere) adds nothing, and the walk stops
    at a parent the workspace does not hold.
    """
    seen = KnownCases()
    visited: set[str] = set()
    current: str | None = model_id
    while current is not None and current not in visited:
        visited.add(current)
        try:
            record = workspace.model(current)
        except InputError:
            break
        seen = seen | KnownCases.from_split(record.split)
        current = record.parent
    return seen


def seen_among(
    dataset: Any, case_ids: Sequence[str], seen: KnownCases, split_file: Path | None = None
) -> list[str]:
    """The cases of ``case_ids`` that ``seen`` holds, matched by content digest.

    The digests come from ``split_file`` (a ``splits.json`` that records them), or, for a case
    it does not record (or without one), from the case's image.
    """
    from vetseg.data.datasets import load_case, read_split_hashes

    recorded = read_split_hashes(split_file) if split_file is not None else {}

    def digest(case_id: str) -> str | None:
        if not seen.hashes:
            return None
        if case_id in recorded:
            return recorded[case_id]
        return load_case(dataset, dataset.case(case_id)).digest

    return sorted(c for c in case_ids if seen.contains(c, digest(c)))


def refine_round(
    workspace: Workspace,
    config: StageConfig | None = None,
    *,
    progress: bool = True,
    check_units: bool = True,
) -> RoundResult:
    """Run (or resume) one refine round and apply the promotion rule.

    Args:
        workspace: the open workspace.
        config: training settings; default ``workspace.settings.refine_config()`` (DESIGN
            section 4's refine-round values, overridden by ``[refine]`` in vetseg.toml). Its
            preprocessing is always the parent's: a round never changes the input definition.
        progress: show training progress.
        check_units: refuse cases that are not in the model's units (a HU model's cases show
            air; ``vetseg add`` warned about each when it was added).

    Returns:
        The round's result (see :attr:`RoundResult.message`).

    Raises:
        InputError: no current model, or fewer than 3 labelled + corrected cases.
    """
    from vetseg.data.datasets import read_splits
    from vetseg.models.files import read_model_info
    from vetseg.workflow.register import insert_model, set_current

    with workspace.changing():
        row = workspace.db.execute(
            "SELECT * FROM rounds WHERE status = 'running' ORDER BY round DESC LIMIT 1"
        ).fetchone()
        current = workspace.require_current_model()
        if row is not None and row["parent"] != current.model_id:
            # Another model was made current since the round began (vetseg use): the user has
            # moved on; the interrupted round is closed, not resumed.
            with workspace.transaction():
                workspace.db.execute(
                    "UPDATE rounds SET status = 'abandoned', finished = ? WHERE round = ?",
                    (now(), row["round"]),
                )
                workspace.audit(
                    "refine-abandoned", {"round": row["round"], "parent": row["parent"]}
                )
            row = None
        resumed = row is not None
        if row is None:
            parent = current
            architecture = read_model_info(workspace.path(parent.path)).architecture
            if architecture.get("class") != "AnimalOrganNet":
                raise InputError(
                    f"{workspace.root}: the current model {parent.model_id} is a "
                    f"{architecture.get('class')}; refine rounds train an animal model (make "
                    "one with vetseg transfer and vetseg use it)."
                )
            labels = workspace.training_labels()
            if len(labels) < 3:
                raise InputError(
                    f"{workspace.root}: {len(labels)} labelled or corrected case(s); a refine "
                    "round needs at least 3 (train, validation, test)."
                )
            number = 1 + int(
                workspace.db.execute("SELECT COALESCE(MAX(round), 0) FROM rounds").fetchone()[0]
            )
            out_rel = f"models/round-{number:03d}"
            with workspace.transaction():
                workspace.db.execute(
                    "INSERT INTO rounds (round, parent, out, cases, status, started)"
                    " VALUES (?, ?, ?, ?, 'running', ?)",
                    (number, parent.model_id, out_rel, json.dumps(labels), now()),
                )
                workspace.audit(
                    "refine-start",
                    {"round": number, "parent": parent.model_id, "cases": sorted(labels)},
                )
        else:
            number, out_rel = int(row["round"]), str(row["out"])
            parent = workspace.model(row["parent"])
            labels = json.loads(row["cases"])

        parent_path = workspace.path(parent.path)
        out = workspace.path(out_rel)
        parent_info = read_model_info(parent_path)
        dataset = workspace.dataset(labels, parent_info.organs)
        base = config or workspace.settings.refine_config()
        train_config = dataclasses.replace(base, preprocess=parent_info.preprocess)
        seen = seen_cases(workspace, parent.model_id)
        if not (out / "model.json").is_file():
            _train(
                parent_path,
                dataset,
                out,
                train_config,
                progress,
                keep_in_train=seen,
                check_units=check_units,
            )
        info = read_model_info(out)
        split = read_splits(out / "train" / "splits.json")
        familiar = seen_among(dataset, split["val"], seen, out / "train" / "splits.json")
        parent_dice, new_dice = compare_on_validation(parent_path, out, dataset, split["val"])
        promoted = promote(new_dice, parent_dice)
        note = (
            f"round {number}: validation Dice {new_dice:.3f} >= parent's {parent_dice:.3f}"
            if promoted
            else f"round {number}: not promoted, validation Dice {new_dice:.3f} < parent's "
            f"{parent_dice:.3f} on the same cases"
        )
        if familiar:
            note += (
                f" (too few new cases: the parent saw {len(familiar)} of the "
                f"{len(split['val'])} validation case(s))"
            )
        info.training = {**info.training, "cases": labels}
        with workspace.transaction():
            if (
                workspace.db.execute(
                    "SELECT 1 FROM models WHERE model_id = ?", (info.model_id,)
                ).fetchone()
                is None
            ):
                insert_model(workspace, info, out_rel, promoted=promoted, note=note)
            if promoted:
                set_current(workspace, info.model_id)
            workspace.db.execute(
                "UPDATE rounds SET status = ?, model_id = ?, val_cases = ?, parent_val_dice = ?,"
                " new_val_dice = ?, finished = ? WHERE round = ?",
                (
                    "promoted" if promoted else "kept",
                    info.model_id,
                    json.dumps(split["val"]),
                    parent_dice,
                    new_dice,
                    now(),
                    number,
                ),
            )
            workspace.audit(
                "refine",
                {
                    "round": number,
                    "parent": parent.model_id,
                    "model": info.model_id,
                    "promoted": promoted,
                    "parent_val_dice": parent_dice,
                    "new_val_dice": new_dice,
                    "val_cases": split["val"],
                    "val_seen_by_parent": familiar,
                    "resumed": resumed,
                },
            )
        return RoundResult(
            round=number,
            parent_id=parent.model_id,
            model_id=info.model_id,
            promoted=promoted,
            parent_val_dice=parent_dice,
            new_val_dice=new_dice,
            val_cases=list(split["val"]),
            model_path=out,
            resumed=resumed,
            cases=dict(labels),
            val_seen_by_parent=familiar,
        )


def rounds(workspace: Workspace) -> list[dict[str, Any]]:
    """Every round, oldest first, as plain dicts."""
    rows = workspace.db.execute("SELECT * FROM rounds ORDER BY round")
    out = []
    for r in rows:
        item = dict(r)
        item["cases"] = sorted(json.loads(item["cases"]))
        item["val_cases"] = json.loads(item["val_cases"]) if item["val_cases"] else []
        out.append(item)
    return out


__all__ = [
    "RoundResult",
    "compare_on_validation",
    "promote",
    "refine_round",
    "rounds",
    "seen_among",
    "seen_cases",
]
