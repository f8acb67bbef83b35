"""AnimalOrganNet: transfer from the human model, shapes, freezing by part name."""

from __future__ import annotations

import pytest
import torch

from tests.models.helpers import bn_buffers, buffers_equal
from vetseg.models import AnimalOrganNet, HumanOrganNet


@pytest.fixture(scope="module")
def trained_human() -> HumanOrganNet:
    """A human model whose BN statistics and weights moved away from their initial values."""
    torch.manual_seed(0)
    human = HumanOrganNet(n_organs=3)
    optimiser = torch.optim.SGD(human.parameters(), lr=0.01)
    for _ in range(2):
        optimiser.zero_grad()
        human(torch.randn(2, 1, 64, 64)).mean().backward()
        optimiser.step()
    return human


@pytest.fixture
def animal(trained_human: HumanOrganNet) -> AnimalOrganNet:
    torch.manual_seed(1)
    return AnimalOrganNet.from_human(trained_human, n_organs=4)


def test_from_human_copies_stem_and_body_exactly(
    trained_human: HumanOrganNet, animal: AnimalOrganNet
) -> None:
    for part in ("stem", "body"):
        human_state = getattr(trained_human, part).state_dict()
        animal_state = getattr(animal, part).state_dict()
        assert human_state.keys() == animal_state.keys()
        for key, value in human_state.items():
            assert torch.equal(value, animal_state[key]), f"{part}.{key} differs"
    # The copied running statistics are not the initial ones, so equality above means a copy.
    running_means = [k for k in trained_human.body.state_dict() if k.endswith("running_mean")]
    assert any(trained_human.body.state_dict()[k].abs().sum() > 0 for k in running_means)
    assert animal.head.out_channels == 4
    assert not hasattr(animal, "human_head")


def test_from_human_copies_are_independent(
    trained_human: HumanOrganNet, animal: AnimalOrganNet
) -> None:
    human_before = {k: v.clone() for k, v in trained_human.state_dict().items()}
    with torch.no_grad():
        for tensor in animal.stem.state_dict().values():
            tensor.add_(1)
        for tensor in animal.body.state_dict().values():
            tensor.add_(1)
    assert buffers_equal(human_before, trained_human.state_dict())
    for name, param in trained_human.body.named_parameters():
        assert param.data_ptr() != animal.body.get_parameter(name).data_ptr()


def test_same_output_as_human_features(
    trained_human: HumanOrganNet, animal: AnimalOrganNet
) -> None:
    trained_human.eval()
    animal.eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        f_stem, f_body = trained_human.encode(x)
        features = animal.intermediates(x)
    torch.testing.assert_close(features["F_stem"], f_stem)
    upsampled = torch.nn.functional.interpolate(
        f_body, scale_factor=2.0, mode="bilinear", align_corners=False
    )
    torch.testing.assert_close(features["F1"], upsampled)


@pytest.mark.parametrize(("height", "width"), [(64, 64), (32, 64)])
def test_intermediate_shapes(animal: AnimalOrganNet, height: int, width: int) -> None:
    animal.eval()
    with torch.no_grad():
        features = animal.intermediates(torch.randn(1, 1, height, width))
        logits = animal(torch.randn(1, 1, height, width))
    expected_channels = {"F_stem": 16, "F1": 16, "F3": 32, "F4": 16, "F5": 16, "logits": 4}
    for name, channels in expected_channels.items():
        assert features[name].shape == (1, channels, height, width), name
        assert torch.isfinite(features[name]).all(), name
    assert logits.shape == (1, 4, height, width)


def test_forward_equals_intermediates_logits(animal: AnimalOrganNet) -> None:
    animal.eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        logits = animal(x)
        torch.testing.assert_close(logits, animal.intermediates(x)["logits"])
    # Inner features run channels-last for speed; callers get a plain contiguous tensor.
    assert logits.is_contiguous()


@pytest.mark.parametrize(
    ("refine_blocks", "attention", "module_name"),
    [(2, "scse", "SCSE"), (3, "se", "ChannelSE"), (1, "none", "Identity"), (0, "scse", None)],
)
def test_refine_variants(
    trained_human: HumanOrganNet, refine_blocks: int, attention: str, module_name: str | None
) -> None:
    model = AnimalOrganNet.from_human(
        trained_human, n_organs=2, refine_blocks=refine_blocks, attention=attention
    )
    assert len(model.refine) == refine_blocks
    if module_name is not None:
        assert all(type(block.attention).__name__ == module_name for block in model.refine)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 2, 32, 32)


def test_parts_are_named(animal: AnimalOrganNet) -> None:
    assert animal.PARTS == ("stem", "body", "upsample", "fuse", "refine", "head")
    for part in animal.PARTS:
        assert isinstance(getattr(animal, part), torch.nn.Module)
    assert animal.fuse[0].in_channels == 32 and animal.fuse[0].out_channels == 16


def _backward(model: AnimalOrganNet) -> None:
    model.zero_grad(set_to_none=True)
    model(torch.randn(2, 1, 64, 64)).square().mean().backward()


def test_gradients_reach_every_parameter_when_nothing_is_frozen(animal: AnimalOrganNet) -> None:
    animal.train()
    _backward(animal)
    assert [n for n, p in animal.named_parameters() if p.grad is None] == []


def test_freeze_body_blocks_gradients_only_there(animal: AnimalOrganNet) -> None:
    animal.freeze(["body"])
    assert animal.frozen_parts() == ("body",)
    assert animal.trainable_parts() == ("stem", "upsample", "fuse", "refine", "head")
    animal.train()
    _backward(animal)
    for name, param in animal.named_parameters():
        if name.startswith("body."):
            assert param.grad is None and not param.requires_grad, name
        else:
            assert param.grad is not None, name
    # The stem sits before the frozen body and still learns through the skip concatenation.
    assert any(p.grad.abs().sum() > 0 for p in animal.stem.parameters())


def test_frozen_body_keeps_batchnorm_statistics(animal: AnimalOrganNet) -> None:
    animal.freeze("body")
    animal.train()
    body_before = bn_buffers(animal.body)
    fuse_before = bn_buffers(animal.fuse)
    optimiser = torch.optim.Adam([p for p in animal.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(2):
        optimiser.zero_grad()
        animal(torch.randn(2, 1, 64, 64)).mean().backward()
        optimiser.step()
        animal.train()  # a trainer calls this every epoch: the body must stay in eval mode
    assert not animal.body.training
    assert all(not m.training for m in animal.body.modules())
    assert animal.fuse.training
    assert buffers_equal(body_before, bn_buffers(animal.body))
    assert not buffers_equal(fuse_before, bn_buffers(animal.fuse))  # the check can fail


def test_unfreeze_all_restores_training(animal: AnimalOrganNet) -> None:
    animal.freeze(["stem", "body"])
    animal.unfreeze_all()
    assert animal.trainable_parts() == animal.PARTS
    assert all(p.requires_grad for p in animal.parameters())
    animal.train()
    assert all(m.training for m in animal.modules())
    body_before = bn_buffers(animal.body)
    _backward(animal)
    assert not buffers_equal(body_before, bn_buffers(animal.body))
    assert all(p.grad is not None for p in animal.body.parameters())


def test_eval_then_train_with_nothing_frozen(animal: AnimalOrganNet) -> None:
    animal.eval()
    assert not any(m.training for m in animal.modules())
    animal.train()
    assert all(m.training for m in animal.modules())


def test_freeze_unknown_part_raises(animal: AnimalOrganNet) -> None:
    with pytest.raises(ValueError, match="encoder"):
        animal.freeze(["encoder"])
    assert animal.frozen_parts() == ()


def test_from_human_of_a_frozen_human_is_not_frozen(trained_human: HumanOrganNet) -> None:
    trained_human.freeze(["body"])
    try:
        model = AnimalOrganNet.from_human(trained_human, n_organs=2)
    finally:
        trained_human.unfreeze_all()
    assert all(p.requires_grad for p in model.parameters())
    assert model.training and model.body.training


@pytest.mark.slow
def test_patent_shapes_at_512(animal: AnimalOrganNet) -> None:
    animal.eval()
    with torch.no_grad():
        features = animal.intermediates(torch.randn(1, 1, 512, 512))
    assert features["F_stem"].shape == (1, 16, 512, 512)
    assert features["F3"].shape == (1, 32, 512, 512)
    assert features["F4"].shape == features["F5"].shape == (1, 16, 512, 512)
