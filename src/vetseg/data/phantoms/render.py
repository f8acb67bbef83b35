"""The scanner's part of a phantom: blur (kernel, slice thickness), noise, metal streaks."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage

from vetseg.data.phantoms.tissue import METAL_HU
from vetseg.data.phantoms.variety import WideSetup


@lru_cache(maxsize=8)
def noise_gain(sigma: tuple[float, ...]) -> float:
    """How much a Gaussian blur of ``sigma`` (voxels) shrinks white noise's standard deviation."""
    delta = np.zeros((15,) * len(sigma), dtype=np.float64)
    delta[(7,) * len(sigma)] = 1.0
    return float(np.sqrt((ndimage.gaussian_filter(delta, sigma) ** 2).sum()))


def _kernel(image: np.ndarray, sigma_px: float, edge_gain: float) -> np.ndarray:
    """The reconstruction kernel in-plane on ``[z, y, x]`` (or ``[y, x]``): a Gaussian point
    spread, then for sharp kernels an unsharp mask (edge overshoot, crisper noise)."""
    axes = (0.0,) * (image.ndim - 2) + (sigma_px, sigma_px)
    out = ndimage.gaussian_filter(image, axes)
    if edge_gain:
        halo = ndimage.gaussian_filter(out, (0.0,) * (image.ndim - 2) + (1.0, 1.0))
        out += edge_gain * (out - halo)
    return out


@lru_cache(maxsize=64)
def _kernel_noise_gain(sigma_px: float, edge_gain: float) -> float:
    """How much :func:`_kernel` shrinks (or grows) white noise's standard deviation."""
    delta = np.zeros((41, 41), dtype=np.float64)
    delta[20, 20] = 1.0
    return float(np.sqrt((_kernel(delta, sigma_px, edge_gain) ** 2).sum()))


def add_metal_streaks(
    hu: np.ndarray, metal: np.ndarray, pixel_mm: float, rng: np.random.Generator
) -> None:
    """Streak artefacts around metal, in place, slice by slice (a model, not a reconstruction).

    Every piece of metal in a slice casts bright and dark straight lines through it in a few
    random directions (photon starvation and beam hardening along the longest paths), fading
    with distance; two pieces in one slice add a dark band along the line that joins them (the
    classic band between two hip prostheses). The strength grows with the metal's cross-section.

    Args:
        hu: ``[z, y, x]`` HU, modified in place.
        metal: bool ``[z, y, x]``, the metal voxels.
        pixel_mm: in-plane spacing.
        rng: random generator.
    """
    slices = np.flatnonzero(metal.any(axis=(1, 2)))
    if slices.size == 0:
        return
    ny, nx = hu.shape[1:]
    yy = (np.arange(ny, dtype=np.float32) * pixel_mm)[:, None]
    xx = (np.arange(nx, dtype=np.float32) * pixel_mm)[None, :]
    n_lines = int(rng.integers(6, 14))
    angles = rng.uniform(0.0, np.pi, n_lines).astype(np.float32)
    amplitude = (rng.choice([-1.0, 1.0], n_lines) * rng.uniform(100.0, 450.0, n_lines)).astype(
        np.float32
    )
    width = rng.uniform(0.8, 2.5, n_lines).astype(np.float32)
    fade_mm = float(rng.uniform(25.0, 80.0))
    band = float(rng.uniform(150.0, 450.0))
    for k in slices:
        pieces, count = ndimage.label(metal[k])
        index = list(range(1, count + 1))
        centres = ndimage.center_of_mass(metal[k], pieces, index)
        areas = ndimage.sum_labels(metal[k], pieces, index) * pixel_mm**2
        streak = np.zeros((ny, nx), dtype=np.float32)
        points = []
        for (cy, cx), area in zip(centres, areas, strict=True):
            cy_mm, cx_mm = cy * pixel_mm, cx * pixel_mm
            points.append((cy_mm, cx_mm))
            strength = min(1.0, float(area) / 150.0) * float(rng.uniform(0.7, 1.3))
            dy, dx = yy - cy_mm, xx - cx_mm
            fade = 1.0 / (1.0 + np.sqrt(dx * dx + dy * dy) / fade_mm)
            for a, amp, w in zip(angles, amplitude, width, strict=True):
                across = dx * np.sin(a) - dy * np.cos(a)
                streak += (strength * amp) * np.exp(-0.5 * (across / w) ** 2) * fade
        for i in range(len(points)):
            for j in range(i + 1, len(points)):
                (y0, x0), (y1, x1) = points[i], points[j]
                length = max(np.hypot(y1 - y0, x1 - x0), 1e-3)
                t = np.clip(((yy - y0) * (y1 - y0) + (xx - x0) * (x1 - x0)) / length**2, 0, 1)
                across = np.hypot(yy - y0 - t * (y1 - y0), xx - x0 - t * (x1 - x0))
                streak -= band * np.exp(-0.5 * (across / 6.0) ** 2)
        hu[k][~metal[k]] += streak[~metal[k]]


def render_scan(
    hu: np.ndarray, labels: np.ndarray, step: int, setup: WideSetup, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """What a scanner makes of drawn tissue: slice profile, metal streaks, kernel, noise, FOV.

    Args:
        hu: ``[z, y, x]`` drawn HU on a z grid ``step`` times finer than the slices.
        labels: the labels on the same grid.
        step: fine slices per output slice.
        setup: the scanner's settings (pixel, slice thickness and interval, kernel, noise,
            reconstruction circle).
        rng: random generator.

    Returns:
        int16 CT and uint8 labels on the output grid (every ``step``-th fine slice).
    """
    metal = hu >= METAL_HU
    # Slice profile along z: each slice averages the tissue within its thickness (partial
    # volume along z), sampled at the slice positions.
    sigma_z = setup.slice_mm / 2.355 / (setup.interval_mm / step)
    if sigma_z > 0.25:
        hu = ndimage.gaussian_filter1d(hu, sigma_z, axis=0, mode="nearest")
    hu = np.ascontiguousarray(hu[::step])
    labels = np.ascontiguousarray(labels[::step])
    metal = np.ascontiguousarray(metal[::step])
    add_metal_streaks(hu, metal, setup.pixel_mm, rng)
    # In-plane: the kernel's point spread and the pixel's own footprint (the drawing is point
    # sampled, a detector integrates).
    sigma_px = round(float(np.hypot(setup.kernel_fwhm_mm / 2.355 / setup.pixel_mm, 0.35)), 4)
    ct = _kernel(hu, sigma_px, setup.edge_gain)
    # Noise is independent from slice to slice and shaped in-plane by the same kernel.
    noise = _kernel(rng.standard_normal(ct.shape, dtype=np.float32), sigma_px, setup.edge_gain)
    ct += noise * np.float32(setup.noise_hu / _kernel_noise_gain(sigma_px, setup.edge_gain))
    if setup.fov_circle:
        ny, nx = ct.shape[1:]
        yy, xx = np.ogrid[:ny, :nx]
        outside = (yy - (ny - 1) / 2) ** 2 + (xx - (nx - 1) / 2) ** 2 > (min(ny, nx) / 2) ** 2
        ct[:, outside] = -1024.0
        labels[:, outside] = 0
    return np.clip(np.rint(ct), -1024, 3071).astype(np.int16), labels
