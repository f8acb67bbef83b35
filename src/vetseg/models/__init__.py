"""vetseg's networks: the human model, the animal model built from it, and their blocks.

- :mod:`vetseg.models.blocks`: ConvModule, cSE / sSE / scSE, the MobileNetV3 inverted residual;
- :mod:`vetseg.models.human`: :class:`HumanOrganNet` (stem, EfficientNet U-Net body, head);
- :mod:`vetseg.models.animal`: :class:`AnimalOrganNet` (``from_human``);
- :mod:`vetseg.models.factory`: the shared base (parts, freezing) and :func:`build_model`.
"""

from vetseg.models.animal import AnimalOrganNet
from vetseg.models.factory import SegmentationModel, build_model
from vetseg.models.human import HumanOrganNet

__all__ = ["AnimalOrganNet", "HumanOrganNet", "SegmentationModel", "build_model"]
