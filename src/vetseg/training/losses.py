"""Training losses: vetseg's BCE + Tversky, and nnU-Net's Dice + cross-entropy for the peer.

:class:`BCETverskyLoss` (every vetseg stage). The Tversky index of one organ channel is
``TP / (TP + alpha FP + beta FN)`` with soft counts from the sigmoid probabilities, summed over
the batch and the pixels (DESIGN section 4): alpha weights false positives, beta false
negatives, so ``beta > alpha`` favours recall, which helps small organs. The loss averages
``1 - index`` over the organ channels; a channel empty in both target and prediction costs
nothing.

The counts are MONAI's ``TverskyLoss(sigmoid=True, batch=True)`` (tested equal); computed here
so that data-parallel training can sum them over the processes (``reduce_counts``) and score
the batch of all processes together, as one process with the combined batch would.

:class:`DiceCELoss` (the peer baseline, :mod:`vetseg.models.peer`): nnU-Net's loss, soft Dice
over the organ channels pooled over the batch plus cross-entropy of a softmax over background
and organs, with deep supervision. :func:`make_loss` picks one by ``StageConfig.loss``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

#: ``StageConfig.loss`` values.
LOSSES: tuple[str, ...] = ("bce_tversky", "dice_ce")


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


def organ_index(target: torch.Tensor) -> torch.Tensor:
    """Per-pixel class index from exclusive organ masks: 0 background, ``i + 1`` organ ``i``.

    Args:
        target: ``[B, n_organs, H, W]`` binary masks.

    Returns:
        ``[B, H, W]`` int64.
    """
    ids = torch.arange(1, target.shape[1] + 1, device=target.device).view(1, -1, 1, 1)
    return (target.to(torch.int64) * ids).amax(dim=1)


class DiceCELoss(nn.Module):
    """nnU-Net's loss: cross-entropy + soft Dice of a softmax over background and organs.

    The model's outputs are organ-against-background logits (:mod:`vetseg.models.peer`): the
    softmax is taken over ``[0, logits]``, i.e. the background logit is 0, which is nnU-Net's
    softmax after subtracting the background logit from every class. Dice as nnU-Net's
    ``MemoryEfficientSoftDiceLoss`` for 2D: organ channels only (no background), counts pooled
    over the batch, smoothing 1e-5 in numerator and denominator; the loss is ``CE + (1 - Dice)``.

    Deep supervision: an output ``[B, S, n_organs, H, W]`` (S heads, the main one first, all at
    full size) is scored per head with weights ``1, 1/2, 1/4, ...`` normalised to sum 1.

    Args:
        smooth: Dice smoothing.
    """

    def __init__(self, smooth: float = 1e-5) -> None:
        super().__init__()
        self.smooth = float(smooth)

    @staticmethod
    def head_weights(count: int) -> torch.Tensor:
        """Deep-supervision weights ``2**-i`` of ``count`` heads, normalised to sum 1."""
        weights = torch.tensor([0.5**i for i in range(count)])
        return weights / weights.sum()

    def _single(self, logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        background = logits.new_zeros((logits.shape[0], 1, *logits.shape[2:]))
        full = torch.cat([background, logits], dim=1)
        ce = F.cross_entropy(full, index)
        probs = torch.softmax(full, dim=1)[:, 1:]
        truth = F.one_hot(index, full.shape[1]).movedim(-1, 1)[:, 1:].to(probs.dtype)
        dims = (0, 2, 3)
        intersect = (probs * truth).sum(dims)
        total = probs.sum(dims) + truth.sum(dims)
        dice = (2.0 * intersect + self.smooth) / (total + self.smooth).clamp_min(1e-8)
        return ce + (1.0 - dice.mean())

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The scalar loss.

        Args:
            logits: ``[B, n_organs, H, W]``, or ``[B, S, n_organs, H, W]`` with deep supervision.
            target: ``[B, n_organs, H, W]`` exclusive binary masks.

        Returns:
            A scalar tensor.
        """
        if logits.ndim == 4:
            logits = logits.unsqueeze(1)
        if logits.ndim != 5 or logits.shape[:1] + logits.shape[2:] != target.shape:
            raise ValueError(
                f"logits {tuple(logits.shape)} do not fit target {tuple(target.shape)}"
            )
        index = organ_index(target)
        weights = self.head_weights(logits.shape[1])
        return sum(
            (w * self._single(logits[:, i], index) for i, w in enumerate(weights.tolist())),
            logits.new_zeros(()),
        )


def make_loss(
    name: str,
    tversky_alpha: float = 0.5,
    tversky_beta: float = 0.5,
    reduce_counts: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> nn.Module:
    """The training loss by name (``StageConfig.loss``): ``"bce_tversky"`` or ``"dice_ce"``.

    ``reduce_counts`` (data-parallel training) applies to BCE + Tversky; the peer's Dice + CE
    is trained in one process (a torchrun run of it is refused).

    Raises:
        ValueError: an unknown name.
    """
    if name == "bce_tversky":
        return BCETverskyLoss(tversky_alpha, tversky_beta, reduce_counts=reduce_counts)
    if name == "dice_ce":
        if reduce_counts is not None:
            raise ValueError(
                "the dice_ce loss (peer baseline) is not data-parallel; run it in one process"
            )
        return DiceCELoss()
    raise ValueError(f"unknown loss {name!r}; expected one of {LOSSES}")
