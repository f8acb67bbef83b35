"""Slice-to-slice consistency of a label map: do neighbouring slices agree as anatomy does?

A 2D model decides every slice alone, which shows as stripes in coronal and sagittal views: an
organ present, absent, present again, or its outline jumping from one slice to the next. The
measure here is the Dice between the masks of neighbouring slices (axis 0 of a canonical
``[z, y, x]`` map), averaged over the pairs in which the organ appears. Anatomy is smooth, so a
reference label map scores high; a prediction should score about as high, not higher (a mask
copied through every slice would score 1) and not much lower (stripes).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def neighbour_dice(labels: np.ndarray, organ_id: int) -> float | None:
    """Mean Dice between consecutive slices' masks of one organ.

    Args:
        labels: ``[z, y, x]`` label map, slices along axis 0.
        organ_id: the organ's label value.

    Returns:
        The mean over slice pairs where either slice holds the organ, or None when fewer than
        one such pair exists.
    """
    mask = labels == organ_id
    counts = mask.reshape(mask.shape[0], -1).sum(axis=1).astype(np.float64)
    overlap = (mask[1:] & mask[:-1]).reshape(mask.shape[0] - 1, -1).sum(axis=1)
    both = counts[1:] + counts[:-1]
    present = both > 0
    if not np.any(present):
        return None
    return float(np.mean(2.0 * overlap[present] / both[present]))


def slice_consistency(
    prediction: np.ndarray, reference: np.ndarray, organs: Sequence[str]
) -> dict[str, dict[str, float | None]]:
    """Neighbour Dice of a prediction and of its reference, per organ (``organs[i]`` = id i+1).

    Returns:
        ``{organ: {"prediction": float | None, "reference": float | None, "gap": reference -
        prediction or None}}``; a positive gap means the prediction flickers more than anatomy.
    """
    out: dict[str, dict[str, float | None]] = {}
    for index, organ in enumerate(organs, start=1):
        pred = neighbour_dice(prediction, index)
        ref = neighbour_dice(reference, index)
        gap = ref - pred if pred is not None and ref is not None else None
        out[organ] = {"prediction": pred, "reference": ref, "gap": gap}
    return out
