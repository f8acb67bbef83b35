"""Hard Dice per organ and its accumulator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vetseg.training.metrics import DiceAccumulator, dice_per_organ


def _known_masks() -> tuple[torch.Tensor, torch.Tensor]:
    """Channel 0: 5 + 5 pixels, 4 shared (Dice 0.8). Channel 1: empty in both. Channel 2:
    reference only (Dice 0)."""
    pred = torch.zeros(1, 3, 4, 4, dtype=torch.bool)
    target = torch.zeros(1, 3, 4, 4, dtype=torch.bool)
    pred[0, 0, 0, :4] = True
    pred[0, 0, 1, 0] = True
    target[0, 0, 0, :4] = True
    target[0, 0, 2, 3] = True
    target[0, 2, 3, 3] = True
    return pred, target


def test_dice_of_known_masks() -> None:
    pred, target = _known_masks()
    dice = dice_per_organ(pred, target)
    assert dice.shape == (3,)
    assert dice[0].item() == 2 * 4 / (5 + 5)
    assert math.isnan(dice[1].item())
    assert dice[2].item() == 0.0
    assert dice_per_organ(pred, target, empty_value=1.0)[1].item() == 1.0


def test_channel_dim_and_numpy_and_integer_input() -> None:
    pred, target = _known_masks()
    volume_pred = pred[0].numpy().astype(np.uint8)  # [n, H, W] as a label volume would be
    volume_target = target[0].numpy()
    dice = dice_per_organ(volume_pred, volume_target, channel_dim=0)
    torch.testing.assert_close(dice, dice_per_organ(pred, target), equal_nan=True)


def test_float_input_is_refused() -> None:
    with pytest.raises(TypeError, match="boolean"):
        dice_per_organ(torch.rand(1, 2, 4, 4), torch.zeros(1, 2, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="shape"):
        dice_per_organ(torch.zeros(1, 2, 4, 4) > 0, torch.zeros(1, 3, 4, 4) > 0)


def test_accumulator_over_batches_equals_dice_of_concatenation() -> None:
    generator = torch.Generator().manual_seed(0)
    preds = [torch.rand(3, 4, 8, 8, generator=generator) > 0.6 for _ in range(2)]
    targets = [torch.rand(3, 4, 8, 8, generator=generator) > 0.6 for _ in range(2)]
    for mask in preds + targets:
        mask[:, 3] = False  # organ 3 absent from every prediction and reference
    accumulator = DiceAccumulator(4)
    for pred, target in zip(preds, targets, strict=True):
        accumulator.update(pred, target)
    expected = dice_per_organ(torch.cat(preds), torch.cat(targets)).numpy()
    np.testing.assert_allclose(accumulator.dice(), expected, equal_nan=True)
    assert math.isnan(accumulator.dice()[3])
    assert accumulator.mean_dice() == pytest.approx(float(np.mean(expected[:3])))
    # Volume-level Dice is not the mean of per-batch Dice.
    per_batch = np.mean(
        [dice_per_organ(p, t)[:3].numpy() for p, t in zip(preds, targets, strict=True)], axis=0
    )
    assert not np.allclose(per_batch, expected[:3])


def test_accumulator_organ_missed_in_one_batch_scores_zero() -> None:
    accumulator = DiceAccumulator(1)
    present = torch.ones(1, 1, 4, 4, dtype=torch.bool)
    accumulator.update(torch.zeros_like(present), present)  # missed entirely
    accumulator.update(torch.zeros_like(present), torch.zeros_like(present))  # absent
    assert accumulator.dice()[0] == 0.0


def test_accumulator_reset_and_checks() -> None:
    accumulator = DiceAccumulator(2)
    assert math.isnan(accumulator.mean_dice())
    accumulator.update(torch.ones(1, 2, 4, 4, dtype=torch.bool), torch.ones(1, 2, 4, 4) > 0)
    np.testing.assert_array_equal(accumulator.dice(), [1.0, 1.0])
    accumulator.reset()
    assert np.isnan(accumulator.dice()).all()
    with pytest.raises(ValueError, match="organ channels"):
        accumulator.update(torch.ones(1, 3, 4, 4) > 0, torch.ones(1, 3, 4, 4) > 0)
