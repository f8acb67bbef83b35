"""The animal model (patent fig. 3), built from a trained human model (S101).

Forward, for an input ``[B, 1, H, W]`` (default options):

- ``stem`` (copied from the human model): F_stem ``[B, 16, H, W]`` (also called F2);
- ``body`` (copied): ``[B, 16, H/2, W/2]``;
- ``upsample``: bilinear x2 -> F1 ``[B, 16, H, W]``;
- concatenation ``cat(F1, F_stem)`` -> F3 ``[B, 32, H, W]``;
- ``fuse`` (second conv module, 32 -> 16): F4 ``[B, 16, H, W]``;
- ``refine`` (scSE-MobileNetV3 module: inverted-residual blocks with scSE, full resolution):
  F5 ``[B, 16, H, W]``;
- ``head`` (second segmentation head, 1x1 conv): logits ``[B, n_organs, H, W]``.

At 512 x 512 these are the patent's shapes: F_stem 1x16x512x512, F3 1x32x512x512,
F4 and F5 1x16x512x512. The human head is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from vetseg.models.blocks import ATTENTIONS, Attention, ConvModule, InvertedResidual
from vetseg.models.factory import SegmentationModel
from vetseg.models.human import (
    DEFAULT_DECODER_CHANNELS,
    EfficientUNetBody,
    HumanOrganNet,
    backbone_architecture,
    check_in_channels,
    check_input,
    take_stem_and_body,
    to_channels_last,
)


class AnimalOrganNet(SegmentationModel):
    """Animal organ segmentation network: ``stem``, ``body``, ``upsample``, ``fuse``,
    ``refine``, ``head``.

    Built with random weights by the constructor (the "scratch" baseline, or before loading a
    saved model) and from a trained human model by :meth:`from_human`.

    Args:
        n_organs: output channels, one logit per animal organ.
        stem_channels: channels of the stem (F_stem) and of F4/F5.
        encoder: MONAI EfficientNet name of the body's encoder.
        decoder_channels: output channels of the body's decoder stages (H/16 .. H/2).
        bn_momentum: momentum of every BatchNorm in the network.
        refine_blocks: inverted-residual blocks in ``refine`` (0: none, the naive baseline).
        expand: expansion ratio of those blocks.
        kernel: depthwise kernel size of those blocks.
        attention: their attention, ``"scse"`` (vetseg), ``"se"`` or ``"none"``.
        in_channels: input channels: 1 (the patent's stem) or a slice and its neighbours on
            both sides (``PreprocessConfig.context_slices``).
    """

    PARTS: ClassVar[tuple[str, ...]] = ("stem", "body", "upsample", "fuse", "refine", "head")

    def __init__(
        self,
        n_organs: int,
        stem_channels: int = 16,
        encoder: str = "efficientnet-b1",
        decoder_channels: Sequence[int] = DEFAULT_DECODER_CHANNELS,
        bn_momentum: float = 0.1,
        refine_blocks: int = 2,
        expand: int = 4,
        kernel: int = 3,
        attention: Attention = "scse",
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        if n_organs < 1 or stem_channels < 1:
            raise ValueError(f"n_organs ({n_organs}) and stem_channels must be at least 1")
        if refine_blocks < 0:
            raise ValueError(f"refine_blocks must not be negative, got {refine_blocks}")
        if attention not in ATTENTIONS:
            raise ValueError(f"unknown attention {attention!r}; expected one of {ATTENTIONS}")
        self.n_organs = int(n_organs)
        self.stem_channels = int(stem_channels)
        self.encoder_name = encoder
        self.decoder_channels = tuple(int(c) for c in decoder_channels)
        self.bn_momentum = float(bn_momentum)
        self.refine_blocks = int(refine_blocks)
        self.expand = int(expand)
        self.kernel = int(kernel)
        self.attention = attention
        self.in_channels = check_in_channels(in_channels)

        channels = self.stem_channels
        self.stem = ConvModule(self.in_channels, channels, bn_momentum=self.bn_momentum)
        self.body = EfficientUNetBody(channels, encoder, self.decoder_channels, self.bn_momentum)
        self.upsample = nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=False)
        self.fuse = ConvModule(
            self.body.out_channels + channels, channels, bn_momentum=self.bn_momentum
        )
        self.refine = nn.Sequential(
            *(
                InvertedResidual(
                    channels,
                    channels,
                    expand=self.expand,
                    kernel=self.kernel,
                    attention=attention,
                    bn_momentum=self.bn_momentum,
                )
                for _ in range(self.refine_blocks)
            )
        )
        self.head = nn.Conv2d(channels, self.n_organs, kernel_size=1)

    @classmethod
    def from_human(
        cls,
        human: HumanOrganNet,
        n_organs: int,
        refine_blocks: int = 2,
        expand: int = 4,
        kernel: int = 3,
        attention: Attention = "scse",
        in_channels: int | None = None,
    ) -> AnimalOrganNet:
        """An animal model whose stem and body are exact, independent copies of ``human``'s.

        Every parameter and buffer (BatchNorm running statistics included) is copied; the new
        model is in train mode with nothing frozen, whatever the human model's state.

        Args:
            human: the trained human model.
            n_organs: animal organs (logit channels of the new head).
            refine_blocks: inverted-residual blocks in ``refine``.
            expand: their expansion ratio.
            kernel: their depthwise kernel size.
            attention: their attention (``"scse"``, ``"se"`` or ``"none"``).
            in_channels: input channels (default: the human model's). A one-channel human stem
                is widened: the centre channel gets its weights, the neighbours zero, so that
                the new model's stem starts out computing exactly the human stem's features
                (:func:`~vetseg.models.human.widened_stem_state`).

        Returns:
            The animal model, on the human model's device and dtype.
        """
        model = cls(
            n_organs=n_organs,
            stem_channels=human.stem_channels,
            encoder=human.encoder_name,
            decoder_channels=human.decoder_channels,
            bn_momentum=human.bn_momentum,
            refine_blocks=refine_blocks,
            expand=expand,
            kernel=kernel,
            attention=attention,
            in_channels=human.in_channels if in_channels is None else in_channels,
        )
        take_stem_and_body(human, model)
        return model

    def intermediates(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every named feature map of the forward pass (for shape tests and inspection).

        Args:
            x: CT slices ``[B, in_channels, H, W]``, H and W multiples of 32.

        Returns:
            ``{"F_stem", "F1", "F3", "F4", "F5", "logits"}``; shapes in the module docstring.
        """
        check_input(x, channels=self.in_channels)
        f_stem = to_channels_last(self.stem(x))
        f1 = self.upsample(self.body(f_stem))
        f3 = torch.cat([f1, f_stem], dim=1)
        f4 = self.fuse(f3)
        f5 = self.refine(f4)
        logits = self.head(f5).contiguous()
        return {"F_stem": f_stem, "F1": f1, "F3": f3, "F4": f4, "F5": f5, "logits": logits}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Organ logits ``[B, n_organs, H, W]`` for slices ``[B, 1, H, W]``."""
        return self.intermediates(x)["logits"]

    def architecture(self) -> dict[str, Any]:
        """``{"class": "AnimalOrganNet", "n_organs": ..., ...}``, the input of ``build_model``."""
        return {
            **backbone_architecture(self),
            "refine_blocks": self.refine_blocks,
            "expand": self.expand,
            "kernel": self.kernel,
            "attention": self.attention,
        }
