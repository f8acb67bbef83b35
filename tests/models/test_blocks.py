"""Building blocks: shapes, scSE = cSE + sSE, residual rule, attention variants."""

from __future__ import annotations

import pytest
import torch
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


def test_scse_equals_cse_plus_sse() -> None:
    torch.manual_seed(0)
    scse = SCSE(16)
    x = torch.randn(2, 16, 8, 8)
    expected = scse.cse(x) + scse.sse(x)
    torch.testing.assert_close(scse(x), expected)
    # And it is neither branch alone.
    assert not torch.allclose(scse(x), scse.cse(x))


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
    out = block(x)
    assert out.shape == (1, out_ch, 16 // stride, 16 // stride)
    assert block.use_residual is residual
    if residual:
        # Zero the projection BN's affine output: the block then returns its input exactly.
        nn.init.zeros_(block.project[1].weight)
        nn.init.zeros_(block.project[1].bias)
        torch.testing.assert_close(block(x), x)


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
