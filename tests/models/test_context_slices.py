"""Neighbouring slices as extra input channels: the widened stem, its transfer, bad values."""

from __future__ import annotations

import pytest
import torch

from vetseg.config import PreprocessConfig
from vetseg.errors import InputError
from vetseg.models import AnimalOrganNet, HumanOrganNet
from vetseg.models.factory import build_model
from vetseg.models.human import widened_stem_state

SMALL = {"decoder_channels": (32, 24, 16, 16)}


@pytest.fixture(scope="module")
def human() -> HumanOrganNet:
    """A one-channel human model whose weights and BN statistics moved from their start."""
    torch.manual_seed(0)
    model = HumanOrganNet(n_organs=3, **SMALL)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(2):
        optimiser.zero_grad()
        model(torch.randn(2, 1, 64, 64)).mean().backward()
        optimiser.step()
    return model.eval()


@pytest.mark.parametrize("cls", [HumanOrganNet, AnimalOrganNet])
@pytest.mark.parametrize("channels", [1, 3, 5])
def test_shapes_for_each_stem_width(cls: type, channels: int) -> None:
    torch.manual_seed(0)
    model = cls(n_organs=4, in_channels=channels, **SMALL).eval()
    assert model.stem[0].weight.shape[1] == channels
    with torch.no_grad():
        out = model(torch.randn(2, channels, 64, 64))
    assert out.shape == (2, 4, 64, 64)
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match=rf"expected input \[B, {channels}, H, W\]"):
        model(torch.randn(2, channels + 2, 64, 64))


def test_gradients_reach_every_stem_channel() -> None:
    torch.manual_seed(0)
    model = AnimalOrganNet(n_organs=2, in_channels=3, **SMALL)
    model(torch.randn(2, 3, 64, 64)).mean().backward()
    grad = model.stem[0].weight.grad
    assert grad is not None and (grad.abs().sum(dim=(0, 2, 3)) > 0).all()


@pytest.mark.parametrize("channels", [3, 5])
def test_centre_only_init_equals_the_one_channel_model(human: HumanOrganNet, channels: int) -> None:
    torch.manual_seed(1)
    one = AnimalOrganNet.from_human(human, n_organs=4, refine_blocks=1).eval()
    torch.manual_seed(1)
    wide = AnimalOrganNet.from_human(human, n_organs=4, refine_blocks=1, in_channels=channels)
    wide.eval()
    # The new parts are random (a wider stem draws more numbers first): the same for both.
    for part in ("fuse", "refine", "head"):
        getattr(wide, part).load_state_dict(getattr(one, part).state_dict())
    weight = wide.stem[0].weight
    centre = channels // 2
    assert torch.equal(weight[:, centre], human.stem[0].weight[:, 0])
    assert torch.count_nonzero(torch.cat([weight[:, :centre], weight[:, centre + 1 :]], 1)) == 0
    stack = torch.randn(2, channels, 64, 64)  # neighbours unlike the slice: they must not count
    with torch.no_grad():
        expected = one(stack[:, centre : centre + 1])
        got = wide(stack)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_naive_transfer_widens_the_stem_alike(human: HumanOrganNet) -> None:
    torch.manual_seed(2)
    one = HumanOrganNet.from_human(human, n_organs=2).eval()
    torch.manual_seed(2)
    wide = HumanOrganNet.from_human(human, n_organs=2, in_channels=3).eval()
    wide.head.load_state_dict(one.head.state_dict())
    stack = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(wide(stack), one(stack[:, 1:2]), rtol=1e-5, atol=1e-5)


def test_architecture_record_round_trip() -> None:
    one = AnimalOrganNet(n_organs=2, **SMALL)
    assert "in_channels" not in one.architecture()  # the record older versions wrote
    assert build_model(one.architecture()).in_channels == 1
    wide = AnimalOrganNet(n_organs=2, in_channels=3, **SMALL)
    record = wide.architecture()
    assert record["in_channels"] == 3
    rebuilt = build_model(record)
    assert rebuilt.in_channels == 3 and rebuilt.stem[0].weight.shape[1] == 3


@pytest.mark.parametrize("channels", [0, 2, -1, 1.5, True])
def test_bad_stem_widths_are_refused(channels: object) -> None:
    with pytest.raises(ValueError, match="in_channels"):
        HumanOrganNet(n_organs=2, in_channels=channels, **SMALL)  # type: ignore[arg-type]


def test_only_a_one_channel_stem_is_widened(human: HumanOrganNet) -> None:
    three = AnimalOrganNet.from_human(human, n_organs=2, in_channels=3)
    with pytest.raises(ValueError, match="one-channel stem"):
        widened_stem_state(three.stem.state_dict(), 5)
    wide_human = HumanOrganNet(n_organs=3, in_channels=3, **SMALL)
    with pytest.raises(ValueError, match="3 input channels cannot become one of 5"):
        AnimalOrganNet.from_human(wide_human, n_organs=2, in_channels=5)
    # A wide human model transfers into the same width as it is.
    assert AnimalOrganNet.from_human(wide_human, n_organs=2).in_channels == 3


@pytest.mark.parametrize("value", [-1, 9, 1.5, True, "1"])
def test_bad_context_settings_are_refused_clearly(value: object) -> None:
    with pytest.raises(InputError, match="context slices must be a whole number from 0 to 8"):
        PreprocessConfig(context_slices=value)  # type: ignore[arg-type]
    assert PreprocessConfig().in_channels == 1
    assert PreprocessConfig(context_slices=2).in_channels == 5
