"""Awkward geometry for the I/O tests: anisotropic spacing, oblique and flipped directions."""

from __future__ import annotations

import numpy as np

from vetseg.io.image import ImageMeta


def rotation(angles_deg: tuple[float, float, float]) -> np.ndarray:
    """A right-handed rotation matrix from three Euler angles (degrees)."""
    a, b, c = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


#: An oblique, right-handed direction (no axis parallel to a body axis).
OBLIQUE = tuple(rotation((20.0, -35.0, 50.0)).ravel())
#: Axes permuted and flipped, left-handed (det -1), like many NIfTI files from nibabel.
PERMUTED = (0.0, -1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0)


def make_meta(direction: tuple[float, ...] = OBLIQUE) -> ImageMeta:
    """Anisotropic spacing and an off-centre origin with the given direction."""
    return ImageMeta(spacing=(0.7, 1.3, 2.5), origin=(-10.5, 20.25, 33.0), direction=direction)
