"""Validation cases on the model grid and their per-organ Dice, for the training loop.

Validation slices go through the input definition of training and inference
(:func:`~vetseg.data.preprocess.to_model_grid`), from decoded cases or, as the same numbers,
from a slice cache (:func:`cached_validation_cases`); prediction tiles them as inference does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from vetseg.config import PreprocessConfig
from vetseg.errors import VetsegError


@dataclass
class ValidationCase:
    """One validation case on the model grid: slices ``[z, C, H, W]``, labels ``[z, H, W]``.

    ``C`` is 1, or ``1 + 2 * context_slices`` for a model that sees neighbouring slices.

    ``H x W`` is ``size x size`` for a legacy model; for a model with a pixel spacing it is the
    slice's extent at that spacing, and prediction tiles it as inference does.
    """

    case_id: str
    images: torch.Tensor
    labels: torch.Tensor
    size: int = 0
    fill: float = 0.0
    body: float | None = None


def make_validation_cases(
    loaded_cases: Sequence[Any], preprocess: PreprocessConfig, max_slices: int | None = None
) -> list[ValidationCase]:
    """Preprocess validation cases once, with the input definition of training and inference.

    ``max_slices``: keep every k-th slice of every case (the smallest k that leaves at most
    this many in all); None keeps them all.
    """
    from vetseg.data.context import neighbour_indices
    from vetseg.data.preprocess import (
        body_level,
        inplane_offset,
        inplane_spacing,
        labels_to_model_grid,
        pad_value,
        to_model_grid,
    )

    total = sum(case.image.shape[0] for case in loaded_cases)
    stride = 1 if max_slices is None else max(1, math.ceil(total / max_slices))
    out = []
    for case in loaded_cases:
        if case.labels is None:
            raise VetsegError(f"validation case {case.case_id} has no label map.")
        meta = case.canonical_meta
        # The middle of each stride: a case of fewer slices than the stride keeps one.
        keep = slice(min(stride // 2, case.image.shape[0] - 1), None, stride)
        zs = np.arange(case.image.shape[0])[keep]
        # Every kept slice with its neighbours (only itself for a one-channel model).
        stacks = neighbour_indices(zs, case.image.shape[0], preprocess.context_slices)
        image, grid = to_model_grid(
            case.image[stacks.ravel()],
            inplane_spacing(meta.spacing),
            preprocess,
            inplane_offset(meta),
        )
        image = image.reshape(*stacks.shape, *image.shape[1:])
        labels = labels_to_model_grid(case.labels[zs], grid)
        out.append(
            ValidationCase(
                case.case_id,
                torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
                torch.from_numpy(np.ascontiguousarray(labels).astype(np.int64)),
                size=preprocess.size,
                fill=pad_value(preprocess),
                body=body_level(preprocess),
            )
        )
    return out


@torch.no_grad()
def validation_dice(
    model: nn.Module, cases: Sequence[ValidationCase], n_organs: int, batch_size: int = 16
) -> np.ndarray:
    """Per-organ Dice (rows: cases, columns: organs; NaN where the organ is absent in both)."""
    from vetseg.data.preprocess import tiled_logits
    from vetseg.training.metrics import DiceAccumulator

    device = next(model.parameters()).device

    def run(batch: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(batch).to(device)).float().cpu().numpy()

    was_training = model.training
    model.eval()
    rows = []
    organ_ids = torch.arange(1, n_organs + 1).view(1, -1, 1, 1)
    for case in cases:
        acc = DiceAccumulator(n_organs)
        size = case.size or case.images.shape[-1]
        for start in range(0, case.images.shape[0], batch_size):
            images = case.images[start : start + batch_size].numpy()
            logits = tiled_logits(run, images, size, case.fill, batch_size, case.body)
            target = case.labels[start : start + batch_size].unsqueeze(1) == organ_ids
            acc.update(logits > 0, target)
        rows.append(acc.dice())
    model.train(was_training)
    return np.asarray(rows, dtype=np.float64).reshape(len(cases), n_organs)


def nanmean(values: np.ndarray) -> float:
    """Mean over finite entries; 0.0 when there are none (nothing to segment counts as failure)."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else 0.0


def organ_mean(values: np.ndarray) -> float | None:
    """One organ's mean Dice over the cases that score it; None when no case does (the organ is
    in no validation case): recorded as null, never as a Dice of 0 it did not earn."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None


def cached_validation_cases(
    cache: Any, case_ids: Sequence[str], preprocess: PreprocessConfig, max_slices: int | None = None
) -> list[ValidationCase]:
    """:func:`make_validation_cases` of cached cases (:class:`~vetseg.data.cache.SliceCache`):
    the same strided slices with the same values, without decoding a scan."""
    from vetseg.data.context import neighbour_indices
    from vetseg.data.preprocess import apply_intensity, body_level, pad_value

    total = sum(cache.cases[cid].slices for cid in case_ids)
    stride = 1 if max_slices is None else max(1, math.ceil(total / max_slices))
    out = []
    for cid in case_ids:
        n_slices = cache.cases[cid].slices
        zs = np.arange(n_slices)[min(stride // 2, n_slices - 1) :: stride]
        stacks = neighbour_indices(zs, n_slices, preprocess.context_slices)
        images = cache.images(cid)
        image = np.stack([apply_intensity(images[stack], preprocess) for stack in stacks])
        labels = np.asarray(cache.labels(cid)[zs])
        out.append(
            ValidationCase(
                cid,
                torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
                torch.from_numpy(labels.astype(np.int64)),
                size=preprocess.size,
                fill=pad_value(preprocess),
                body=body_level(preprocess),
            )
        )
    return out
