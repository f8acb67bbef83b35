"""Building blocks of vetseg's networks: conv modules, scSE attention, MobileNetV3 blocks.

- :class:`ConvModule`: (Conv3x3 -> BatchNorm -> activation) x n, the stem, fuse and decoder unit.
- :class:`ChannelSE` (cSE), :class:`SpatialSE` (sSE) and :class:`SCSE` = cSE(x) + sSE(x), the
  concurrent spatial and channel squeeze-and-excitation of Roy et al. 2018
  (https://arxiv.org/abs/1803.02579).
- :class:`InvertedResidual`: the MobileNetV3 block (Howard et al. 2019) whose SE is replaced by
  scSE; with ``attention="se"`` or ``"none"`` it is the plain MobileNetV3 block or one without
  attention (baseline variants are config values, not classes).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Activation = Literal["relu", "hardswish"]
Attention = Literal["scse", "se", "none"]

ACTIVATIONS: tuple[str, ...] = ("relu", "hardswish")
ATTENTIONS: tuple[str, ...] = ("scse", "se", "none")


def make_activation(name: str) -> nn.Module:
    """An activation layer by name: ``"relu"`` or ``"hardswish"``.

    Raises:
        ValueError: for any other name.
    """
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "hardswish":
        return nn.Hardswish(inplace=True)
    raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}")


class ConvModule(nn.Sequential):
    """``repeats`` x (Conv3x3 -> BatchNorm -> activation).

    The first convolution maps ``in_channels`` to ``out_channels`` (with ``stride``); the others
    keep ``out_channels``. Convolutions carry no bias because BatchNorm follows them.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        repeats: number of conv-BN-activation units (at least 1).
        stride: stride of the first convolution.
        activation: ``"relu"`` or ``"hardswish"``.
        bn_momentum: BatchNorm momentum of every unit.

    Shapes:
        ``[B, in_channels, H, W] -> [B, out_channels, H / stride, W / stride]``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        repeats: int = 2,
        stride: int = 1,
        activation: Activation = "relu",
        bn_momentum: float = 0.1,
    ) -> None:
        if repeats < 1:
            raise ValueError(f"ConvModule needs at least one repeat, got {repeats}")
        layers: list[nn.Module] = []
        channels = in_channels
        for index in range(repeats):
            layers += [
                nn.Conv2d(
                    channels,
                    out_channels,
                    kernel_size=3,
                    stride=stride if index == 0 else 1,
                    padding=1,
                    bias=False,
                ),
                nn.BatchNorm2d(out_channels, momentum=bn_momentum),
                make_activation(activation),
            ]
            channels = out_channels
        super().__init__(*layers)


def _squeezed_channels(channels: int, reduction: int) -> int:
    # At least 8 hidden units, as MobileNetV3 rounds its SE width: a 16-channel block with
    # reduction 4 would otherwise squeeze to 4 units, too few to model channel interplay.
    return max(8, channels // reduction)


class ChannelSE(nn.Module):
    """Channel squeeze-and-excitation (cSE): ``x * sigmoid(W2 relu(W1 avgpool(x)))``.

    Args:
        channels: input (and output) channels.
        reduction: squeeze ratio of the hidden layer.

    Shapes:
        ``[B, C, H, W] -> [B, C, H, W]``.
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = _squeezed_channels(channels, reduction)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Conv2d(channels, hidden, kernel_size=1)
        self.act = nn.ReLU(inplace=True)
        self.expand = nn.Conv2d(hidden, channels, kernel_size=1)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """Channel weights in (0, 1), ``[B, C, 1, 1]``."""
        return torch.sigmoid(self.expand(self.act(self.reduce(self.pool(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Recalibrate channels: ``[B, C, H, W] -> [B, C, H, W]``."""
        return x * self.gate(x)


class SpatialSE(nn.Module):
    """Spatial squeeze-and-excitation (sSE): ``x * sigmoid(conv1x1(x))`` with one output map.

    Args:
        channels: input (and output) channels.

    Shapes:
        ``[B, C, H, W] -> [B, C, H, W]``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, kernel_size=1)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """Pixel weights in (0, 1), ``[B, 1, H, W]``."""
        return torch.sigmoid(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Recalibrate pixels: ``[B, C, H, W] -> [B, C, H, W]``."""
        return x * self.gate(x)


class SCSE(nn.Module):
    """Concurrent spatial and channel SE (scSE, Roy et al. 2018): ``cSE(x) + sSE(x)``.

    Args:
        channels: input (and output) channels.
        reduction: squeeze ratio of the channel branch.

    Shapes:
        ``[B, C, H, W] -> [B, C, H, W]``.
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.cse = ChannelSE(channels, reduction)
        self.sse = SpatialSE(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``cSE(x) + sSE(x)``, computed as ``x * (gate_c + gate_s)`` to save one product."""
        return x * (self.cse.gate(x) + self.sse.gate(x))


def make_attention(name: str, channels: int, reduction: int = 4) -> nn.Module:
    """The attention layer of an :class:`InvertedResidual`: ``"scse"``, ``"se"`` or ``"none"``."""
    if name == "scse":
        return SCSE(channels, reduction)
    if name == "se":
        return ChannelSE(channels, reduction)
    if name == "none":
        return nn.Identity()
    raise ValueError(f"unknown attention {name!r}; expected one of {ATTENTIONS}")


class InvertedResidual(nn.Module):
    """MobileNetV3 inverted-residual block with scSE in place of SE.

    1x1 expand -> BN -> hard-swish, depthwise kxk -> BN -> hard-swish, attention, 1x1 project
    -> BN (linear bottleneck), plus the input when ``stride == 1`` and ``in == out``.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        expand: expansion ratio of the hidden width (1: no expansion convolution).
        kernel: depthwise kernel size (odd).
        stride: depthwise stride.
        attention: ``"scse"`` (vetseg), ``"se"`` (plain MobileNetV3) or ``"none"``.
        reduction: squeeze ratio of the attention's channel branch.
        bn_momentum: BatchNorm momentum.

    Shapes:
        ``[B, in_channels, H, W] -> [B, out_channels, H / stride, W / stride]``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        expand: int = 4,
        kernel: int = 3,
        stride: int = 1,
        attention: Attention = "scse",
        reduction: int = 4,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        if expand < 1:
            raise ValueError(f"expansion ratio must be at least 1, got {expand}")
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"depthwise kernel must be odd and positive, got {kernel}")
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = in_channels * expand
        self.use_residual = stride == 1 and in_channels == out_channels
        self.expand: nn.Module = (
            nn.Sequential(
                nn.Conv2d(in_channels, hidden, kernel_size=1, bias=False),
                nn.BatchNorm2d(hidden, momentum=bn_momentum),
                nn.Hardswish(inplace=True),
            )
            if expand != 1
            else nn.Identity()
        )
        self.depthwise = nn.Sequential(
            nn.Conv2d(
                hidden,
                hidden,
                kernel_size=kernel,
                stride=stride,
                padding=kernel // 2,
                groups=hidden,
                bias=False,
            ),
            nn.BatchNorm2d(hidden, momentum=bn_momentum),
            nn.Hardswish(inplace=True),
        )
        self.attention = make_attention(attention, hidden, reduction)
        self.project = nn.Sequential(
            nn.Conv2d(hidden, out_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_channels, momentum=bn_momentum),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in, H, W] -> [B, out, H / stride, W / stride]``."""
        out = self.project(self.attention(self.depthwise(self.expand(x))))
        return out + x if self.use_residual else out
