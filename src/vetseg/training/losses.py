"""Training loss: binary cross-entropy + Tversky loss on per-organ sigmoid outputs.

The Tversky index of one organ channel is ``TP / (TP + alpha FP + beta FN)`` with soft counts
from the sigmoid probabilities, summed over the batch and the pixels (DESIGN section 4): alpha
weights false positives, beta false negatives, so ``beta > alpha`` favours recall, which helps
small organs. The loss averages ``1 - index`` over the organ channels; a channel empty in both
target and prediction costs nothing.

The counts are MONAI's ``TverskyLoss(sigmoid=True, batch=True)`` (tested equal); computed here
so that data-parallel training can sum them over the processes (``reduce_counts``) and score
the batch of all processes together, as one process with the combined batch would.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class BCETverskyLoss(nn.Module):
    """``bce_weight * BCEWithLogits + tversky_weight * (1 - Tversky index)``.

    Args:
        alpha: Tversky weight of false positives (S100 default 0.5, S101/S103 0.3).
        beta: Tversky weight of false negatives (S100 default 0.5, S101/S103 0.7).
        bce_weight: weight of the binary cross-entropy term.
        tversky_weight: weight of the Tversky term.
        reduce_counts: sums the soft counts ``[3, n_organs]`` (TP, FP, FN) of this process's
            batch with those of the other processes, differentiably (data-parallel training);
            None: this batch alone.
    """

    def __init__(
        self,
        alpha: float = 0.5,
        beta: float = 0.5,
        bce_weight: float = 1.0,
        tversky_weight: float = 1.0,
        reduce_counts: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        if alpha < 0 or beta < 0 or alpha + beta == 0:
            raise ValueError(f"Tversky alpha ({alpha}) and beta ({beta}) must be >= 0, not both 0")
        if bce_weight < 0 or tversky_weight < 0:
            raise ValueError("loss weights must not be negative")
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.bce_weight = float(bce_weight)
        self.tversky_weight = float(tversky_weight)
        self.bce = nn.BCEWithLogitsLoss()
        self.reduce_counts = reduce_counts

    def tversky(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``1 - TP / (TP + alpha FP + beta FN)`` averaged over organs.

        Counts pool over the batch and the pixels (a slice without an organ does not score that
        organ 0 on its own); MONAI's 1e-5 smoothing on both sides of the fraction.
        """
        probs = torch.sigmoid(logits)
        dims = [0, *range(2, logits.ndim)]
        tp = (probs * target).sum(dims)
        counts = torch.stack(
            (tp, (probs * (1 - target)).sum(dims), ((1 - probs) * target).sum(dims))
        )
        if self.reduce_counts is not None:
            counts = self.reduce_counts(counts)
        tp, fp, fn = counts
        index = (tp + 1e-5) / (tp + self.alpha * fp + self.beta * fn + 1e-5)
        return (1.0 - index).mean()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The scalar loss.

        Args:
            logits: ``[B, n_organs, H, W]`` raw network outputs.
            target: ``[B, n_organs, H, W]`` binary masks (bool, integer or float 0/1).

        Returns:
            A scalar tensor.
        """
        if logits.shape != target.shape:
            raise ValueError(
                f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in shape"
            )
        target = target.to(logits.dtype)
        loss = logits.new_zeros(())
        if self.bce_weight:
            loss = loss + self.bce_weight * self.bce(logits, target)
        if self.tversky_weight:
            loss = loss + self.tversky_weight * self.tversky(logits, target)
        return loss
