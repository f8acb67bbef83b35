"""The human model (patent fig. 2): stem -> EfficientNet U-Net body -> first segmentation head.

Shapes for an input ``[B, 1, H, W]`` (H and W multiples of 32), default options:

- ``stem``: ``[B, 16, H, W]`` (F_stem);
- ``body``: EfficientNet-b1 features at H/2 .. H/32 (16, 24, 40, 112, 320 channels), decoded
  U-Net style back to ``[B, 16, H/2, W/2]``;
- ``head``: ``[B, n_organs, H, W]`` logits, one sigmoid channel per organ (multi-label;
  background is "no organ").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from monai.networks.nets import EfficientNetEncoder
from torch import nn

from vetseg.models.blocks import ConvModule
from vetseg.models.factory import SegmentationModel

DEFAULT_DECODER_CHANNELS: tuple[int, ...] = (128, 64, 32, 16)

# The encoder's classification head (1x1 conv to 1280 channels, pooling, dropout, fc) is never
# used by its feature forward; dropped so that it neither costs memory nor holds parameters that
# never receive a gradient.
_UNUSED_ENCODER_PARTS = (
    "_conv_head",
    "_conv_head_padding",
    "_bn1",
    "_avg_pooling",
    "_dropout",
    "_fc",
)


def set_bn_momentum(module: nn.Module, momentum: float) -> None:
    """Set the momentum of every BatchNorm layer inside ``module``.

    MONAI's EfficientNet defaults to 0.01: after a few hundred CPU steps the running statistics
    are still near their start and eval-mode output is empty (DESIGN section 3).
    """
    for layer in module.modules():
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.momentum = momentum


def check_input(x: torch.Tensor, divisor: int = 32, channels: int = 1) -> None:
    """Raise ValueError unless ``x`` is ``[B, channels, H, W]``, H and W multiples of
    ``divisor``."""
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"expected input [B, {channels}, H, W], got {tuple(x.shape)}")
    if x.shape[-2] % divisor or x.shape[-1] % divisor:
        raise ValueError(
            f"input height and width must be multiples of {divisor}, got {tuple(x.shape[-2:])}"
        )


def check_in_channels(in_channels: int) -> int:
    """``in_channels`` as an int: odd and at least 1 (a slice and its neighbours on both sides)."""
    if isinstance(in_channels, bool) or int(in_channels) != in_channels or in_channels < 1:
        raise ValueError(f"in_channels must be a positive whole number, got {in_channels!r}")
    if in_channels % 2 == 0:
        raise ValueError(
            f"in_channels must be odd (a slice and as many neighbours on each side), "
            f"got {in_channels}"
        )
    return int(in_channels)


def widened_stem_state(
    stem_state: dict[str, torch.Tensor], in_channels: int
) -> dict[str, torch.Tensor]:
    """A one-channel stem's weights for a stem of ``in_channels`` (a slice and its neighbours).

    The first convolution's weight ``[out, 1, k, k]`` becomes ``[out, in_channels, k, k]``: the
    centre channel (the slice itself) keeps the one-channel weights, the neighbours' channels
    start at zero. The widened stem therefore gives exactly the one-channel stem's output at the
    start, and training learns how much the neighbours add.

    Args:
        stem_state: ``state_dict()`` of a one-channel stem (:class:`ConvModule`).
        in_channels: channels of the new stem (odd).

    Returns:
        A new state dict (the other tensors are the same objects, copied on loading).
    """
    key = "0.weight"  # the first Conv2d of the ConvModule
    weight = stem_state[key]
    if weight.shape[1] != 1:
        raise ValueError(
            f"only a one-channel stem can be widened, this one has {weight.shape[1]} channels"
        )
    wide = weight.new_zeros((weight.shape[0], in_channels, *weight.shape[2:]))
    wide[:, in_channels // 2] = weight[:, 0]
    return {**stem_state, key: wide}


def take_stem_and_body(human: nn.Module, model: nn.Module) -> None:
    """Move ``model`` to ``human``'s device and dtype and copy in its stem (widened to the
    model's input channels) and body. ``load_state_dict`` copies values into the model's own
    tensors: no storage is shared."""
    reference = next(human.parameters())
    model.to(device=reference.device, dtype=reference.dtype)
    copy_stem(human.stem, model.stem, model.in_channels)
    model.body.load_state_dict(human.body.state_dict())


def copy_stem(source: nn.Module, target: nn.Module, in_channels: int) -> None:
    """Load ``source``'s stem into ``target`` (``in_channels`` wide), widening it if needed."""
    state = source.state_dict()
    source_channels = state["0.weight"].shape[1]
    if source_channels != in_channels:
        if source_channels != 1:
            raise ValueError(
                f"a stem of {source_channels} input channels cannot become one of {in_channels}"
            )
        state = widened_stem_state(state, in_channels)
    target.load_state_dict(state)


def to_channels_last(features: torch.Tensor) -> torch.Tensor:
    """``features`` in channels-last memory layout (same values, same shape).

    Applied to the stem's output so that every later convolution runs channels-last: on CPU its
    depthwise convolutions train about 25 % faster (forward + backward, batch 8, 128 x 128),
    while the weights stay in the default layout and the state dict is unchanged.
    """
    return features.contiguous(memory_format=torch.channels_last)


class EfficientUNetBody(nn.Module):
    """The "EfficientNet module": MONAI's EfficientNet encoder and a light U-Net decoder.

    Args:
        in_channels: channels of the stem output it reads.
        encoder: MONAI EfficientNet name (``"efficientnet-b0"`` .. ``"efficientnet-b8"``).
        decoder_channels: output channels of the four decoder stages, from H/16 to H/2.
        bn_momentum: momentum of every BatchNorm, the encoder's included.

    Shapes:
        ``[B, in_channels, H, W] -> [B, decoder_channels[-1], H/2, W/2]``.
    """

    def __init__(
        self,
        in_channels: int,
        encoder: str = "efficientnet-b1",
        decoder_channels: Sequence[int] = DEFAULT_DECODER_CHANNELS,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        names = EfficientNetEncoder.get_encoder_names()
        if encoder not in names:
            raise ValueError(f"unknown encoder {encoder!r}; expected one of {names}")
        if len(decoder_channels) != 4:
            raise ValueError(
                f"decoder_channels needs 4 stages (H/16, H/8, H/4, H/2), got {decoder_channels}"
            )
        self.encoder = EfficientNetEncoder(
            model_name=encoder,
            pretrained=False,  # no weights can be fetched here, and ImageNet has 3 channels
            spatial_dims=2,
            in_channels=in_channels,
            norm=("batch", {"eps": 1e-3, "momentum": bn_momentum}),
        )
        for name in _UNUSED_ENCODER_PARTS:
            delattr(self.encoder, name)
        set_bn_momentum(self.encoder, bn_momentum)
        # Features at /2, /4, /8, /16, /32.
        skips = EfficientNetEncoder.num_channels_per_output()[names.index(encoder)]
        stages = []
        channels = skips[-1]
        for skip, out in zip(reversed(skips[:-1]), decoder_channels, strict=True):
            stages.append(ConvModule(channels + skip, out, bn_momentum=bn_momentum))
            channels = out
        self.decoder = nn.ModuleList(stages)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_channels, H, W] -> [B, decoder_channels[-1], H/2, W/2]``."""
        features = self.encoder(x)
        y = features[-1]
        for stage, skip in zip(self.decoder, reversed(features[:-1]), strict=True):
            y = F.interpolate(y, size=skip.shape[-2:], mode="nearest")
            y = stage(torch.cat([y, skip], dim=1))
        return y


class HumanOrganNet(SegmentationModel):
    """Human organ segmentation network (S100): ``stem``, ``body``, ``head``.

    Args:
        n_organs: output channels, one logit per human organ.
        stem_channels: channels of the stem (F_stem).
        encoder: MONAI EfficientNet name of the body's encoder.
        decoder_channels: output channels of the body's four decoder stages (H/16 .. H/2).
        bn_momentum: momentum of every BatchNorm in the network.
        in_channels: input channels: 1 (the patent's stem) or a slice and its neighbours on
            both sides (``PreprocessConfig.context_slices``).
    """

    PARTS: ClassVar[tuple[str, ...]] = ("stem", "body", "head")

    def __init__(
        self,
        n_organs: int,
        stem_channels: int = 16,
        encoder: str = "efficientnet-b1",
        decoder_channels: Sequence[int] = DEFAULT_DECODER_CHANNELS,
        bn_momentum: float = 0.1,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        if n_organs < 1 or stem_channels < 1:
            raise ValueError(f"n_organs ({n_organs}) and stem_channels must be at least 1")
        self.n_organs = int(n_organs)
        self.stem_channels = int(stem_channels)
        self.encoder_name = encoder
        self.decoder_channels = tuple(int(c) for c in decoder_channels)
        self.bn_momentum = float(bn_momentum)
        self.in_channels = check_in_channels(in_channels)
        self.stem = ConvModule(self.in_channels, self.stem_channels, bn_momentum=self.bn_momentum)
        self.body = EfficientUNetBody(
            self.stem_channels, encoder, self.decoder_channels, self.bn_momentum
        )
        self.head = nn.Conv2d(self.body.out_channels, self.n_organs, kernel_size=1)

    @classmethod
    def from_human(
        cls, human: HumanOrganNet, n_organs: int, in_channels: int | None = None
    ) -> HumanOrganNet:
        """The naive fine-tuning baseline: ``human``'s stem and body with a new head.

        No upsampling-fusion, no scSE-MobileNetV3 module: the human architecture itself, its
        head replaced by a fresh one for ``n_organs`` animal organs. Stem and body (BatchNorm
        running statistics included) are exact, independent copies; the model is in train
        mode with nothing frozen (the baseline trains every layer from the first step).

        Args:
            human: the trained human model.
            n_organs: animal organs (logit channels of the new head).
            in_channels: input channels (default: the human model's); a one-channel human
                stem is widened (:func:`widened_stem_state`).

        Returns:
            The model, on the human model's device and dtype.
        """
        model = cls(
            n_organs=n_organs,
            stem_channels=human.stem_channels,
            encoder=human.encoder_name,
            decoder_channels=human.decoder_channels,
            bn_momentum=human.bn_momentum,
            in_channels=human.in_channels if in_channels is None else in_channels,
        )
        take_stem_and_body(human, model)
        return model

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stem and body features.

        Args:
            x: CT slices ``[B, in_channels, H, W]``, H and W multiples of 32.

        Returns:
            ``f_stem [B, 16, H, W]`` and ``f_body [B, 16, H/2, W/2]``.
        """
        check_input(x, channels=self.in_channels)
        f_stem = to_channels_last(self.stem(x))
        return f_stem, self.body(f_stem)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Organ logits ``[B, n_organs, H, W]`` for slices ``[B, 1, H, W]``."""
        _, f_body = self.encode(x)
        # "Upsample x2 + 1x1 conv": the 1x1 conv runs first, at H/2. Bilinear upsampling and a
        # 1x1 conv commute (both linear, interpolation weights sum to 1), so the result is the
        # same at a quarter of the cost.
        logits = self.head(f_body)
        logits = F.interpolate(logits, scale_factor=2.0, mode="bilinear", align_corners=False)
        return logits.contiguous()

    def architecture(self) -> dict[str, Any]:
        """``{"class": "HumanOrganNet", "n_organs": ..., ...}``, the input of ``build_model``."""
        return backbone_architecture(self)


def backbone_architecture(model: Any) -> dict[str, Any]:
    """The architecture fields the human and animal models share (class, organs, stem, body).

    ``in_channels`` is recorded only when it is not 1, so that a one-channel model's record is
    the one older vetseg versions wrote and read (a record without it builds one channel).
    """
    record = {
        "class": type(model).__name__,
        "n_organs": model.n_organs,
        "stem_channels": model.stem_channels,
        "encoder": model.encoder_name,
        "decoder_channels": list(model.decoder_channels),
        "bn_momentum": model.bn_momentum,
    }
    if model.in_channels != 1:
        record["in_channels"] = model.in_channels
    return record
