"""S102: the current model drafts labels for unlabelled cases, and says how unsure it is.

``vetseg prelabel DIR --cases N --strategy uncertainty|random`` picks N unlabelled cases, runs the
current model on each and writes ``review/<case>/prelabel.nii.gz`` in the scan's own geometry
(a copy of ``review/<case>/prelabels/<model id>.nii.gz``, which is never replaced).

Uncertainty score
    Mean predictive entropy inside the body: for every organ channel and voxel (at model
    resolution) the model gives a probability ``p``; its binary entropy ``H(p)`` (bits) is 0
    where the model is sure and 1 at ``p = 0.5``. The score is the sum over organs of ``H(p)``,
    averaged over the voxels inside the body (above the lowest 5% of the intensity window: air
    out, lungs in). A fixed denominator matters: a first version divided by the voxels the
    model labels, and on phantoms ranked the cases backwards (Spearman -0.82 against the
    measured correction effort) because a model that over-segments inflates its own
    denominator; the entropy inside the body ranked them +0.94 on the same 10 cases (see
    ``benchmarks/uncertainty_vs_random.py``).

Strategies
    ``uncertainty`` scores every candidate, pre-labels the N most uncertain and queues them
    most uncertain first; ``random`` draws N candidates with the workspace seed and the run
    number (reproducible, a new draw every run) and queues them in that order.

Interruptions
    A run is recorded (its selected cases, in queue order) before the first file is written;
    scores and finished cases are committed one by one. Killed and re-run, the command finishes
    the interrupted run (the cases it had chosen) and nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vetseg.errors import InputError
from vetseg.fileutil import atomic_path
from vetseg.workflow.workspace import Workspace, now

STRATEGIES: tuple[str, ...] = ("uncertainty", "random")
#: Voxels above the lowest 5% of the intensity window are "inside the body" for the score
#: (-900 HU with the CT window: air is out, lungs at -850 are in).
BODY_FRACTION = 0.05


@dataclass(frozen=True)
class PrelabelItem:
    """One pre-labelled case: queue position (0 first), score and the file written; a warning
    when its scan's field of view cuts the body (the draft is weaker near the cut,
    :func:`~vetseg.inference.pipeline.field_cut_warning`), else ``""``."""

    case_id: str
    rank: int
    uncertainty: float
    path: str
    warning: str = ""


@dataclass(frozen=True)
class PrelabelResult:
    """The outcome of one ``prelabel`` command.

    Attributes:
        run: the run number (None when there was nothing to pre-label).
        model_id: the model that drafted the labels.
        strategy: ``"uncertainty"`` or ``"random"``.
        items: the run's cases in queue order (those done before an interruption included).
        resumed: True when this command finished an interrupted run.
        candidates: how many cases could have been chosen.
        skipped: ``(case id, why)`` of chosen cases left without a draft: scans not in the
            model's units (a HU model given a scan without air, :mod:`vetseg.io.units`), whose
            draft would be nonsense. They stay unlabelled.
    """

    run: int | None
    model_id: str
    strategy: str
    items: list[PrelabelItem]
    resumed: bool
    candidates: int
    skipped: tuple[tuple[str, str], ...] = ()


class _NotInUnits(Exception):
    """A case's scan is not in the model's units; the message says why."""


# --------------------------------------------------------------------------- uncertainty
def uncertainty_score(
    model: Any,
    preprocess: Any,
    canonical_volume: np.ndarray,
    batch_size: int = 8,
    spacing_yx: tuple[float, float] = (1.0, 1.0),
    offset_yx: tuple[float, float] = (0.0, 0.0),
) -> float:
    """Mean predictive entropy (bits, summed over organs) of the voxels inside the body.

    Args:
        model: a vetseg network (``[b, C, S, S]`` -> logits ``[b, organs, S, S]``, C the
            input channels of ``preprocess``).
        preprocess: its ``PreprocessConfig`` (window, size, spacing).
        canonical_volume: ``[z, y, x]`` scan in canonical orientation, in the window's units.
        batch_size: slices per forward pass.
        spacing_yx: the scan's in-plane pixel size in mm (used by a model with a spacing).
        offset_yx: scanner position of the first pixel along y and x (mm).

    Returns:
        ``mean over body voxels of sum over organs of H(p)``: 0 for a model that is sure
        everywhere, at most the number of organs; 0 for a scan with no voxel in the body.
        The probabilities are those inference gives on the scan's own grid (same tiling).
    """
    import torch

    from vetseg.data.context import context_indices, stack_context
    from vetseg.data.preprocess import (
        body_level,
        logits_to_native,
        pad_value,
        tiled_logits,
        to_model_grid,
    )

    low, high = preprocess.window
    body_hu = low + BODY_FRACTION * (high - low)
    body_model = body_level(preprocess)
    entropy_sum = 0.0
    body_voxels = 0
    model.eval()

    def run(batch: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(batch)).float().numpy()

    with torch.no_grad():
        total = canonical_volume.shape[0]
        context = preprocess.context_slices
        for start in range(0, total, batch_size):
            stop = min(start + batch_size, total)
            chunk = canonical_volume[start:stop].astype(np.float32)
            with_neighbours = canonical_volume[context_indices(start, stop, total, context)]
            image, grid = to_model_grid(
                with_neighbours.astype(np.float32), spacing_yx, preprocess, offset_yx
            )
            image = stack_context(image, context)
            fill = pad_value(preprocess)
            logits = tiled_logits(run, image, preprocess.tile_size, fill, batch_size, body_model)
            logits = logits_to_native(logits, grid)
            body = torch.from_numpy(chunk > body_hu)
            probs = torch.sigmoid(logits.double()).clamp(1e-7, 1 - 1e-7)
            entropy = -(probs * torch.log2(probs) + (1 - probs) * torch.log2(1 - probs))
            entropy_sum += float(entropy.sum(dim=1)[body].sum())
            body_voxels += int(body.sum())
    return entropy_sum / body_voxels if body_voxels else 0.0


def _workspace_ids(model_organs: Sequence[str], organs: Sequence[str]) -> np.ndarray:
    """Lookup table: model label id -> workspace label id."""
    position = {o: i + 1 for i, o in enumerate(organs)}
    lut = np.zeros(len(model_organs) + 1, dtype=np.uint8)
    for i, organ in enumerate(model_organs):
        lut[i + 1] = position[organ]
    return lut


# --------------------------------------------------------------------------- selection
def _candidates(workspace: Workspace, model_id: str, refresh: bool) -> list[str]:
    out = [c.case_id for c in workspace.cases("unlabelled")]
    if refresh:
        for case in workspace.cases("prelabelled"):
            latest = workspace.latest_prelabel(case.case_id)
            if latest is None or latest.model_id != model_id:
                out.append(case.case_id)
    return sorted(out)


def _cached_score(workspace: Workspace, case_id: str, model_id: str) -> float | None:
    row = workspace.db.execute(
        "SELECT uncertainty FROM scores WHERE case_id = ? AND model_id = ?", (case_id, model_id)
    ).fetchone()
    return None if row is None else float(row[0])


def read_case(workspace: Workspace, case_id: str) -> tuple[np.ndarray, Any, Any]:
    """A case's image, its header geometry and the geometry the model sees.

    The latter is the header's turned by the case's recorded ``--orientation``
    (:func:`vetseg.io.orientation.apply_orientation_override`); labels are written on the
    former, so they lie on the case's image in any viewer.
    """
    from vetseg.io.image import read_scan
    from vetseg.io.orientation import apply_orientation_override

    case = workspace.case(case_id)
    volume, meta = read_scan(workspace.path(case.image))
    return volume, meta, apply_orientation_override(meta, case.orientation, volume.shape)


def _score_case(workspace: Workspace, segmenter: Any, case_id: str) -> float:
    """The case's uncertainty under the segmenter's model, cached in the database."""
    from vetseg.data.preprocess import inplane_offset, inplane_spacing
    from vetseg.io.image import to_canonical

    model_id = segmenter.info.model_id
    cached = _cached_score(workspace, case_id, model_id)
    if cached is not None:
        return cached
    pre = segmenter.info.preprocess
    volume, _, posed = read_case(workspace, case_id)
    canonical, canonical_meta = to_canonical(volume, posed, pre.orientation)
    score = uncertainty_score(
        segmenter.model,
        pre,
        canonical,
        segmenter.batch_size,
        inplane_spacing(canonical_meta.spacing),
        inplane_offset(canonical_meta),
    )
    with workspace.transaction():
        workspace.db.execute(
            "INSERT OR REPLACE INTO scores VALUES (?, ?, ?)", (case_id, model_id, score)
        )
    return score


def _running_run(workspace: Workspace) -> dict[str, Any] | None:
    row = workspace.db.execute(
        "SELECT * FROM prelabel_runs WHERE status = 'running' ORDER BY run DESC LIMIT 1"
    ).fetchone()
    return None if row is None else {**dict(row), "selected": json.loads(row["selected"])}


# --------------------------------------------------------------------------- one case
def _prelabel_case(
    workspace: Workspace, segmenter: Any, run: int, rank: int, case_id: str, strategy: str
) -> PrelabelItem:
    """Draft one case's label, write both files, then record it in one transaction."""
    import shutil

    from vetseg.data.preprocess import inplane_offset, inplane_spacing
    from vetseg.inference.pipeline import field_cut_warning
    from vetseg.io.image import to_canonical, write_image
    from vetseg.io.units import AIR_HU, expects_hu, lowest_value

    info = segmenter.info
    organs = workspace.settings.organs
    volume, meta, posed = read_case(workspace, case_id)
    low = lowest_value(volume)
    if expects_hu(info.preprocess.window) and low > AIR_HU:
        raise _NotInUnits(
            f"its lowest value is {low:.0f}: no air, so not the Hounsfield "
            "units this model works in, and a draft would be nonsense. If the file stores the "
            "scanner's raw values, convert it to HU (add its rescale intercept, usually -1024) "
            "and add it again."
        )
    score = _cached_score(workspace, case_id, info.model_id)
    if score is None:
        canonical, canonical_meta = to_canonical(volume, posed, info.preprocess.orientation)
        score = uncertainty_score(
            segmenter.model,
            info.preprocess,
            canonical,
            segmenter.batch_size,
            inplane_spacing(canonical_meta.spacing),
            inplane_offset(canonical_meta),
        )
    prediction = segmenter.predict(volume, posed)  # the label map keeps the header's grid
    warning = field_cut_warning(prediction.cut_slices, prediction.slices, case_id)
    labels = _workspace_ids(info.organs, organs)[prediction.labels]
    names = {i + 1: organ for i, organ in enumerate(organs)}
    folder = workspace.review_dir(case_id)
    versioned = write_image(
        labels, meta, folder / "prelabels" / f"{info.model_id}.nii.gz", segment_names=names
    )
    with atomic_path(folder / "prelabel.nii.gz") as tmp:
        shutil.copyfile(versioned, tmp)
    relative = workspace.relative(versioned)
    with workspace.transaction():
        workspace.db.execute(
            "INSERT INTO prelabels (case_id, model_id, run, queue_rank, path, uncertainty,"
            " strategy, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (case_id, info.model_id, run, rank, relative, score, strategy, now()),
        )
        workspace.db.execute(
            "UPDATE cases SET state = 'prelabelled', updated = ? WHERE case_id = ?",
            (now(), case_id),
        )
        workspace.record_files(relative, workspace.relative(folder / "prelabel.nii.gz"))
        record = {"case": case_id, "model": info.model_id, "run": run, "uncertainty": score}
        if warning:
            record["field_cut_slices"] = [prediction.cut_slices, prediction.slices]
        workspace.audit("prelabel", record)
    return PrelabelItem(case_id, rank, score, relative, warning)


# --------------------------------------------------------------------------- command
def prelabel(
    workspace: Workspace,
    cases: int | None = None,
    strategy: str = "uncertainty",
    *,
    refresh: bool = False,
    batch_size: int = 8,
    postprocess: bool = True,
    on_case: Callable[[str], None] | None = None,
) -> PrelabelResult:
    """Pre-label unlabelled cases with the current model (``vetseg prelabel``).

    Args:
        workspace: the open workspace.
        cases: how many cases to pre-label (None: every candidate).
        strategy: ``"uncertainty"`` (most uncertain first) or ``"random"``.
        refresh: also pre-label again the pre-labelled cases whose draft came from an older
            model (their earlier drafts are kept under ``prelabels/``).
        batch_size: slices per forward pass.
        postprocess: clean the drafts with the built-in per-organ rules (largest connected
            parts, holes filled; :mod:`vetseg.inference.postprocess`): a 2D model's stray
            specks are work for the vet. The uncertainty score sees the raw probabilities.
        on_case: called with each case id before it is processed (progress display).

    Returns:
        What was done; a command that finds an interrupted run finishes that run only.

    Raises:
        InputError: unknown strategy, no current model, or ``cases`` below 1.
    """
    from vetseg.inference.postprocess import PostprocessConfig
    from vetseg.inference.segmenter import Segmenter

    rules = PostprocessConfig(enabled=postprocess)
    if strategy not in STRATEGIES:
        raise InputError(f"unknown pre-label strategy {strategy!r}; use uncertainty or random.")
    if cases is not None and cases < 1:
        raise InputError(f"--cases must be at least 1, got {cases}.")
    with workspace.changing():
        running = _running_run(workspace)
        resumed = running is not None
        if running is None:
            current = workspace.require_current_model()
            segmenter = Segmenter.load(
                workspace.path(current.path), batch_size=batch_size, postprocess=rules
            )
            candidates = _candidates(workspace, current.model_id, refresh)
            if not candidates:
                return PrelabelResult(None, current.model_id, strategy, [], False, 0)
            n = len(candidates) if cases is None else min(cases, len(candidates))
            run_number = 1 + int(
                workspace.db.execute("SELECT COALESCE(MAX(run), 0) FROM prelabel_runs").fetchone()[
                    0
                ]
            )
            if strategy == "uncertainty":
                scores = {}
                for case_id in candidates:
                    if on_case is not None:
                        on_case(f"scoring {case_id}")
                    scores[case_id] = _score_case(workspace, segmenter, case_id)
                order = sorted(candidates, key=lambda c: (-scores[c], c))
            else:
                rng = np.random.default_rng([workspace.settings.seed, run_number])
                order = [candidates[i] for i in rng.permutation(len(candidates))]
            selected = order[:n]
            with workspace.transaction():
                workspace.db.execute(
                    "INSERT INTO prelabel_runs VALUES (?, ?, ?, ?, 'running', ?, NULL)",
                    (run_number, current.model_id, strategy, json.dumps(selected), now()),
                )
                workspace.audit(
                    "prelabel-run",
                    {
                        "run": run_number,
                        "model": current.model_id,
                        "strategy": strategy,
                        "selected": selected,
                        "candidates": len(candidates),
                    },
                )
            running = {
                "run": run_number,
                "model_id": current.model_id,
                "strategy": strategy,
                "selected": selected,
            }
            n_candidates = len(candidates)
        else:
            # Finish the interrupted run with the model it started with.
            model = workspace.model(running["model_id"])
            segmenter = Segmenter.load(
                workspace.path(model.path), batch_size=batch_size, postprocess=rules
            )
            n_candidates = len(running["selected"])
        run, model_id = int(running["run"]), str(running["model_id"])
        done = {p.case_id: p for p in workspace.prelabels() if p.run == run}
        items: list[PrelabelItem] = []
        skipped: list[tuple[str, str]] = []
        for rank, case_id in enumerate(running["selected"]):
            if case_id in done:
                record = done[case_id]
                items.append(PrelabelItem(case_id, rank, record.uncertainty, record.path))
                continue
            if workspace.case(case_id).state not in ("unlabelled", "prelabelled"):
                continue  # corrected while the run was interrupted: nothing to draft
            if on_case is not None:
                on_case(case_id)
            try:
                items.append(
                    _prelabel_case(workspace, segmenter, run, rank, case_id, running["strategy"])
                )
            except _NotInUnits as problem:
                skipped.append((case_id, str(problem)))
        with workspace.transaction():
            workspace.db.execute(
                "UPDATE prelabel_runs SET status = 'done', finished = ? WHERE run = ?",
                (now(), run),
            )
            workspace.audit(
                "prelabel-done",
                {
                    "run": run,
                    "cases": [i.case_id for i in items],
                    "skipped": [case_id for case_id, _ in skipped],
                    "resumed": resumed,
                },
            )
        return PrelabelResult(
            run, model_id, running["strategy"], items, resumed, n_candidates, tuple(skipped)
        )


def review_queue(workspace: Workspace) -> list[dict[str, Any]]:
    """Pre-labelled cases awaiting the vet, in queue order (run, then rank within the run).

    Returns:
        One dict per case: ``case``, ``uncertainty``, ``model``, ``run``, ``rank``, ``file``.
    """
    queue = []
    for case in workspace.cases("prelabelled"):
        latest = workspace.latest_prelabel(case.case_id)
        if latest is None:
            continue
        queue.append(
            {
                "case": case.case_id,
                "uncertainty": latest.uncertainty,
                "model": latest.model_id,
                "strategy": latest.strategy,
                "run": latest.run,
                "rank": latest.queue_rank,
                "file": str(Path("review") / case.case_id / "prelabel.nii.gz"),
            }
        )
    queue.sort(key=lambda q: (q["run"], q["rank"]))
    return queue


__all__ = [
    "STRATEGIES",
    "PrelabelItem",
    "PrelabelResult",
    "prelabel",
    "review_queue",
    "uncertainty_score",
]
