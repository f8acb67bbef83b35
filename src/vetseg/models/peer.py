"""The peer baseline: a 2D U-Net planned as nnU-Net plans one, built with MONAI's DynUNet.

What a user without vetseg would train on a few labelled animal scans: nnU-Net's 2D
configuration, from random weights. :func:`plan_2d_unet` follows nnU-Net v2's planning for a
2D network (``get_pool_and_conv_props`` and the default ``PlainConvUNet`` settings) for a square
tile of ``size`` pixels at one in-plane spacing:

- pool (stride 2) while the feature map is at least twice nnU-Net's minimum edge of 4 pixels,
  on both axes together (in-plane pixels are square here, so no axis is held back for
  anisotropy); the tile must then be divisible by ``2 ** pools``;
- 3 x 3 kernels at every stage (a 1 x 1 kernel only appears for an axis more than twice as
  coarse as the finest, which square pixels never are);
- 32 filters at full resolution, doubled per stage, capped at 512 (nnU-Net's 2D cap);
- two convolutions per stage, instance norm (affine) and leaky ReLU (MONAI's defaults are
  nnU-Net's);
- deep supervision on every decoder output but the coarsest (nnU-Net gives the coarsest weight
  0): ``pools - 1`` extra outputs, weighted ``1, 1/2, 1/4, ...`` and normalised in the loss
  (:class:`vetseg.training.losses.DiceCELoss`).

Outputs are one logit per organ, like every vetseg model, but they mean *organ against
background*: ``z_organ - z_background`` of nnU-Net's softmax over background and organs. A
softmax over ``[0, logits]`` is exactly that softmax (a last 1 x 1 convolution can express the
difference), and the largest positive logit is its argmax, which is how vetseg's segmenter turns
logits into labels, so inference, tiling, evaluation and ONNX export need nothing new.

Differences from nnU-Net itself, on purpose: the same tile, pixel spacing, batch, step budget,
optimiser (Adam) and augmentation as the other methods of a comparison (nnU-Net would choose a
larger patch and batch, SGD with a poly schedule and its own augmentation), and MONAI upsamples
the deep-supervision outputs to full size where nnU-Net downsamples the targets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from monai.networks.nets import DynUNet

from vetseg.models.factory import SegmentationModel

#: nnU-Net's smallest feature-map edge (pixels) and its 2D filter settings.
MIN_FEATURE_MAP = 4
BASE_FILTERS = 32
MAX_FILTERS_2D = 512


@dataclass(frozen=True)
class UNetPlan:
    """A 2D U-Net's shape as nnU-Net would plan it (see the module notes).

    Attributes:
        kernel_sizes: one ``(ky, kx)`` per stage.
        strides: one ``(sy, sx)`` per stage; the first is ``(1, 1)``.
        filters: output channels per stage.
        deep_supervision: extra (deep-supervision) outputs during training.
    """

    kernel_sizes: tuple[tuple[int, int], ...]
    strides: tuple[tuple[int, int], ...]
    filters: tuple[int, ...]
    deep_supervision: int

    @property
    def pools(self) -> int:
        """Down-sampling steps (stages - 1)."""
        return len(self.strides) - 1


def plan_2d_unet(size: int, spacing: float | None = None) -> UNetPlan:
    """nnU-Net's 2D plan for square ``size x size`` tiles of square pixels.

    Args:
        size: the tile edge in pixels (a multiple of 32 in vetseg).
        spacing: the pixel spacing in mm; square pixels make the plan independent of it (it is
            taken so that the call says what nnU-Net plans from).

    Returns:
        The plan.

    Raises:
        ValueError: a tile smaller than ``2 * MIN_FEATURE_MAP`` or a non-positive spacing.
    """
    if size < 2 * MIN_FEATURE_MAP:
        raise ValueError(f"tile size {size} is below nnU-Net's minimum of {2 * MIN_FEATURE_MAP}")
    if spacing is not None and not spacing > 0:
        raise ValueError(f"spacing must be positive, got {spacing}")
    pools, edge = 0, size
    while edge >= 2 * MIN_FEATURE_MAP and edge % 2 == 0:
        edge //= 2
        pools += 1
    stages = pools + 1
    return UNetPlan(
        kernel_sizes=tuple((3, 3) for _ in range(stages)),
        strides=((1, 1),) + tuple((2, 2) for _ in range(pools)),
        filters=tuple(min(BASE_FILTERS * 2**i, MAX_FILTERS_2D) for i in range(stages)),
        deep_supervision=max(pools - 1, 0),
    )


def _alias_names(module: torch.nn.Module) -> dict[str, str]:
    """State-dict key -> the first key of the same tensor, for every key that repeats one."""
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for key, tensor in torch.nn.Module.state_dict(module, keep_vars=True).items():
        if id(tensor) in first:
            aliases[key] = first[id(tensor)]
        else:
            first[id(tensor)] = key
    return aliases


class PeerUNet(SegmentationModel):
    """nnU-Net-style 2D U-Net (MONAI DynUNet) with one organ-vs-background logit per organ.

    Args:
        n_organs: organs (output channels).
        kernel_sizes: per stage, from :func:`plan_2d_unet`.
        strides: per stage.
        filters: per stage.
        deep_supervision: extra outputs during training (0: none).

    Shapes:
        eval: ``[B, 1, H, W] -> [B, n_organs, H, W]``; train with deep supervision:
        ``[B, 1 + deep_supervision, n_organs, H, W]`` (every output at full size, the main one
        first). H and W must be multiples of ``2 ** pools``.
    """

    PARTS: ClassVar[tuple[str, ...]] = ("net",)

    def __init__(
        self,
        n_organs: int,
        kernel_sizes: Sequence[Sequence[int]],
        strides: Sequence[Sequence[int]],
        filters: Sequence[int],
        deep_supervision: int = 0,
    ) -> None:
        super().__init__()
        if n_organs < 1:
            raise ValueError(f"n_organs must be at least 1, got {n_organs}")
        if not len(kernel_sizes) == len(strides) == len(filters) >= 2:
            raise ValueError("kernel_sizes, strides and filters need one entry per stage (>= 2)")
        if not 0 <= deep_supervision < len(strides) - 1:
            raise ValueError(
                f"deep_supervision {deep_supervision} must lie in [0, {len(strides) - 2}]"
            )
        self.n_organs = int(n_organs)
        self.kernel_sizes = tuple(tuple(int(k) for k in ks) for ks in kernel_sizes)
        self.strides = tuple(tuple(int(s) for s in st) for st in strides)
        self.filters = tuple(int(f) for f in filters)
        self.deep_supervision = int(deep_supervision)
        self.net = DynUNet(
            spatial_dims=2,
            in_channels=1,
            out_channels=self.n_organs,
            kernel_size=[list(k) for k in self.kernel_sizes],
            strides=[list(s) for s in self.strides],
            upsample_kernel_size=[list(s) for s in self.strides[1:]],
            filters=list(self.filters),
            norm_name=("INSTANCE", {"affine": True}),
            act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
            deep_supervision=self.deep_supervision > 0,
            deep_supr_num=max(self.deep_supervision, 1),
        )

        # DynUNet registers every block twice: under its own name and inside the recursive
        # ``skip_layers`` that its forward runs. The state dict keeps one name per tensor (the
        # block's own), as safetensors cannot store shared tensors; loading fills in the others.
        self._aliases = _alias_names(self)

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        """The state dict with one entry per tensor (DynUNet's ``skip_layers`` aliases left out)."""
        state = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", "")
        for alias in self._aliases:
            state.pop(prefix + alias, None)
        return state

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        """Load a state dict written by :meth:`state_dict` (aliases filled in from their names)."""
        full = dict(state_dict)
        for alias, name in self._aliases.items():
            if alias not in full and name in full:
                full[alias] = full[name]
        return super().load_state_dict(full, strict=strict, assign=assign)

    @classmethod
    def planned(cls, n_organs: int, size: int, spacing: float | None = None) -> PeerUNet:
        """The network nnU-Net would plan for ``size`` px tiles (:func:`plan_2d_unet`)."""
        plan = plan_2d_unet(size, spacing)
        return cls(n_organs, plan.kernel_sizes, plan.strides, plan.filters, plan.deep_supervision)

    @property
    def divisor(self) -> int:
        """H and W must be multiples of this."""
        divisor = 1
        for stride in self.strides:
            divisor *= stride[0]
        return divisor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Organ logits (see the class notes for the training-mode deep-supervision stack)."""
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected input [B, 1, H, W], got {tuple(x.shape)}")
        if x.shape[-2] % self.divisor or x.shape[-1] % self.divisor:
            raise ValueError(
                f"input height and width must be multiples of {self.divisor},"
                f" got {tuple(x.shape[-2:])}"
            )
        return self.net(x)

    def architecture(self) -> dict[str, Any]:
        """``{"class": "PeerUNet", ...}``, the input of ``build_model``."""
        return {
            "class": type(self).__name__,
            "n_organs": self.n_organs,
            "kernel_sizes": [list(k) for k in self.kernel_sizes],
            "strides": [list(s) for s in self.strides],
            "filters": list(self.filters),
            "deep_supervision": self.deep_supervision,
        }
