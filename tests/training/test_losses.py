"""BCETverskyLoss: perfect prediction, alpha/beta weighting, the BCE term."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vetseg.training.losses import BCETverskyLoss

SURE = 30.0  # |logit| at which sigmoid is 0 or 1 to float precision


def _logits(mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, SURE, -SURE)


def _masks() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Target with 12 pixels in channel 0; a prediction with 4 extra, one with 4 missing."""
    target = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    target[0, 0, 2:5, 2:6] = True  # 12 pixels
    with_fp = target.clone()
    with_fp[0, 0, 6, 2:6] = True  # TP 12, FP 4
    with_fn = target.clone()
    with_fn[0, 0, 4, 2:6] = False  # TP 8, FN 4
    return target, with_fp, with_fn


def test_perfect_prediction_costs_nothing() -> None:
    target = torch.zeros(2, 3, 16, 16, dtype=torch.bool)
    target[0, 0, 2:6, 2:6] = True
    target[1, 1, 8:, :4] = True  # channel 2 is empty everywhere
    loss = BCETverskyLoss(alpha=0.3, beta=0.7)
    assert loss(_logits(target), target).item() < 1e-4
    assert loss(_logits(~target), target).item() > 1.0


def test_tversky_term_matches_hand_computation() -> None:
    target, with_fp, with_fn = _masks()
    loss = BCETverskyLoss(alpha=0.3, beta=0.7, bce_weight=0.0)
    # Tversky index = TP / (TP + alpha FP + beta FN)
    fp_cost = loss(_logits(with_fp), target).item()
    fn_cost = loss(_logits(with_fn), target).item()
    assert fp_cost == pytest.approx(1 - 12 / (12 + 0.3 * 4), abs=1e-4)
    assert fn_cost == pytest.approx(1 - 8 / (8 + 0.7 * 4), abs=1e-4)


def test_alpha_weights_false_positives_and_beta_false_negatives() -> None:
    target, _, with_fn = _masks()
    # Same TP (8) and an error of the same size (4 pixels): one false positive, one negative.
    target_small = with_fn
    fp_only = target_small.clone()
    fp_only[0, 0, 6, 2:6] = True  # TP 8, FP 4
    fn_only = target_small  # predicted, against the full target: TP 8, FN 4
    recall_first = BCETverskyLoss(alpha=0.3, beta=0.7, bce_weight=0.0)
    fp_cost = recall_first(_logits(fp_only), target_small).item()
    fn_cost = recall_first(_logits(fn_only), target).item()
    assert fp_cost < fn_cost
    assert fp_cost == pytest.approx(1 - 8 / (8 + 0.3 * 4), abs=1e-4)
    assert fn_cost == pytest.approx(1 - 8 / (8 + 0.7 * 4), abs=1e-4)
    precision_first = BCETverskyLoss(alpha=0.7, beta=0.3, bce_weight=0.0)
    assert precision_first(_logits(fp_only), target_small) > precision_first(
        _logits(fn_only), target
    )


def test_counts_pool_over_the_batch() -> None:
    # Organ present in one slice of two: batch pooling scores the organ once, over both slices.
    target = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    target[0, 0, :4, :4] = True  # 16 pixels, slice 1 empty
    pred = target.clone()
    pred[1, 0, 0, :2] = True  # 2 false positives on the empty slice
    loss = BCETverskyLoss(alpha=0.5, beta=0.5, bce_weight=0.0)
    assert loss(_logits(pred), target).item() == pytest.approx(1 - 16 / (16 + 0.5 * 2), abs=1e-4)


def test_bce_term_matches_torch() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8)
    target = torch.rand(2, 3, 8, 8) > 0.7
    bce_only = BCETverskyLoss(tversky_weight=0.0)
    expected = F.binary_cross_entropy_with_logits(logits, target.float())
    torch.testing.assert_close(bce_only(logits, target), expected)
    both = BCETverskyLoss(alpha=0.3, beta=0.7, bce_weight=2.0, tversky_weight=0.5)
    tversky_only = BCETverskyLoss(alpha=0.3, beta=0.7, bce_weight=0.0)
    torch.testing.assert_close(
        both(logits, target), 2.0 * expected + 0.5 * tversky_only(logits, target)
    )


def test_gradient_is_finite_and_lowers_the_loss() -> None:
    torch.manual_seed(0)
    target = torch.rand(2, 2, 16, 16) > 0.8
    logits = torch.zeros(2, 2, 16, 16, requires_grad=True)
    loss_fn = BCETverskyLoss(alpha=0.3, beta=0.7)
    loss = loss_fn(logits, target)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    with torch.no_grad():
        stepped = logits - 1.0 * logits.grad / logits.grad.abs().max()
    assert loss_fn(stepped, target) < loss


@pytest.mark.parametrize(
    "kwargs", [{"alpha": -0.1}, {"alpha": 0.0, "beta": 0.0}, {"bce_weight": -1}]
)
def test_bad_settings_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        BCETverskyLoss(**kwargs)


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="shape"):
        BCETverskyLoss()(torch.zeros(1, 2, 8, 8), torch.zeros(1, 3, 8, 8))


# --------------------------------------------------------------------------- Dice + CE (peer)
def test_dice_ce_is_nnunets_softmax_loss_with_background_logit_zero() -> None:
    from vetseg.training.losses import DiceCELoss, organ_index

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8)
    target = torch.zeros(2, 3, 8, 8)
    target[:, 0, :3] = 1
    target[:, 2, 5:, :4] = 1
    index = organ_index(target)
    assert index.shape == (2, 8, 8) and set(index.unique().tolist()) == {0, 1, 3}
    # nnU-Net's formula with an explicit background logit b: subtracting b changes nothing.
    background = torch.randn(2, 1, 8, 8)
    full = torch.cat([background, logits + background], dim=1)
    probs = full.softmax(1)[:, 1:]
    onehot = F.one_hot(index, 4).movedim(-1, 1)[:, 1:].float()
    inter, total = (probs * onehot).sum((0, 2, 3)), (probs + onehot).sum((0, 2, 3))
    dice = ((2 * inter + 1e-5) / (total + 1e-5)).mean()
    expected = F.cross_entropy(full, index) + 1 - dice
    assert DiceCELoss()(logits, target).item() == pytest.approx(expected.item(), rel=1e-5)


def test_dice_ce_rewards_the_right_answer_and_weights_deep_supervision() -> None:
    from vetseg.training.losses import DiceCELoss, make_loss

    target = torch.zeros(1, 2, 8, 8)
    target[0, 0, :4] = 1
    target[0, 1, 4:, :4] = 1
    right = torch.where(target.bool(), SURE, -SURE)
    wrong = right.flip(1)
    loss = DiceCELoss()
    assert loss(right, target).item() < 1e-4
    assert loss(wrong, target).item() > 1.0
    assert DiceCELoss.head_weights(3).tolist() == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    stacked = torch.stack([right, wrong], dim=1)  # main head right, the coarser one wrong
    expected = (2 * loss(right, target) + loss(wrong, target)) / 3
    assert loss(stacked, target).item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="do not fit"):
        loss(right[:, :1], target)
    assert isinstance(make_loss("dice_ce"), DiceCELoss)
    assert isinstance(make_loss("bce_tversky", 0.3, 0.7), BCETverskyLoss)
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss("focal")


def test_tversky_term_equals_monais() -> None:
    from monai.losses import TverskyLoss

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 16, 16, generator=generator) * 3
    target = (torch.rand(3, 4, 16, 16, generator=generator) > 0.6).float()
    target[:, 3] = 0  # an organ in no slice of the batch
    ours = BCETverskyLoss(0.3, 0.7).tversky(logits, target)
    monai = TverskyLoss(sigmoid=True, alpha=0.3, beta=0.7, batch=True)(logits, target)
    torch.testing.assert_close(ours, monai, rtol=1e-6, atol=1e-7)


def test_summed_counts_of_two_halves_score_the_whole_batch() -> None:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 2, 8, 8, generator=generator)
    target = (torch.rand(4, 2, 8, 8, generator=generator) > 0.5).float()
    whole = BCETverskyLoss().tversky(logits, target)
    other_half: list[torch.Tensor] = []

    def add_other_half(counts: torch.Tensor) -> torch.Tensor:
        return counts + other_half[0]

    probe = BCETverskyLoss(reduce_counts=lambda counts: other_half.append(counts) or counts)
    probe.tversky(logits[2:], target[2:])  # records the other process's counts
    halves = BCETverskyLoss(reduce_counts=add_other_half).tversky(logits[:2], target[:2])
    torch.testing.assert_close(halves, whole)
