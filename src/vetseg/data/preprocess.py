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

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

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


# =========================================================================== physical scale
# A model with ``PreprocessConfig.spacing`` set works in millimetres: every axial slice is
# resampled to the model's pixel spacing (:func:`to_model_grid`), normalised with fixed
# intensity statistics, and the network sees ``size x size`` tiles of it (:func:`tiled_logits`:
# one padded tile when the slice is smaller, overlapping tiles blended with a Gaussian weight
# when it is larger). Logits go back to the slice's own grid with the exact inverse scale
# (:func:`logits_to_native`). Training samples ``size x size`` crops of the same resampled
# slices (:mod:`vetseg.data.slices`), validation and inference use the same tiling: one
# definition of model input for both sides.

#: Smallest overlap between neighbouring tiles, as a fraction of the tile.
TILE_OVERLAP = 0.25


@dataclass(frozen=True)
class ModelGrid:
    """How a scan's in-plane grid maps onto the model's pixel grid.

    Model pixel ``i`` along an axis samples native position
    ``u_i = (i + 0.5) / scale - 0.5 + phase`` (native pixels). The phase puts every model pixel
    centre on the lattice of multiples of the model spacing in scanner coordinates, so a scan
    and the same scan padded with air or cropped land on the very same model pixels.

    Attributes:
        native: ``(h, w)`` of the scan's axial slices.
        shape: ``(H, W)`` of the slices on the model grid.
        scale: ``(sy, sx)`` model pixels per native pixel (native spacing / model spacing);
            None for a legacy model, whose slices are squashed to ``size x size``.
        phase: ``(py, px)`` in native pixels, in ``[0, 1 / scale)``.
    """

    native: tuple[int, int]
    shape: tuple[int, int]
    scale: tuple[float, float] | None
    phase: tuple[float, float] = (0.0, 0.0)


def inplane_spacing(spacing_xyz: Sequence[float]) -> tuple[float, float]:
    """``(y, x)`` pixel size in mm of axial slices ``[z, y, x]`` from an ``(x, y, z)`` spacing."""
    return float(spacing_xyz[1]), float(spacing_xyz[0])


def inplane_offset(meta: Any) -> tuple[float, float]:
    """``(y, x)`` scanner position (mm) of pixel ``[., 0, 0]`` along the slice's two axes.

    The projection of the origin on each in-plane axis direction: padding the scan with air
    moves it by whole pixels, which the model grid's phase then follows.
    """
    origin = np.asarray(meta.origin, dtype=np.float64)
    direction = np.asarray(meta.direction, dtype=np.float64).reshape(3, 3)
    return float(origin @ direction[:, 1]), float(origin @ direction[:, 0])


def model_grid(
    native: tuple[int, int],
    spacing_yx: tuple[float, float],
    preprocess: PreprocessConfig,
    offset_yx: tuple[float, float] = (0.0, 0.0),
) -> ModelGrid:
    """The model grid of slices of ``native`` pixels at ``spacing_yx`` mm.

    Args:
        native: ``(h, w)``.
        spacing_yx: pixel size in mm (:func:`inplane_spacing`).
        preprocess: the model's preprocessing.
        offset_yx: scanner position of the first pixel (:func:`inplane_offset`).

    Raises:
        InputError: a non-positive spacing, or a slice that would need over 16384 model pixels
            along an axis (a header with a wrong spacing; refused before allocating).
    """
    h, w = int(native[0]), int(native[1])
    if preprocess.spacing is None:
        return ModelGrid((h, w), (preprocess.size, preprocess.size), None)
    if not all(math.isfinite(s) and s > 0 for s in spacing_yx):
        raise InputError(f"pixel spacing {spacing_yx} mm is not a positive number.")
    target = preprocess.spacing
    scale = (spacing_yx[0] / target, spacing_yx[1] / target)
    # The small epsilon keeps 100 x 0.4 (= 39.999...) at 40 pixels.
    shape = (
        max(1, int(math.floor(h * scale[0] + 1e-6))),
        max(1, int(math.floor(w * scale[1] + 1e-6))),
    )
    if max(shape) > 16384:
        raise InputError(
            f"a {h} x {w} slice at {spacing_yx[0]:g} x {spacing_yx[1]:g} mm would be"
            f" {shape[0]} x {shape[1]} pixels at the model's {target:g} mm: check"
            " the scan's spacing."
        )
    phase = tuple(
        float(((0.5 * s - float(o) - 0.5 * target) % target) / s)
        for s, o in zip(spacing_yx, offset_yx, strict=True)
    )
    return ModelGrid((h, w), shape, scale, (phase[0], phase[1]))


def normalize_intensity(volume: np.ndarray, preprocess: PreprocessConfig) -> np.ndarray:
    """Model intensities of ``[z, y, x]`` (HU or the window's units), float32.

    With ``preprocess.intensity`` set: clip to the window, subtract the mean and divide by the
    standard deviation of the training foreground: the same mapping for every slice, so padding
    a scan with air or cropping it changes nothing. Without: :func:`normalize_slices`.
    """
    if preprocess.intensity is None:
        return normalize_slices(volume, preprocess.window)
    return apply_intensity(clip_to_window(volume, preprocess), preprocess)


def clip_to_window(volume: np.ndarray, preprocess: PreprocessConfig) -> np.ndarray:
    """``[z, y, x]`` clipped to the CT window, float32 (a new array)."""
    if volume.ndim != 3:
        raise InputError(f"expected a 3D volume [z, y, x], got an array of shape {volume.shape}.")
    low, high = preprocess.window
    return np.clip(volume.astype(np.float32, copy=True), low, high)


def apply_intensity(clipped: np.ndarray, preprocess: PreprocessConfig) -> np.ndarray:
    """``(clipped - mean) / std`` in float32 (a new array): the last, elementwise step of a
    model with intensity statistics. Applied to window-clipped values on either grid: the
    resampling weights sum to 1, so it commutes with resampling."""
    if preprocess.intensity is None:
        raise InputError("the model has no intensity statistics to apply.")
    mean, std = preprocess.intensity
    out = np.array(clipped, dtype=np.float32, copy=True)
    out -= np.float32(mean)
    out /= np.float32(std)
    return out


def pad_value(preprocess: PreprocessConfig) -> float:
    """The model intensity of air (the window's low end): what padding around a slice holds."""
    if preprocess.intensity is None:
        return 0.0
    return float((preprocess.window[0] - preprocess.intensity[0]) / preprocess.intensity[1])


@lru_cache(maxsize=64)
def resample_matrix(
    n_in: int, n_out: int, positions: tuple[float, float], order: int
) -> torch.Tensor:
    """``[n_out, n_in]`` weights that resample one axis: output ``i`` samples input position
    ``positions[0] + i * positions[1]`` (input pixels).

    ``order`` 1: linear interpolation, widened to a triangle of half-width ``step`` when the
    output is coarser than the input (antialiasing: every input pixel contributes); weights
    renormalised where the triangle leaves the input (the edge value continues). ``order`` 0:
    the nearest input pixel (label maps: ids are kept, never blended).
    """
    start, step = positions
    u = start + step * np.arange(n_out, dtype=np.float64)
    if order == 0:
        idx = np.clip(np.floor(u + 0.5).astype(np.int64), 0, n_in - 1)
        m = np.zeros((n_out, n_in), dtype=np.float32)
        m[np.arange(n_out), idx] = 1.0
        return torch.from_numpy(m)
    radius = max(1.0, step)
    j = np.arange(n_in, dtype=np.float64)
    weights = np.clip(1.0 - np.abs(j[None, :] - u[:, None]) / radius, 0.0, None)
    total = weights.sum(axis=1, keepdims=True)
    # A sample beyond the input's edge takes the edge pixel.
    empty = total[:, 0] <= 0
    if empty.any():
        weights[empty, np.clip(np.rint(u[empty]).astype(np.int64), 0, n_in - 1)] = 1.0
        total = weights.sum(axis=1, keepdims=True)
    return torch.from_numpy((weights / total).astype(np.float32))


def _resample(slices: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``[n, c, h, w]`` -> ``[n, c, H, W]`` as ``rows @ slice @ cols.T``, in chunks.

    Used on the way in (one channel): two small dense products beat a gather here.
    """
    out = []
    for start in range(0, slices.shape[0], _CHUNK):
        chunk = slices[start : start + _CHUNK].float()
        out.append(torch.matmul(torch.matmul(rows, chunk), cols.T))
    if not out:
        return slices.new_zeros((0, *slices.shape[1:-2], rows.shape[0], cols.shape[0]))
    return torch.cat(out, dim=0)


def _forward_matrices(grid: ModelGrid, order: int) -> tuple[torch.Tensor, torch.Tensor]:
    assert grid.scale is not None
    mats = []
    for n_in, n_out, scale, phase in zip(
        grid.native, grid.shape, grid.scale, grid.phase, strict=True
    ):
        # u_i = (i + 0.5) / scale - 0.5 + phase
        mats.append(resample_matrix(n_in, n_out, (0.5 / scale - 0.5 + phase, 1.0 / scale), order))
    return mats[0], mats[1]


@lru_cache(maxsize=8)
def _backward_grid(grid: ModelGrid) -> torch.Tensor:
    """``grid_sample`` coordinates ``[1, h, w, 2]`` of every native pixel on the model grid.

    The inverse of the forward map: native pixel ``j`` sits at model position
    ``(j + 0.5 - phase) * scale - 0.5``.
    """
    assert grid.scale is not None
    axes = []
    for n_native, n_model, scale, phase in zip(
        grid.native, grid.shape, grid.scale, grid.phase, strict=True
    ):
        v = (torch.arange(n_native, dtype=torch.float64) + 0.5 - phase) * scale - 0.5
        axes.append(((2.0 * v + 1.0) / n_model - 1.0).float())  # align_corners=False units
    yy, xx = torch.meshgrid(axes[0], axes[1], indexing="ij")
    return torch.stack((xx, yy), dim=-1)[None]


def to_model_grid(
    slices_hu: np.ndarray,
    spacing_yx: tuple[float, float],
    preprocess: PreprocessConfig,
    offset_yx: tuple[float, float] = (0.0, 0.0),
) -> tuple[np.ndarray, ModelGrid]:
    """Model input of axial slices: normalised intensities on the model's pixel grid.

    A model with intensity statistics: :func:`clipped_on_model_grid`, then
    :func:`apply_intensity` (what the slice cache stores is the first step's output, so cached
    and decoded training slices are the same numbers).

    Args:
        slices_hu: ``[z, y, x]`` HU (or the window's units), canonical orientation.
        spacing_yx: their in-plane pixel size in mm (:func:`inplane_spacing`).
        preprocess: the model's preprocessing.
        offset_yx: scanner position of the first pixel (:func:`inplane_offset`).

    Returns:
        ``(image, grid)``: float32 ``[z, H, W]`` and the grid mapping.
    """
    if slices_hu.ndim != 3:
        raise InputError(
            f"expected a 3D volume [z, y, x], got an array of shape {slices_hu.shape}."
        )
    grid = model_grid(slices_hu.shape[1:], spacing_yx, preprocess, offset_yx)
    if grid.scale is not None and preprocess.intensity is not None:
        clipped, grid = clipped_on_model_grid(slices_hu, spacing_yx, preprocess, offset_yx)
        return apply_intensity(clipped, preprocess), grid
    normalized = normalize_intensity(slices_hu, preprocess)
    if grid.scale is None:
        return resize_slices(normalized, preprocess.size, order=1), grid
    return _resample_image(normalized, grid), grid


def clipped_on_model_grid(
    slices_hu: np.ndarray,
    spacing_yx: tuple[float, float],
    preprocess: PreprocessConfig,
    offset_yx: tuple[float, float] = (0.0, 0.0),
) -> tuple[np.ndarray, ModelGrid]:
    """Window-clipped intensities ``[z, H, W]`` (float32, HU) on the model grid of a model with
    a pixel spacing: model input before its intensity statistics are applied.

    Raises:
        InputError: a legacy model (no spacing), or not a 3D volume.
    """
    if preprocess.spacing is None:
        raise InputError("a model without a pixel spacing has no fixed model grid.")
    grid = model_grid(slices_hu.shape[1:], spacing_yx, preprocess, offset_yx)
    return _resample_image(clip_to_window(slices_hu, preprocess), grid), grid


def _resample_image(slices: np.ndarray, grid: ModelGrid) -> np.ndarray:
    rows, cols = _forward_matrices(grid, order=1)
    tensor = torch.from_numpy(np.ascontiguousarray(slices))[:, None]
    with torch.no_grad():
        image = _resample(tensor, rows, cols)[:, 0].numpy()
    return np.ascontiguousarray(image, dtype=np.float32)


def labels_to_model_grid(labels: np.ndarray, grid: ModelGrid) -> np.ndarray:
    """A label map ``[z, y, x]`` on the model grid (nearest neighbour; ids are kept)."""
    if grid.scale is None:
        return resize_slices(labels, grid.shape[0], order=0)
    rows, cols = _forward_matrices(grid, order=0)
    tensor = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.float32))[:, None]
    with torch.no_grad():
        out = _resample(tensor, rows, cols)[:, 0].numpy()
    return np.rint(out).astype(labels.dtype)


def logits_to_native(logits: torch.Tensor, grid: ModelGrid) -> torch.Tensor:
    """Logits ``[z, c, H, W]`` on the model grid back to the slices' own ``[z, c, h, w]``."""
    with torch.no_grad():
        if grid.scale is None:
            if tuple(logits.shape[-2:]) == grid.native:
                return logits
            return _interpolate(logits.float(), grid.native, order=1)
        # Bilinear, edge values continued: grid_sample is as fast as interpolate and takes the
        # exact coordinates (a dense product per channel was ten times slower at 512 x 512).
        coords = _backward_grid(grid)
        out = []
        for start in range(0, logits.shape[0], _CHUNK):
            chunk = logits[start : start + _CHUNK].float()
            out.append(
                F.grid_sample(
                    chunk,
                    coords.expand(chunk.shape[0], -1, -1, -1),
                    mode="bilinear",
                    padding_mode="border",
                    align_corners=False,
                )
            )
        return torch.cat(out, dim=0)


def tile_starts(length: int, size: int, overlap: float = TILE_OVERLAP) -> list[int]:
    """Start positions of ``size``-pixel tiles covering ``length`` pixels.

    One tile (starting before 0, i.e. padded on both sides) when ``length <= size``; otherwise
    evenly spaced tiles from 0 to ``length - size`` that overlap by at least ``overlap``.
    """
    if length <= size:
        return [-((size - length) // 2)]
    step = size * (1.0 - overlap)
    n = int(math.ceil((length - size) / step)) + 1
    return sorted({int(round(v)) for v in np.linspace(0, length - size, n)})


@lru_cache(maxsize=8)
def _tile_weight(size: int) -> torch.Tensor:
    """Gaussian importance of each tile pixel (nnU-Net's, sigma = size / 8), floor 1e-3."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * (size / 8) ** 2))
    w = g[:, None] * g[None, :]
    w = w / w.max()
    return w.clamp_min(1e-3).float()


#: HU above which a pixel counts as the body (or anything else in the scanner: table,
#: bedding) when inference places its tiles: halfway between air (-1000) and water (0), far
#: above the noise of air, below every tissue. Lungs (about -850) lie inside the body's box.
BODY_HU = -500.0

#: Logit of every organ where no tile was run (outside the body's box): probability ~1e-13.
BACKGROUND_LOGIT = -30.0


def body_threshold(preprocess: PreprocessConfig) -> float | None:
    """The scan value (HU for a HU model) above which a pixel is body: :data:`BODY_HU`, kept
    at least 1% of the window above its low end; None when that leaves no room in the window."""
    low, high = preprocess.window
    level = max(BODY_HU, low + 0.01 * (high - low))
    return None if level >= high else float(level)


def body_level(preprocess: PreprocessConfig) -> float | None:
    """The model intensity above which a pixel is body (:func:`body_threshold`); None for a
    model without fixed intensity statistics (its normalisation is per slice, so air has no
    fixed value): tiles then cover the whole slice."""
    level = body_threshold(preprocess)
    if preprocess.intensity is None or level is None:
        return None
    return float((level - preprocess.intensity[0]) / preprocess.intensity[1])


#: HU at or below which a pixel is the scanner's padding outside its reconstruction circle
#: (scanners write -1024 to -3024 there). Air reads about -1000 with noise, so padding of -1024
#: is not told apart from air, and only the slice's border counts as the field's edge then.
PADDING_HU = -1100.0

#: Share of a slice's rim (its border pixels and those next to the padding) that the trunk
#: must hold for the slice to count as cut by the scanner's field of view. On the real series
#: cut to centred fields (its trunk lies low in the field): 0.04-0.06 from 450 down to 350 mm,
#: where the table, joined to the trunk, reaches the edge; 0.18 at 320 mm and 0.43 at 292 mm,
#: where the trunk itself is cut.
CUT_RIM_SHARE = 0.10


def slices_cut_by_field(volume: np.ndarray, preprocess: PreprocessConfig) -> int:
    """How many slices of ``volume`` show a body cut by the scanner's field of view.

    ``volume``: ``[z, y, x]`` in HU, slices across the body (canonical). A slice's rim is its
    border pixels and the pixels next to the padding outside a reconstruction circle
    (:data:`PADDING_HU`); the slice is cut when at least :data:`CUT_RIM_SHARE` of its rim
    belongs to the trunk, the largest connected part above :func:`body_threshold` (arms cut by
    the field do not count, a table beside the trunk only a little). A body inside the field,
    with air around it, is not cut. Only for HU models (window from -1000 HU or lower): in
    other units (8-bit micro-CT) air has no known value, and 0 is returned.
    """
    from scipy import ndimage

    level = body_threshold(preprocess)
    if level is None or preprocess.window[0] > -1000.0:
        return 0
    cut = 0
    for image in volume:
        parts, count = ndimage.label(image > level)
        if count == 0:
            continue
        body = parts == int(np.argmax(np.bincount(parts.ravel())[1:])) + 1
        rim = np.zeros(body.shape, dtype=bool)
        rim[[0, -1], :] = True
        rim[:, [0, -1]] = True
        padding = image <= PADDING_HU
        rim[1:] |= padding[:-1]
        rim[:-1] |= padding[1:]
        rim[:, 1:] |= padding[:, :-1]
        rim[:, :-1] |= padding[:, 1:]
        rim &= ~padding
        total = int(rim.sum())
        if total and int((rim & body).sum()) >= CUT_RIM_SHARE * total:
            cut += 1
    return cut


def _box_starts(mask_1d: np.ndarray, size: int) -> list[int]:
    """Tile starts covering the span of ``mask_1d``'s true entries (one tile centred on it
    when the span is shorter than a tile; a centred tile when there is none). An axis no
    longer than a tile gets its usual single tile."""
    if mask_1d.shape[0] <= size:
        return tile_starts(mask_1d.shape[0], size)
    hits = np.flatnonzero(mask_1d)
    if hits.size == 0:
        return [-((size - mask_1d.shape[0]) // 2)]
    first, last = int(hits[0]), int(hits[-1])
    return [first + s for s in tile_starts(last - first + 1, size)]


#: The grids of tiles beyond the first for each number of tilings
#: (:attr:`~vetseg.config.PreprocessConfig.tilings`): moves ``(rows, columns)`` of the first
#: grid, in quarters of a tile. Diagonal both ways for 3; up, down, left, right for 5.
TILING_SHIFTS: dict[int, tuple[tuple[int, int], ...]] = {
    1: (),
    3: ((1, 1), (-1, -1)),
    5: ((1, 0), (-1, 0), (0, 1), (0, -1)),
}


def plan_tiles(
    image: np.ndarray, size: int, body: float | None = None, tilings: int = 1
) -> list[tuple[int, int, int]]:
    """``(slice, y, x)`` of every ``size`` tile :func:`tiled_logits` runs on ``image``
    (``[z, H, W]`` or ``[z, k, H, W]``; starts may be negative or run past the slice: the
    canvas is padded there).

    ``body`` None: every slice is covered whole (:func:`tile_starts`). Otherwise tiles cover
    only each slice's body box, the rows and columns holding a pixel above ``body`` in any
    channel (:func:`body_level`); the rest of the slice is air and is labelled background
    without running the network. A slice with no body pixel gets one centred tile. The tiles
    sit where the body is, not where the field of view ends, so a scan padded with air or
    cropped around the body is tiled alike.

    ``tilings`` 3 or 5: the tiles of that first grid, then the same grid moved by each of
    :data:`TILING_SHIFTS` (a quarter tile, ``round(size / 4)`` pixels, per step), every one
    relative to the body's box, so field-of-view invariance holds for every grid. Moved tiles
    may reach past the slice (into the padding) or past the body (into air).
    """
    if tilings not in TILING_SHIFTS:
        raise ValueError(f"tilings must be one of {sorted(TILING_SHIFTS)}, got {tilings!r}")
    if image.ndim == 3:
        image = image[:, None]
    z, _, height, width = image.shape
    if body is None:
        ys, xs = tile_starts(height, size), tile_starts(width, size)
        tiles = [(k, y, x) for k in range(z) for y in ys for x in xs]
    else:
        tiles = []
        for k in range(z):
            mask = (image[k] > body).any(axis=0)
            ys, xs = _box_starts(mask.any(axis=1), size), _box_starts(mask.any(axis=0), size)
            tiles.extend((k, y, x) for y in ys for x in xs)
    step = int(round(size / 4))
    first = list(tiles)
    for dy, dx in TILING_SHIFTS[tilings]:
        tiles.extend((k, y + dy * step, x + dx * step) for k, y, x in first)
    return tiles


def tiled_logits(
    run: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    size: int,
    fill: float,
    batch_size: int,
    body: float | None = None,
    tilings: int = 1,
) -> torch.Tensor:
    """Logits of model-grid slices of any size through a network that takes ``size`` tiles.

    Args:
        run: ``[b, k, size, size]`` float32 -> ``[b, c, size, size]`` logits (an engine).
        image: ``[z, H, W]`` float32 model input (:func:`to_model_grid`), or ``[z, k, H, W]``
            for a model with neighbouring slices as input channels
            (:func:`~vetseg.data.context.stack_context`); every channel is tiled alike.
        size: the network's tile size.
        fill: the model intensity of padding (:func:`pad_value`).
        batch_size: tiles per call of ``run``.
        body: the model intensity of the body threshold (:func:`body_level`): tiles cover
            only the body's box of each slice (:func:`plan_tiles`) and the pixels no tile
            covers get :data:`BACKGROUND_LOGIT`. None: every pixel is covered.
        tilings: grids of tiles run and averaged (:func:`plan_tiles`; 1, 3 or 5).

    Returns:
        float32 ``[z, c, H, W]``: where tiles overlap, their logits are averaged with a
        Gaussian weight that trusts tile centres (context on every side) over tile borders.
    """
    if image.ndim == 3:
        image = image[:, None]
    z, channels, height, width = image.shape
    if body is None and height == width == size and tilings == 1:
        chunks = [
            torch.from_numpy(
                np.asarray(
                    run(np.ascontiguousarray(image[s : s + batch_size], dtype=np.float32)),
                    dtype=np.float32,
                )
            )
            for s in range(0, z, batch_size)
        ]
        return torch.cat(chunks, dim=0)
    tiles = plan_tiles(image, size, body, tilings)
    top = min(0, min(y for _, y, _ in tiles))
    left = min(0, min(x for _, _, x in tiles))
    padded_h = max(height, max(y for _, y, _ in tiles) + size) - top
    padded_w = max(width, max(x for _, _, x in tiles) + size) - left
    canvas = np.full((z, channels, padded_h, padded_w), fill, dtype=np.float32)
    canvas[:, :, -top : -top + height, -left : -left + width] = image
    tiles = [(k, y - top, x - left) for k, y, x in tiles]
    weight = _tile_weight(size)
    total: torch.Tensor | None = None
    norm = torch.zeros((z, 1, padded_h, padded_w), dtype=torch.float32)
    for k, y, x in tiles:
        norm[k, 0, y : y + size, x : x + size] += weight
    for start in range(0, len(tiles), batch_size):
        part = tiles[start : start + batch_size]
        batch = np.stack([canvas[k, :, y : y + size, x : x + size] for k, y, x in part])
        logits = torch.from_numpy(np.asarray(run(batch), dtype=np.float32))
        if total is None:
            total = torch.zeros((z, logits.shape[1], padded_h, padded_w), dtype=torch.float32)
        for (k, y, x), tile in zip(part, logits, strict=True):
            total[k, :, y : y + size, x : x + size] += tile * weight
    assert total is not None  # z >= 1 and at least one tile per slice
    covered = norm > 0
    total = torch.where(covered, total / norm.clamp_min(1e-12), BACKGROUND_LOGIT)
    return total[:, :, -top : -top + height, -left : -left + width].contiguous()


def foreground_intensity(
    cases: Sequence[tuple[np.ndarray, np.ndarray]],
    window: tuple[float, float],
    max_voxels_per_case: int = 200_000,
) -> tuple[float, float]:
    """Mean and standard deviation of window-clipped intensities inside the labelled organs.

    nnU-Net's normalisation for CT: statistics of the foreground over the training set, then the
    same mapping for every scan. A seeded, evenly strided sample of each case's organ voxels
    keeps it fast on large cases.

    Args:
        cases: ``(image, labels)`` pairs ``[z, y, x]``; labels > 0 mark organs.
        window: clip range applied first.
        max_voxels_per_case: organ voxels sampled per case at most.

    Returns:
        ``(mean, std)``; std at least 1e-3 of the window's width.

    Raises:
        InputError: when no case has a labelled voxel.
    """
    samples = [foreground_sample(image, labels, max_voxels_per_case) for image, labels in cases]
    return intensity_from_samples(samples, window)


def foreground_sample(
    image: np.ndarray, labels: np.ndarray, max_voxels: int = 200_000
) -> np.ndarray:
    """The organ voxels of one case that :func:`foreground_intensity` pools: an evenly strided
    sample of at most ``max_voxels``, unclipped, in the image's dtype (the slice cache keeps it,
    so statistics from a cache equal those from the decoded scans)."""
    values = image[labels > 0]
    if values.size > max_voxels:
        values = values[:: int(math.ceil(values.size / max_voxels))]
    return values


def intensity_from_samples(
    samples: Sequence[np.ndarray], window: tuple[float, float]
) -> tuple[float, float]:
    """``(mean, std)`` of the window-clipped, pooled :func:`foreground_sample` of the cases."""
    low, high = float(window[0]), float(window[1])
    clipped = [np.clip(values.astype(np.float64), low, high) for values in samples]
    pooled = np.concatenate(clipped) if clipped else np.zeros(0)
    if pooled.size == 0:
        raise InputError("no labelled voxel to compute intensity statistics from.")
    std = max(float(pooled.std()), 1e-3 * (high - low))
    return float(pooled.mean()), std
