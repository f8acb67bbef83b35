"""S104 on a workspace: RL fine-tuning of its current model, registered with its lineage.

The workflow side of :mod:`vetseg.training.rl` (which knows nothing of workspaces), as
:mod:`vetseg.workflow.rounds` is for supervised refinement.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vetseg.config import RLConfig
from vetseg.errors import InputError
from vetseg.training.rl import rl_tune


def rl_tune_workspace(
    root: Path,
    config: RLConfig | None = None,
    *,
    out: Path | None = None,
    eval_every: int = 0,
    progress: bool = True,
    check_units: bool = True,
) -> tuple[Any, bool]:
    """``vetseg rl-tune WORKSPACE``: RL-tune the workspace's current model on its cases.

    Trains on the labelled and corrected cases (the newest correction of each), writes the
    child into ``models/<id>/`` (or ``out``) and registers it with its parent. It becomes the
    current model only when its validation Dice beats the parent's on the same validation
    cases (DESIGN section 5: the step is kept only if it helps); otherwise it is kept, not
    promoted, with a note saying why. The workspace stays locked for the whole run; a killed
    run leaves an unregistered folder and nothing in the database.

    Args:
        root: the workspace folder.
        config: RL settings.
        out: the child's folder (default ``models/<id>`` inside the workspace).
        eval_every: as in :func:`vetseg.training.rl.rl_tune`.
        progress: show a progress bar.
        check_units: refuse cases that are not in the model's units (a HU model's cases show
            air; ``vetseg add`` warned about each when it was added).

    Returns:
        ``(info, promoted)``.
    """
    from vetseg.models.files import new_model_id, read_model_info
    from vetseg.workflow.register import insert_model, set_current
    from vetseg.workflow.workspace import Workspace

    with Workspace.open(Path(root)) as workspace, workspace.changing():
        current = workspace.require_current_model()
        parent_dir = workspace.path(current.path)
        organs = read_model_info(parent_dir).organs
        labels = workspace.training_labels()
        if len(labels) < 3:
            raise InputError(
                f"{root}: RL fine-tuning needs at least 3 labelled or corrected cases"
                f" (train, validation, test), the workspace has {len(labels)}."
            )
        model_id = new_model_id("rl")
        target = Path(out) if out is not None else workspace.root / "models" / model_id
        info = rl_tune(
            parent_dir,
            workspace.dataset(labels, organs),
            target,
            config,
            eval_every=eval_every,
            progress=progress,
            model_id=model_id,
            check_units=check_units,
        )
        info.training["cases"] = sorted(labels)
        before = info.metrics.get("parent_val_mean_dice")
        after = info.metrics.get("val_mean_dice")
        promoted = before is not None and after is not None and after > before
        note = f"RL fine-tuned: validation Dice {after} vs parent {before}; " + (
            "promoted" if promoted else "not promoted (no gain over the parent)"
        )
        with workspace.transaction():
            insert_model(workspace, info, workspace.relative(target), promoted=promoted, note=note)
            if promoted:
                set_current(workspace, info.model_id)
            workspace.audit(
                "rl-tune",
                {
                    "model": info.model_id,
                    "parent": current.model_id,
                    "promoted": promoted,
                    "val_mean_dice": after,
                    "parent_val_mean_dice": before,
                },
            )
    return info, promoted


__all__ = ["rl_tune_workspace"]
