"""Naive fine-tuning baseline: ``HumanOrganNet.from_human`` (human stem and body, new head)."""

from __future__ import annotations

import pytest
import torch

from tests.models.helpers import bn_buffers, buffers_equal
from vetseg.models import HumanOrganNet, build_model
from vetseg.training.losses import BCETverskyLoss


@pytest.fixture(scope="module")
def trained_human() -> HumanOrganNet:
    """A small human model whose weights and BN statistics moved from their initial values."""
    torch.manual_seed(0)
    human = HumanOrganNet(n_organs=3, encoder="efficientnet-b0")
    optimiser = torch.optim.SGD(human.parameters(), lr=0.01)
    for _ in range(2):
        optimiser.zero_grad()
        human(torch.randn(2, 1, 32, 32)).mean().backward()
        optimiser.step()
    return human.eval()


def _toy() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(3)
    image = torch.randn(4, 1, 32, 32) * 0.2
    target = torch.zeros(4, 2, 32, 32)
    image[:, :, 4:16, 4:16] += 2.0
    target[:, 0, 4:16, 4:16] = 1
    image[:, :, 18:30, 14:30] -= 2.0
    target[:, 1, 18:30, 14:30] = 1
    return image, target


def test_copies_stem_and_body_and_gets_a_new_head(trained_human: HumanOrganNet) -> None:
    torch.manual_seed(1)
    naive = HumanOrganNet.from_human(trained_human, n_organs=2)
    for part in ("stem", "body"):
        source = getattr(trained_human, part).state_dict()
        copied = getattr(naive, part).state_dict()
        assert source.keys() == copied.keys()
        assert all(torch.equal(source[k], copied[k]) for k in source), part
        for name, param in getattr(naive, part).named_parameters():
            assert param.data_ptr() != getattr(trained_human, part).get_parameter(name).data_ptr()
    assert naive.head.out_channels == 2 and naive.n_organs == 2
    # No fusion and no scSE module: the human architecture itself, nothing frozen.
    assert naive.PARTS == ("stem", "body", "head")
    assert naive.frozen_parts() == () and naive.training
    assert build_model(naive.architecture()).architecture() == naive.architecture()
    naive.eval()
    with torch.no_grad():
        assert naive(torch.randn(1, 1, 64, 32)).shape == (1, 2, 64, 32)


def test_gradients_reach_the_transferred_parts(trained_human: HumanOrganNet) -> None:
    naive = HumanOrganNet.from_human(trained_human, n_organs=2).train()
    image, target = _toy()
    BCETverskyLoss(0.3, 0.7)(naive(image), target).backward()
    for part in ("stem", "body", "head"):
        params = list(getattr(naive, part).named_parameters())
        missing = [n for n, p in params if p.grad is None or not p.grad.any()]
        assert not missing, f"{part}: no gradient for {missing[:3]}"


def test_all_layers_train_and_the_loss_falls(trained_human: HumanOrganNet) -> None:
    torch.manual_seed(2)
    naive = HumanOrganNet.from_human(trained_human, n_organs=2).train()
    body_stats = bn_buffers(naive.body)
    stem_before = {k: v.clone() for k, v in naive.stem.state_dict().items()}
    image, target = _toy()
    loss_fn = BCETverskyLoss(0.3, 0.7)
    optimiser = torch.optim.Adam(naive.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        optimiser.zero_grad()
        loss = loss_fn(naive(image), target)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    # Unlike vetseg's frozen epochs, the human parts move from the first step.
    assert not buffers_equal(body_stats, bn_buffers(naive.body))
    assert not buffers_equal(stem_before, naive.stem.state_dict())
    # ... and the human model they came from does not.
    assert naive.stem[0].weight.data_ptr() != trained_human.stem[0].weight.data_ptr()
