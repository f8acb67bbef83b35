"""The scanner's part of a phantom: blur (kernel, slice thickness), noise, metal streaks."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage


@lru_cache(maxsize=8)
def noise_gain(sigma: tuple[float, ...]) -> float:
    """How much a Gaussian blur of ``sigma`` (voxels) shrinks white noise's standard deviation."""
    delta = np.zeros((15,) * len(sigma), dtype=np.float64)
    delta[(7,) * len(sigma)] = 1.0
    return float(np.sqrt((ndimage.gaussian_filter(delta, sigma) ** 2).sum()))
