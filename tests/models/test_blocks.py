"""Building blocks, checked against the formulas computed by hand on tiny tensors: cSE, sSE,
scSE = cSE + sSE, the conv module, the inverted residual's skip; gradients reach every
parameter; shapes and argument checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vetseg.models.blocks import (
    SCSE,
    ChannelSE,
    ConvModule,
    InvertedResidual,
    SpatialSE,
)


@pytest.mark.parametrize(
    ("in_ch", "out_ch", "repeats", "stride", "activation"),
    [(1, 16, 2, 1, "relu"), (32, 16, 1, 1, "hardswish"), (8, 4, 3, 2, "relu")],
)
def test_conv_module_shape(
    in_ch: int, out_ch: int, repeats: int, stride: int, activation: str
) -> None:
    module = ConvModule(in_ch, out_ch, repeats=repeats, stride=stride, activation=activation)
    out = module(torch.randn(2, in_ch, 32, 32))
    assert out.shape == (2, out_ch, 32 // stride, 32 // stride)
    convs = [m for m in module if isinstance(m, nn.Conv2d)]
    assert len(convs) == repeats
    assert all(conv.bias is None for conv in convs)  # BN follows every conv


def test_conv_module_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        ConvModule(1, 16, repeats=0)
    with pytest.raises(ValueError, match="activation"):
        ConvModule(1, 16, activation="gelu")  # type: ignore[arg-type]


@pytest.mark.parametrize("module_cls", [ChannelSE, SpatialSE, SCSE])
@pytest.mark.parametrize("channels", [4, 16, 64])
def test_attention_keeps_shape(module_cls: type[nn.Module], channels: int) -> None:
    x = torch.randn(2, channels, 8, 12)
    assert module_cls(channels)(x).shape == x.shape


def _randomise(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and biases everywhere (PyTorch leaves conv biases small, BN at 1 / 0)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    return module


def _cse_by_hand(module: ChannelSE, x: torch.Tensor) -> torch.Tensor:
    """x * sigmoid(W2 relu(W1 mean_hw(x) + b1) + b2), with the module's weights as matrices."""
    w1, b1 = module.reduce.weight[:, :, 0, 0], module.reduce.bias
    w2, b2 = module.expand.weight[:, :, 0, 0], module.expand.bias
    squeezed = x.mean(dim=(2, 3))  # [B, C]
    hidden = torch.clamp(squeezed @ w1.T + b1, min=0)
    gate = torch.sigmoid(hidden @ w2.T + b2)  # [B, C]
    return x * gate[:, :, None, None]


def _sse_by_hand(module: SpatialSE, x: torch.Tensor) -> torch.Tensor:
    """x * sigmoid(sum_c w_c x_c + b): one weight per channel, one gate per pixel."""
    w, b = module.conv.weight[0, :, 0, 0], module.conv.bias[0]
    gate = torch.sigmoid(torch.einsum("bchw,c->bhw", x, w) + b)
    return x * gate[:, None]


@torch.no_grad()
def test_cse_sse_and_scse_match_their_formulas() -> None:
    x = torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(1))
    cse = _randomise(ChannelSE(4), seed=2)
    sse = _randomise(SpatialSE(4), seed=3)
    torch.testing.assert_close(cse(x), _cse_by_hand(cse, x))
    torch.testing.assert_close(sse(x), _sse_by_hand(sse, x))
    scse = _randomise(SCSE(4), seed=4)
    by_hand = _cse_by_hand(scse.cse, x) + _sse_by_hand(scse.sse, x)
    torch.testing.assert_close(scse(x), by_hand)
    # Neither branch alone, nor their product: the sum the paper (and DESIGN) asks for.
    assert not torch.allclose(scse(x), _cse_by_hand(scse.cse, x), atol=1e-3)
    assert not torch.allclose(scse(x), _sse_by_hand(scse.sse, _cse_by_hand(scse.cse, x)))


@torch.no_grad()
def test_conv_module_is_conv_batchnorm_activation() -> None:
    module = _randomise(ConvModule(2, 3, repeats=2, activation="hardswish"), seed=5).eval()
    module[1].running_mean.copy_(torch.tensor([0.5, -0.2, 0.1]))
    module[1].running_var.copy_(torch.tensor([2.0, 0.5, 1.5]))
    x = torch.randn(1, 2, 6, 6, generator=torch.Generator().manual_seed(6))
    out = x
    for conv, norm in ((module[0], module[1]), (module[3], module[4])):
        out = F.conv2d(out, conv.weight, padding=1)
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        out = (out - norm.running_mean[:, None, None]) * scale[:, None, None]
        out = F.hardswish(out + norm.bias[:, None, None])
    torch.testing.assert_close(module(x), out)


@pytest.mark.parametrize(
    "make",
    [
        lambda: SCSE(8),
        lambda: ConvModule(3, 8),
        lambda: InvertedResidual(8, 8, attention="scse"),
        lambda: InvertedResidual(8, 12, expand=2, kernel=5, stride=2, attention="se"),
        lambda: InvertedResidual(8, 8, expand=1, attention="none"),
    ],
)
def test_gradients_reach_every_parameter(make) -> None:
    torch.manual_seed(0)
    module = make().train()
    in_channels = next(m for m in module.modules() if isinstance(m, nn.Conv2d)).in_channels
    x = torch.randn(2, in_channels, 8, 8, requires_grad=True)
    module(x).square().mean().backward()
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all() and parameter.grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_channel_se_gate_is_per_channel_and_spatial_se_per_pixel() -> None:
    x = torch.randn(2, 16, 8, 8)
    assert ChannelSE(16).gate(x).shape == (2, 16, 1, 1)
    assert SpatialSE(16).gate(x).shape == (2, 1, 8, 8)


@pytest.mark.parametrize(
    ("in_ch", "out_ch", "stride", "residual"),
    [(16, 16, 1, True), (16, 24, 1, False), (16, 16, 2, False)],
)
def test_inverted_residual_uses_skip_iff_shapes_allow(
    in_ch: int, out_ch: int, stride: int, residual: bool
) -> None:
    torch.manual_seed(0)
    block = InvertedResidual(in_ch, out_ch, stride=stride).eval()
    x = torch.randn(1, in_ch, 16, 16)
    branch = block.project(block.attention(block.depthwise(block.expand(x))))
    assert branch.abs().sum() > 0
    # The output is the branch plus the input exactly when the shapes allow a skip.
    torch.testing.assert_close(block(x), branch + x if residual else branch)
    assert block.use_residual is residual
    # Zero the projection BN's affine output: the block then returns its input (with the skip)
    # or nothing (without).
    nn.init.zeros_(block.project[1].weight)
    nn.init.zeros_(block.project[1].bias)
    expected = x if residual else torch.zeros(1, out_ch, 16 // stride, 16 // stride)
    torch.testing.assert_close(block(x), expected)


@pytest.mark.parametrize(
    ("attention", "expected"), [("scse", SCSE), ("se", ChannelSE), ("none", nn.Identity)]
)
@pytest.mark.parametrize(("expand", "kernel"), [(1, 3), (4, 5)])
def test_inverted_residual_attention_variants(
    attention: str, expected: type[nn.Module], expand: int, kernel: int
) -> None:
    block = InvertedResidual(16, 16, expand=expand, kernel=kernel, attention=attention)
    assert type(block.attention) is expected
    hidden = 16 * expand
    assert block.depthwise[0].kernel_size == (kernel, kernel)
    assert block.depthwise[0].groups == hidden
    x = torch.randn(2, 16, 16, 16)
    out = block(x)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()
    assert any(isinstance(m, nn.Hardswish) for m in block.modules())


def test_inverted_residual_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="attention"):
        InvertedResidual(16, 16, attention="cbam")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kernel"):
        InvertedResidual(16, 16, kernel=4)
    with pytest.raises(ValueError, match="expansion"):
        InvertedResidual(16, 16, expand=0)
