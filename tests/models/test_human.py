"""HumanOrganNet: shapes, BatchNorm momentum everywhere, bad inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vetseg.models import HumanOrganNet


@pytest.fixture(scope="module")
def human() -> HumanOrganNet:
    torch.manual_seed(0)
    return HumanOrganNet(n_organs=3)


def test_forward_shape_and_finite(human: HumanOrganNet) -> None:
    human.train()
    logits = human(torch.randn(2, 1, 64, 64))
    assert logits.shape == (2, 3, 64, 64)
    assert logits.is_contiguous()
    assert torch.isfinite(logits).all()
    human.eval()
    with torch.no_grad():
        assert torch.isfinite(human(torch.randn(1, 1, 64, 96))).all()


@pytest.mark.parametrize(("height", "width"), [(64, 64), (32, 96)])
def test_encode_shapes(human: HumanOrganNet, height: int, width: int) -> None:
    human.eval()
    with torch.no_grad():
        f_stem, f_body = human.encode(torch.randn(1, 1, height, width))
    assert f_stem.shape == (1, 16, height, width)
    assert f_body.shape == (1, 16, height // 2, width // 2)


@pytest.mark.parametrize("momentum", [0.1, 0.3])
def test_every_batchnorm_uses_bn_momentum(momentum: float) -> None:
    model = HumanOrganNet(n_organs=2, encoder="efficientnet-b0", bn_momentum=momentum)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    encoder_norms = [
        m for m in model.body.encoder.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    assert len(encoder_norms) > 40  # the EfficientNet's own BN layers are among them
    assert {m.momentum for m in norms} == {momentum}


def test_encoder_classification_head_is_dropped(human: HumanOrganNet) -> None:
    # Parameters that never receive a gradient would break "grad reaches every parameter".
    names = [name for name, _ in human.named_parameters()]
    assert not any("_fc" in name or "_conv_head" in name for name in names)
    human.train()
    human.zero_grad()
    human(torch.randn(2, 1, 64, 64)).sum().backward()
    missing = [n for n, p in human.named_parameters() if p.grad is None]
    assert missing == []


def test_parts_and_options(human: HumanOrganNet) -> None:
    assert human.PARTS == ("stem", "body", "head")
    assert human.trainable_parts() == human.PARTS
    assert human.stem[0].in_channels == 1 and human.stem[0].stride == (1, 1)
    assert human.head.out_channels == 3


@pytest.mark.parametrize("shape", [(1, 1, 60, 64), (1, 3, 64, 64), (1, 64, 64)])
def test_bad_input_shape_raises(human: HumanOrganNet, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        human(torch.randn(*shape))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_organs": 0},
        {"n_organs": 2, "encoder": "resnet50"},
        {"n_organs": 2, "decoder_channels": (16,)},
    ],
)
def test_bad_options_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        HumanOrganNet(**kwargs)


def _disk_batch(generator: torch.Generator, n: int = 8, size: int = 64) -> tuple[torch.Tensor, ...]:
    """Noisy slices with one bright disk each, and the disk masks."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    cy, cx = torch.randint(16, 48, (2, n, 1, 1), generator=generator)
    radius = torch.randint(6, 12, (n, 1, 1), generator=generator)
    disk = (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2
    image = torch.randn(n, size, size, generator=generator) * 0.3 + disk * 1.5 - 0.5
    return image.unsqueeze(1), disk.unsqueeze(1)


@pytest.mark.slow
def test_eval_mode_dice_after_a_short_run() -> None:
    """DESIGN's known trap: with MONAI's BN momentum 0.01 this run gives eval Dice ~0.2."""
    from vetseg.training.losses import BCETverskyLoss
    from vetseg.training.metrics import DiceAccumulator

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = HumanOrganNet(n_organs=1)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = BCETverskyLoss()
    for _ in range(20):
        image, mask = _disk_batch(generator)
        optimiser.zero_grad()
        loss_fn(model(image), mask).backward()
        optimiser.step()
    model.eval()
    accumulator = DiceAccumulator(1)
    with torch.no_grad():
        for _ in range(2):
            image, mask = _disk_batch(generator)
            accumulator.update(model(image) > 0, mask)
    assert accumulator.dice()[0] > 0.6
