"""The one definition of model input, shared by training and inference.

A CT volume in canonical orientation ``[z, y, x]`` (HU) becomes model input in two steps:

1. :func:`normalize_slices`: clip to the CT window, then zero mean and unit variance per axial
   slice;
2. :func:`resize_slices`: resize every slice to ``size x size`` (bilinear for images, nearest for
   label maps).

:func:`prepare_volume` chains both. Training caches its output; inference calls it on every scan
and goes back to the scan's in-plane grid with :func:`resize_probabilities_back`. Keeping the
steps here, and nowhere else, is what keeps the two sides from drifting apart.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (the usual torch alias)

from vetseg.config import PreprocessConfig
from vetseg.errors import InputError

#: Guards the division for a constant slice (e.g. a slice entirely outside the body).
_EPS = 1e-6
#: Slices resized per call to ``interpolate``: bounds the float32 working copy for long scans.
_CHUNK = 64


def normalize_slices(
    volume: np.ndarray, window: tuple[float, float] = (-1000.0, 1000.0)
) -> np.ndarray:
    """Clip a CT volume to a window, then standardise every axial slice on its own.

    Per-slice statistics (rather than per-volume) make the input independent of how much of the
    body a scan covers, which is what a 2D model sees anyway.

    Args:
        volume: ``[z, y, x]`` CT values in HU, any real dtype.
        window: ``(low, high)`` HU; values outside are clipped first.

    Returns:
        float32 ``[z, y, x]``; every slice has mean 0 and standard deviation 1, except a constant
        slice, which becomes all zeros (never NaN).

    Raises:
        InputError: when ``volume`` is not 3D or the window is empty.
    """
    if volume.ndim != 3:
        raise InputError(f"expected a 3D volume [z, y, x], got an array of shape {volume.shape}.")
    low, high = float(window[0]), float(window[1])
    if not low < high:
        raise InputError(f"CT window {window} is empty: its low end must be below its high end.")
    out = np.clip(volume.astype(np.float32, copy=True), low, high)
    # float64 statistics: a 512 x 512 float32 sum loses digits that the variance then amplifies.
    mean = out.mean(axis=(1, 2), dtype=np.float64, keepdims=True)
    std = out.std(axis=(1, 2), dtype=np.float64, keepdims=True)
    out -= mean.astype(np.float32)
    out /= np.maximum(std, _EPS).astype(np.float32)
    return out


def _interpolate(slices: torch.Tensor, size: tuple[int, int], order: int) -> torch.Tensor:
    """Resize ``[n, c, h, w]`` float tensors in plane, in chunks of slices."""
    if order not in (0, 1):
        raise InputError(f"interpolation order must be 0 (nearest) or 1 (linear), got {order}.")
    h, w = slices.shape[-2:]
    out = []
    for start in range(0, slices.shape[0], _CHUNK):
        chunk = slices[start : start + _CHUNK]
        if (h, w) == size:
            out.append(chunk)
        elif order == 0:
            # "nearest-exact" samples pixel centres; plain "nearest" shifts labels by half a pixel.
            out.append(F.interpolate(chunk, size=size, mode="nearest-exact"))
        else:
            # Antialiasing only matters when shrinking (512 -> 128 would alias noise and edges).
            shrink = size[0] < h or size[1] < w
            out.append(
                F.interpolate(
                    chunk, size=size, mode="bilinear", align_corners=False, antialias=shrink
                )
            )
    return torch.cat(out, dim=0) if out else slices.new_zeros((0, *slices.shape[1:-2], *size))


def resize_slices(volume: np.ndarray, size: int, *, order: int) -> np.ndarray:
    """Resize every axial slice of ``[z, y, x]`` to ``[z, size, size]``.

    Args:
        volume: ``[z, y, x]`` array: float image (``order=1``) or integer label map
            (``order=0``).
        size: output height and width in pixels.
        order: 1 for bilinear (images, antialiased when shrinking), 0 for nearest (label maps:
            ids are kept, never blended).

    Returns:
        ``[z, size, size]``: float32 for ``order=1``; the input dtype for ``order=0``.
    """
    if volume.ndim != 3:
        raise InputError(f"expected a 3D volume [z, y, x], got an array of shape {volume.shape}.")
    if size < 1:
        raise InputError(f"resize target must be at least 1 pixel, got {size}.")
    if order == 0 and volume.shape[1:] == (size, size):
        return volume.copy()
    # float32 holds every uint8/uint16 label id exactly, so nearest resizing round-trips ids.
    tensor = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[:, None]
    with torch.no_grad():
        resized = _interpolate(tensor, (size, size), order)[:, 0].numpy()
    if order == 0:
        return resized.astype(volume.dtype)
    return resized


def prepare_volume(image_hu: np.ndarray, preprocess: PreprocessConfig) -> np.ndarray:
    """Model input for a whole canonical CT volume: normalise, then resize.

    Args:
        image_hu: ``[z, y, x]`` HU in canonical orientation (axis 0 along the body).
        preprocess: window and input size.

    Returns:
        float32 ``[z, 1, size, size]``: one single-channel model input per axial slice.
    """
    normalized = normalize_slices(image_hu, preprocess.window)
    return resize_slices(normalized, preprocess.size, order=1)[:, None]


def resize_probabilities_back(
    probabilities: np.ndarray | torch.Tensor, shape: tuple[int, int]
) -> np.ndarray | torch.Tensor:
    """Bring per-slice, per-organ model outputs back to the scan's in-plane grid.

    Inference resizes probabilities (or logits), never thresholded masks, so that organ borders
    are decided at the scan's own resolution.

    Args:
        probabilities: ``[z, c, size, size]`` float array or tensor (probabilities or logits).
        shape: ``(y, x)``: the in-plane shape of the canonical volume before
            :func:`prepare_volume`.

    Returns:
        ``[z, c, y, x]`` float32, of the same kind (numpy or torch) as the input.
    """
    if probabilities.ndim != 4:
        raise InputError(
            "expected probabilities [z, c, h, w], got an array of shape"
            f" {tuple(probabilities.shape)}."
        )
    is_numpy = isinstance(probabilities, np.ndarray)
    tensor = torch.from_numpy(probabilities) if is_numpy else probabilities
    with torch.no_grad():
        out = _interpolate(tensor.float(), (int(shape[0]), int(shape[1])), order=1)
    return out.numpy() if is_numpy else out
