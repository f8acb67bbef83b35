"""Hard Dice per organ, for a batch (:func:`dice_per_organ`) or accumulated over many batches
or a whole volume (:class:`DiceAccumulator`).

Dice of one organ = ``2 TP / (2 TP + FP + FN)``, the counts pooled over everything given (volume
level, not a mean of per-slice scores). An organ absent from both prediction and reference has no
defined Dice: it is reported as ``nan`` and left out of means (``np.nanmean``), so an organ that a
case does not contain neither rewards nor penalises the model.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def _as_mask(mask: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    tensor = torch.from_numpy(np.asarray(mask)) if isinstance(mask, np.ndarray) else mask
    if tensor.is_floating_point():
        # Refused rather than thresholded: probabilities or logits need the caller's threshold.
        raise TypeError(f"{name} must be a boolean (or 0/1 integer) mask, got {tensor.dtype}")
    return tensor if tensor.dtype == torch.bool else tensor != 0


def organ_counts(
    pred: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    channel_dim: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """True-positive, false-positive and false-negative voxel counts per organ.

    Args:
        pred: predicted masks, organs along ``channel_dim`` (e.g. ``[B, n, H, W]``).
        target: reference masks, same shape.
        channel_dim: the organ axis; every other axis is summed over.

    Returns:
        ``tp, fp, fn``, each an int64 tensor ``[n]``.
    """
    pred_mask = _as_mask(pred, "pred")
    target_mask = _as_mask(target, "target")
    if pred_mask.shape != target_mask.shape:
        raise ValueError(
            f"pred {tuple(pred_mask.shape)} and target {tuple(target_mask.shape)} differ in shape"
        )
    pred_mask = pred_mask.movedim(channel_dim, 0).reshape(pred_mask.shape[channel_dim], -1)
    target_mask = target_mask.movedim(channel_dim, 0).reshape(target_mask.shape[channel_dim], -1)
    tp = (pred_mask & target_mask).sum(dim=1)
    fp = (pred_mask & ~target_mask).sum(dim=1)
    fn = (~pred_mask & target_mask).sum(dim=1)
    return tp, fp, fn


def _dice_from_counts(
    tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, empty_value: float
) -> torch.Tensor:
    tp, fp, fn = (t.to(torch.float64) for t in (tp, fp, fn))
    denominator = 2 * tp + fp + fn
    dice = 2 * tp / denominator.clamp(min=1)
    return torch.where(denominator > 0, dice, torch.full_like(dice, empty_value))


def dice_per_organ(
    pred: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    empty_value: float = math.nan,
    channel_dim: int = 1,
) -> torch.Tensor:
    """Hard Dice of each organ, counts pooled over every axis but ``channel_dim``.

    Args:
        pred: predicted masks, bool (or 0/1 integers), e.g. ``[B, n, H, W]`` or, with
            ``channel_dim=0``, ``[n, D, H, W]``.
        target: reference masks, same shape.
        empty_value: the value for an organ absent from both (default ``nan``).
        channel_dim: the organ axis.

    Returns:
        float64 tensor ``[n]``.
    """
    return _dice_from_counts(*organ_counts(pred, target, channel_dim), empty_value)


class DiceAccumulator:
    """Per-organ TP/FP/FN counts summed over batches; :meth:`dice` gives volume-level Dice.

    Args:
        n_organs: organ channels.

    Example:
        >>> acc = DiceAccumulator(3)
        >>> for logits, target in batches:
        ...     acc.update(logits > 0, target)
        >>> acc.dice()  # np.ndarray [3], nan for organs absent from prediction and reference
    """

    def __init__(self, n_organs: int) -> None:
        if n_organs < 1:
            raise ValueError(f"n_organs must be at least 1, got {n_organs}")
        self.n_organs = n_organs
        self.reset()

    def reset(self) -> None:
        """Forget every count."""
        self.tp = np.zeros(self.n_organs, dtype=np.int64)
        self.fp = np.zeros(self.n_organs, dtype=np.int64)
        self.fn = np.zeros(self.n_organs, dtype=np.int64)

    def update(
        self,
        pred: torch.Tensor | np.ndarray,
        target: torch.Tensor | np.ndarray,
        channel_dim: int = 1,
    ) -> None:
        """Add the counts of one batch or volume.

        Args:
            pred: predicted masks (bool or 0/1 integers), organs along ``channel_dim``.
            target: reference masks, same shape.
            channel_dim: the organ axis.
        """
        tp, fp, fn = organ_counts(pred, target, channel_dim)
        if tp.numel() != self.n_organs:
            raise ValueError(f"expected {self.n_organs} organ channels, got {tp.numel()}")
        self.tp += tp.cpu().numpy()
        self.fp += fp.cpu().numpy()
        self.fn += fn.cpu().numpy()

    def dice(self, empty_value: float = math.nan) -> np.ndarray:
        """Dice per organ over everything added, float64 ``[n]``; ``empty_value`` if absent."""
        return _dice_from_counts(
            torch.from_numpy(self.tp),
            torch.from_numpy(self.fp),
            torch.from_numpy(self.fn),
            empty_value,
        ).numpy()

    def mean_dice(self) -> float:
        """Mean Dice over the organs present in prediction or reference (nan if none is)."""
        dice = self.dice()
        return float(np.nanmean(dice)) if np.isfinite(dice).any() else math.nan


def hd95_mm(
    predicted: np.ndarray, reference: np.ndarray, spacing_zyx: tuple[float, ...] | list[float]
) -> float | None:
    """95th percentile Hausdorff distance between two masks' surfaces, in mm.

    MONAI's ``compute_hausdorff_distance`` (symmetric: the larger of the two directed 95th
    percentiles of surface-to-surface distances), on the bounding box of both masks plus one
    voxel, so that a small organ in a large scan costs little.

    Args:
        predicted: bool mask ``[z, y, x]``.
        reference: bool mask, same shape.
        spacing_zyx: voxel size in mm along the array's axes.

    Returns:
        The distance, or None when either mask is empty (no surface to measure).
    """
    import warnings

    from monai.metrics import compute_hausdorff_distance

    predicted, reference = np.asarray(predicted, bool), np.asarray(reference, bool)
    if predicted.shape != reference.shape:
        raise ValueError(f"masks differ in shape: {predicted.shape} vs {reference.shape}")
    if not predicted.any() or not reference.any():
        return None
    either = np.argwhere(predicted | reference)
    low = np.maximum(either.min(axis=0) - 1, 0)
    high = either.max(axis=0) + 2
    box = tuple(slice(int(a), int(b)) for a, b in zip(low, high, strict=True))

    def as_batch(mask: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(mask[box]))[None, None]

    with warnings.catch_warnings():
        # MONAI warns about its own deprecated internals on every call.
        warnings.simplefilter("ignore", FutureWarning)
        distance = compute_hausdorff_distance(
            as_batch(predicted),
            as_batch(reference),
            include_background=True,
            percentile=95,
            spacing=[float(s) for s in spacing_zyx],
        )
    return float(distance.reshape(-1)[0])
