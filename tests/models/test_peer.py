"""PeerUNet: nnU-Net's 2D plan, shapes in train and eval mode, gradients, learning a toy."""

from __future__ import annotations

import pytest
import torch

from vetseg.errors import ModelFileError
from vetseg.models import PeerUNet, build_model
from vetseg.models.peer import plan_2d_unet
from vetseg.training.losses import DiceCELoss


@pytest.mark.parametrize(
    ("size", "pools", "filters"),
    [
        (32, 3, (32, 64, 128, 256)),
        (64, 4, (32, 64, 128, 256, 512)),
        (96, 4, (32, 64, 128, 256, 512)),  # 96 -> 6: a fifth pool would leave 3 < 4 pixels
        (128, 5, (32, 64, 128, 256, 512, 512)),  # capped at 512, as nnU-Net's 2D nets are
    ],
)
def test_plan_follows_nnunet_for_square_tiles(
    size: int, pools: int, filters: tuple[int, ...]
) -> None:
    plan = plan_2d_unet(size, spacing=0.5)
    assert plan.pools == pools
    assert plan.filters == filters
    assert plan.strides == ((1, 1),) + ((2, 2),) * pools
    assert all(k == (3, 3) for k in plan.kernel_sizes)
    assert plan.deep_supervision == pools - 1  # every decoder output but the coarsest
    assert size // 2**pools >= 4 and size % 2**pools == 0


def test_plan_and_model_refuse_bad_arguments() -> None:
    with pytest.raises(ValueError, match="minimum"):
        plan_2d_unet(4)
    with pytest.raises(ValueError, match="spacing"):
        plan_2d_unet(64, spacing=0.0)
    with pytest.raises(ValueError, match="n_organs"):
        PeerUNet.planned(0, 64)
    with pytest.raises(ValueError, match="deep_supervision"):
        PeerUNet(2, [[3, 3]] * 3, [[1, 1], [2, 2], [2, 2]], [8, 16, 32], deep_supervision=2)
    model = PeerUNet.planned(2, 32).eval()
    with pytest.raises(ValueError, match="multiples of 8"):
        model(torch.zeros(1, 1, 36, 36))
    with pytest.raises(ValueError, match=r"\[B, 1, H, W\]"):
        model(torch.zeros(1, 2, 32, 32))


def test_shapes_in_eval_and_train_mode() -> None:
    torch.manual_seed(0)
    model = PeerUNet.planned(3, 64)
    x = torch.randn(2, 1, 64, 64)
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 3, 64, 64)
    model.train()
    out = model(x)
    assert out.shape == (2, 1 + model.deep_supervision, 3, 64, 64)
    assert torch.isfinite(out).all()


def test_architecture_rebuilds_the_same_network() -> None:
    torch.manual_seed(0)
    model = PeerUNet.planned(4, 64, spacing=0.1)
    rebuilt = build_model(model.architecture())
    assert isinstance(rebuilt, PeerUNet)
    assert rebuilt.architecture() == model.architecture()
    rebuilt.load_state_dict(model.state_dict())  # same tensors, same shapes
    with pytest.raises(ModelFileError, match="PeerUNet"):
        build_model({**model.architecture(), "deep_supervision": 9})


def test_deep_supervised_loss_reaches_every_parameter() -> None:
    torch.manual_seed(0)
    model = PeerUNet.planned(2, 32).train()
    target = torch.zeros(2, 2, 32, 32)
    target[:, 0, 4:12, 4:12] = 1
    target[:, 1, 20:28, 18:30] = 1
    DiceCELoss()(model(torch.randn(2, 1, 32, 32)), target).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing, f"no gradient: {missing[:5]}"


def test_learns_a_toy_and_eval_logits_decide_as_nnunet_argmax() -> None:
    torch.manual_seed(0)
    model = PeerUNet.planned(2, 32)
    image = torch.randn(4, 1, 32, 32) * 0.2
    target = torch.zeros(4, 2, 32, 32)
    image[:, :, 4:14, 4:14] += 2.0
    target[:, 0, 4:14, 4:14] = 1
    image[:, :, 18:28, 16:30] -= 2.0
    target[:, 1, 18:28, 16:30] = 1
    loss_fn = DiceCELoss()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    model.train()
    for _ in range(25):
        optimiser.zero_grad()
        loss = loss_fn(model(image), target)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    with torch.no_grad():
        logits = model(image)
    # vetseg's rule (largest logit, if positive) is the softmax argmax over [0, logits].
    best, index = logits.max(dim=1)
    labels = torch.where(best > 0, index + 1, torch.zeros_like(index))
    softmax_argmax = torch.cat([torch.zeros_like(logits[:, :1]), logits], dim=1).argmax(dim=1)
    assert torch.equal(labels, softmax_argmax)
    truth = (target * torch.tensor([1, 2]).view(1, 2, 1, 1)).amax(dim=1).long()
    assert (labels == truth).float().mean() > 0.9


def test_state_dict_stores_each_tensor_once_and_round_trips(tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    model = PeerUNet.planned(2, 32)
    state = model.state_dict()
    assert not any(key.startswith("net.skip_layers.") for key in state)
    pointers = [t.data_ptr() for t in state.values()]
    assert len(set(pointers)) == len(pointers)
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "w.safetensors")
    torch.manual_seed(1)
    other = PeerUNet.planned(2, 32).eval()
    other.load_state_dict(load_file(tmp_path / "w.safetensors"))
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), other(x))  # forward runs through the aliases
