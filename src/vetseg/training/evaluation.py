"""Score a model on a labelled dataset (``vetseg evaluate``): Dice and HD95 per case and organ,
and why a score is missing wherever one is.

Each case and organ gets one status:

``ok``
    Reference and prediction both hold the organ: Dice and HD95 (mm) are given.
``missed``
    The reference holds the organ, the prediction does not: Dice 0, counted in the means; no
    HD95 (there is no predicted surface to measure from).
``false_positive``
    The dataset annotates the organ but this case's reference has none of it, and the model
    draws some: Dice 0, counted (the reference says the organ is not there); no HD95.
``absent_in_both``
    Neither holds the organ: nothing to find and nothing found; no score, left out of means.
``not_annotated``
    The dataset's label vocabulary has no such organ (e.g. the heart in an abdominal dataset):
    its reference says nothing about it, so no score and left out of means, whatever the
    model draws.

Per organ: the mean Dice over the counted cases (``ok``, ``missed``, ``false_positive``), the
mean HD95 over the ``ok`` cases, and how many cases had each status. ``mean_dice`` and
``mean_hd95_mm`` are means over the organs that have a value, each organ weighing the same
(the "mean" row of the table). Where no value exists the result holds ``None`` (JSON ``null``),
never NaN, so that the JSON file is valid JSON.

Predictions are by default what ``vetseg segment`` writes: the label map after its built-in
post-processing rules (largest parts kept, holes filled, specks dropped); ``raw=True`` scores
the model's label map as it comes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vetseg.errors import InputError
from vetseg.training.metrics import hd95_mm

#: Every status, in the order tables list them.
STATUSES: tuple[str, ...] = (
    "ok",
    "missed",
    "false_positive",
    "absent_in_both",
    "not_annotated",
)
#: Statuses whose Dice counts in the means.
COUNTED: frozenset[str] = frozenset({"ok", "missed", "false_positive"})


@dataclass(frozen=True)
class OrganScore:
    """One organ in one case.

    Attributes:
        status: one of :data:`STATUSES`.
        dice: Dice in [0, 1] (None unless the status is counted).
        hd95_mm: 95th percentile Hausdorff distance in mm (None unless ``ok``).
    """

    status: str
    dice: float | None = None
    hd95_mm: float | None = None

    def to_json(self) -> dict[str, Any]:
        """``{"status": ..., "dice": float | null, "hd95_mm": float | null}``."""
        return {"status": self.status, "dice": self.dice, "hd95_mm": self.hd95_mm}


def score_organ(
    predicted: np.ndarray,
    reference: np.ndarray,
    spacing_zyx: Sequence[float],
    annotated: bool = True,
) -> OrganScore:
    """Score one organ of one case.

    Args:
        predicted: bool mask ``[z, y, x]``.
        reference: bool mask, same shape.
        spacing_zyx: voxel size in mm along the array's axes (for HD95).
        annotated: False when the dataset does not label this organ at all.

    Returns:
        The organ's status and scores (see the module notes).
    """
    if not annotated:
        return OrganScore("not_annotated")
    in_prediction, in_reference = bool(predicted.any()), bool(reference.any())
    if not in_reference:
        return OrganScore("false_positive", 0.0) if in_prediction else OrganScore("absent_in_both")
    if not in_prediction:
        return OrganScore("missed", 0.0)
    overlap = int(np.count_nonzero(predicted & reference))
    total = int(np.count_nonzero(predicted)) + int(np.count_nonzero(reference))
    return OrganScore("ok", 2.0 * overlap / total, hd95_mm(predicted, reference, spacing_zyx))


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None


def summarise(
    per_case: Mapping[str, Mapping[str, OrganScore]], organs: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Per organ: mean Dice (counted cases), mean HD95 (``ok`` cases) and status counts.

    Returns:
        ``{organ: {"dice": float | None, "hd95_mm": float | None, "cases": n counted,
        "ok": n, "missed": n, ...}}``.
    """
    out: dict[str, dict[str, Any]] = {}
    for organ in organs:
        scores = [case[organ] for case in per_case.values()]
        dice = [s.dice for s in scores if s.status in COUNTED and s.dice is not None]
        hd95 = [s.hd95_mm for s in scores if s.hd95_mm is not None]
        out[organ] = {
            "dice": _mean(dice),
            "hd95_mm": _mean(hd95),
            "cases": len(dice),
            **{status: sum(s.status == status for s in scores) for status in STATUSES},
        }
    return out


def annotated_organs(dataset: Any) -> set[str]:
    """The vetseg organs a dataset's label vocabulary names (its mapping's targets)."""
    return {organ for organ in dataset.mapping.values() if organ is not None}


def evaluate(
    model_path: Path,
    data: Path,
    split: str = "all",
    organ_map: dict[str, str] | None = None,
    *,
    raw: bool = False,
    body_scale: float = 1.0,
    orientation_override: str | None = None,
    engine: str = "torch",
) -> dict[str, Any]:
    """Dice and HD95 per organ of a model on a labelled dataset, on each scan's own grid.

    Args:
        model_path: a model folder.
        data: a labelled dataset.
        split: "all", or "train" / "val" / "test" of the model's own recorded split.
        organ_map: model organ -> dataset organ (e.g. the human -> animal correspondence for a
            zero-shot human model); default: the same names.
        raw: score the model's label map as it comes; default: after the post-processing
            that ``vetseg segment`` applies by default.
        body_scale: the model sees every scan as if its voxels were this many times larger
            (1: as they are). A human model used zero-shot on an animal gets
            ``1 / vetseg.species.linear_scale(species)``, so that the animal's organs cover as
            many of its pixels as human organs do. HD95 stays in the scan's true mm.
        orientation_override: ``--orientation`` for every scan of ``data``.
        engine: the inference engine (:meth:`Segmenter.load`): ``"torch"``, or ``"onnx"``
            (ONNX Runtime fp32 on the folder's ``model.onnx`` or an export made now; several
            times faster on a CPU, the same labels up to float rounding).

    Returns:
        ``{"organs": [...], "per_case": {case: {organ: {"status", "dice", "hd95_mm"}}},
        "per_organ": {organ: mean Dice | None}, "per_organ_hd95_mm": {organ: mm | None},
        "summary": {organ: {...}} (see :func:`summarise`), "mean_dice": float | None,
        "mean_hd95_mm": float | None, "postprocess": bool, "synthetic": bool, ...}``; no NaN.

    Raises:
        InputError: no labelled case to evaluate.
    """
    from vetseg.data.datasets import load_case, open_dataset
    from vetseg.inference.postprocess import PostprocessConfig
    from vetseg.inference.segmenter import Segmenter

    segmenter = Segmenter.load(
        model_path, engine=engine, postprocess=None if raw else PostprocessConfig()
    )
    organ_map = organ_map or {o: o for o in segmenter.organs}
    target_organs = tuple(o for o in segmenter.organs if o in organ_map)
    organs_out = [organ_map[o] for o in target_organs]
    dataset = open_dataset(Path(data), organs=organs_out, orientation=orientation_override)
    annotated = annotated_organs(dataset)
    cases = [c for c in dataset.cases if c.label is not None or c.label_dir is not None]
    if split != "all":
        ids = set(segmenter.info.training.get("split", {}).get(split, []))
        cases = [c for c in cases if c.case_id in ids]
    if not cases:
        raise InputError(f"{data}: no labelled case to evaluate (split {split!r}).")
    per_case: dict[str, dict[str, OrganScore]] = {}
    for case in cases:
        loaded = load_case(dataset, case, segmenter.info.preprocess.orientation)
        seen_as = loaded.canonical_meta
        if body_scale != 1.0:
            seen_as = dataclasses.replace(
                seen_as,
                spacing=tuple(v * body_scale for v in seen_as.spacing),
                origin=tuple(v * body_scale for v in seen_as.origin),
            )
        prediction = segmenter.predict(loaded.image, seen_as)
        spacing_zyx = tuple(reversed(loaded.canonical_meta.spacing))
        per_case[case.case_id] = {
            organ_map[organ]: score_organ(
                prediction.labels == segmenter.organs.index(organ) + 1,
                loaded.labels == index + 1,
                spacing_zyx,
                annotated=organ_map[organ] in annotated,
            )
            for index, organ in enumerate(target_organs)
        }
    summary = summarise(per_case, organs_out)
    organ_dice = [s["dice"] for s in summary.values() if s["dice"] is not None]
    organ_hd95 = [s["hd95_mm"] for s in summary.values() if s["hd95_mm"] is not None]
    return {
        "model": str(model_path),
        "model_id": segmenter.info.model_id,
        "data": str(data),
        "body_scale": body_scale,
        "split": split,
        "postprocess": not raw,
        "engine": engine,
        "organs": organs_out,
        "per_case": {
            cid: {o: s.to_json() for o, s in scores.items()} for cid, scores in per_case.items()
        },
        "per_organ": {o: s["dice"] for o, s in summary.items()},
        "per_organ_hd95_mm": {o: s["hd95_mm"] for o, s in summary.items()},
        "summary": summary,
        "mean_dice": _mean(organ_dice),
        "mean_hd95_mm": _mean(organ_hd95),
        "synthetic": bool(dataset.synthetic),
    }


__all__ = [
    "COUNTED",
    "STATUSES",
    "OrganScore",
    "annotated_organs",
    "evaluate",
    "score_organ",
    "summarise",
]
