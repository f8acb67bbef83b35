"""Tiny seeded volumes for the I/O tests."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def ct_volume() -> np.ndarray:
    """``[z, y, x]`` = 5 x 7 x 9 int16 values in the CT range, seeded."""
    rng = np.random.default_rng(0)
    return rng.integers(-1000, 1500, size=(5, 7, 9)).astype(np.int16)


@pytest.fixture
def label_volume() -> np.ndarray:
    """``[z, y, x]`` = 5 x 7 x 9 uint8 label map with blocks of ids 1, 2 and 5."""
    labels = np.zeros((5, 7, 9), dtype=np.uint8)
    labels[1:4, 1:4, 1:5] = 1
    labels[2:5, 4:7, 5:9] = 2
    labels[0, 0, 0] = 5
    return labels
