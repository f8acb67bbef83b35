"""The optimiser of a training stage: Adam, the transferred parts at their own rate."""

from __future__ import annotations

import torch
from torch import nn

from vetseg.config import StageConfig

#: The parts a transfer copies from the human model (``StageConfig.transferred_lr_scale``).
TRANSFERRED_PARTS: tuple[str, ...] = ("stem", "body")


def make_optimizer(model: nn.Module, config: StageConfig) -> torch.optim.Optimizer:
    """Adam at ``config.lr``; the transferred parts at ``lr * transferred_lr_scale``.

    One parameter group unless the scale differs from 1 and the model has such parts, so that
    the optimiser state (and checkpoints) of every other run are as before.
    """
    scaled = [
        name
        for name in TRANSFERRED_PARTS
        if config.transferred_lr_scale != 1.0 and isinstance(getattr(model, name, None), nn.Module)
    ]
    if not scaled:
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    inner = {id(p) for name in scaled for p in getattr(model, name).parameters()}
    groups = [
        {"params": [p for p in model.parameters() if id(p) not in inner], "lr": config.lr},
        {
            "params": [p for name in scaled for p in getattr(model, name).parameters()],
            "lr": config.lr * config.transferred_lr_scale,
        },
    ]
    return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
