"""Neighbouring slices as extra input channels (``PreprocessConfig.context_slices``).

A model with ``context_slices = N`` sees, for slice ``z``, the stack of slices ``z - N .. z + N``
as ``1 + 2N`` channels, the slice itself in the middle. At the ends of a volume the end slice
is repeated (no slice is invented, and the stack still has the anatomy nearest to it). Training
(:class:`~vetseg.data.slices.SliceDataset`), validation and every inference path build their
stacks with these functions, so that they agree.
"""

from __future__ import annotations

import numpy as np


def context_indices(start: int, stop: int, total: int, context: int) -> np.ndarray:
    """Slice indices ``start - context .. stop - 1 + context``, clipped to ``[0, total)``.

    Args:
        start: first slice of the batch.
        stop: one past its last slice.
        total: slices in the volume.
        context: neighbours on each side.

    Returns:
        int64 ``[stop - start + 2 * context]``: the batch with its neighbours, the volume's end
        slices repeated where the neighbours would lie outside it.
    """
    return np.clip(np.arange(start - context, stop + context), 0, total - 1).astype(np.int64)


def neighbour_indices(zs: np.ndarray, total: int, context: int) -> np.ndarray:
    """``[len(zs), 1 + 2 * context]``: every slice of ``zs`` and its neighbours, clipped."""
    offsets = np.arange(-context, context + 1)
    return np.clip(np.asarray(zs)[:, None] + offsets[None, :], 0, total - 1).astype(np.int64)


def stack_context(slices: np.ndarray, context: int) -> np.ndarray:
    """Model input stacks of consecutive slices.

    Args:
        slices: ``[b + 2 * context, H, W]``, a batch with its neighbours
            (``volume[context_indices(...)]`` on the model grid).
        context: neighbours on each side.

    Returns:
        ``[b, 1 + 2 * context, H, W]``, a new contiguous array (``context`` 0: a view):
        stack ``k`` holds slices ``k .. k + 2 * context`` of ``slices``, i.e. batch slice
        ``k`` in the middle.
    """
    if context == 0:
        return slices[:, None]
    width = 1 + 2 * context
    if slices.shape[0] < width:
        raise ValueError(f"{slices.shape[0]} slices cannot hold a stack of {width}")
    windows = np.lib.stride_tricks.sliding_window_view(slices, width, axis=0)
    # A copy: the window view is read-only (and its overlapping strides look contiguous).
    return np.array(np.moveaxis(windows, -1, 1), order="C", copy=True)
