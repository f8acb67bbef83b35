"""A tiny vetseg-style network shared by the trainer and RL tests."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from vetseg.models.factory import SegmentationModel


class TinyNet(SegmentationModel):
    """Stem / body (with BatchNorm) / head, small enough for many steps in a test."""

    PARTS: ClassVar[tuple[str, ...]] = ("stem", "body", "head")

    def __init__(self, n_organs: int = 2) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.body = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.head = nn.Conv2d(4, n_organs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(x)))

    def architecture(self) -> dict[str, Any]:
        return {"class": "TinyNet"}
