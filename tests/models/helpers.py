"""Small helpers shared by the model tests."""

from __future__ import annotations

import torch
from torch import nn


def bn_buffers(module: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every BatchNorm buffer (running mean/var, batches tracked) in ``module``."""
    return {
        f"{name}.{buffer_name}": buffer.detach().clone()
        for name, layer in module.named_modules()
        if isinstance(layer, nn.modules.batchnorm._BatchNorm)
        for buffer_name, buffer in layer.named_buffers(recurse=False)
    }


def buffers_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """True when both dicts hold the same keys with identical tensors."""
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
