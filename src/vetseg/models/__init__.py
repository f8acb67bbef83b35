"""vetseg's networks: the human model, the animal model built from it, and their blocks.

- :mod:`vetseg.models.blocks`: ConvModule, cSE / sSE / scSE, the MobileNetV3 inverted residual;
- :mod:`vetseg.models.human`: :class:`HumanOrganNet` (stem, EfficientNet U-Net body, head);
- :mod:`vetseg.models.animal`: :class:`AnimalOrganNet` (``from_human``);
- :mod:`vetseg.models.peer`: :class:`PeerUNet`, the nnU-Net-style DynUNet baseline;
- :mod:`vetseg.models.factory`: the shared base (parts, freezing) and :func:`build_model`;
- :mod:`vetseg.models.files`: model folders (safetensors + model.json).

The networks are imported on first use: they pull in MONAI, whose import takes about 1.5 s,
and reading a model.json or running an exported ONNX model needs none of it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vetseg.models.animal import AnimalOrganNet
    from vetseg.models.factory import SegmentationModel, build_model
    from vetseg.models.human import HumanOrganNet
    from vetseg.models.peer import PeerUNet

__all__ = ["AnimalOrganNet", "HumanOrganNet", "PeerUNet", "SegmentationModel", "build_model"]

_HOMES = {
    "AnimalOrganNet": "vetseg.models.animal",
    "HumanOrganNet": "vetseg.models.human",
    "PeerUNet": "vetseg.models.peer",
    "SegmentationModel": "vetseg.models.factory",
    "build_model": "vetseg.models.factory",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
