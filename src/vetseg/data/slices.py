"""2D axial training slices of loaded cases, preprocessed once and held in memory.

Every case goes through :func:`~vetseg.data.preprocess.to_model_grid` (the same input
definition inference uses) once; label maps go to the same grid with nearest interpolation.
A model with a pixel spacing (``PreprocessConfig.spacing``) sees ``size x size`` crops of these
slices: half of them centred on a pixel of an organ the slice shows (each present organ equally
likely, so small organs are not only seen at a crop's edge), the rest anywhere the crop
overlaps the body; a slice smaller than the crop is padded with air at a random offset. A
legacy model (no spacing) sees whole slices squashed to ``size x size``, as before.
Slices that show no organ carry little signal, so only a seeded fraction of them is kept.
Per-sample crops and augmentation draw from a generator derived from ``(seed, epoch, index)``:
a run reproduces whatever the number of DataLoader workers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from vetseg.config import AugmentConfig, PreprocessConfig
from vetseg.data.augment import Augmenter, build_augment
from vetseg.data.datasets import LoadedCase
from vetseg.data.preprocess import (
    inplane_offset,
    inplane_spacing,
    labels_to_model_grid,
    pad_value,
    to_model_grid,
)
from vetseg.errors import InputError


class SliceDataset(torch.utils.data.Dataset):
    """Axial slices of many cases with one binary target channel per organ.

    Args:
        loaded_cases: cases with labels in vetseg ids for ``organs`` (``organs[i]`` -> ``i + 1``).
        organs: the vocabulary: target channel ``i`` is ``organs[i]``.
        preprocess: window and input size (the model's input definition).
        augment: per-sample augmentation, or None (validation, or no augmentation).
        empty_slice_rate: fraction of the slices without any organ that are kept (a seeded
            choice of ``round(rate * n_empty)`` of them).
        seed: seed of the empty-slice choice and of the augmentation.
        cache_dtype: dtype of the cached image slices; float16 halves memory for large sets at
            a rounding error of ~1e-3 of the slice's standard deviation.

    Raises:
        InputError: a case without labels, labels outside the vocabulary, a bad rate, or no
            slice left.
    """

    def __init__(
        self,
        loaded_cases: Sequence[LoadedCase],
        organs: Sequence[str],
        preprocess: PreprocessConfig,
        augment: AugmentConfig | None = None,
        empty_slice_rate: float = 0.1,
        seed: int = 0,
        cache_dtype: type[np.floating] = np.float32,
    ) -> None:
        if not 0.0 <= empty_slice_rate <= 1.0:
            raise InputError(f"empty slice rate must lie in [0, 1], got {empty_slice_rate}.")
        if not loaded_cases:
            raise InputError("no cases to make training slices from.")
        self.organs = tuple(organs)
        self.preprocess = preprocess
        self.seed = int(seed)
        self.epoch = 0
        self.empty_slice_rate = float(empty_slice_rate)
        self.augmenter: Augmenter | None = (
            build_augment(augment, self.organs) if augment is not None and augment.enabled else None
        )
        n_organs = len(self.organs)
        self._organ_ids = np.arange(1, n_organs + 1, dtype=np.uint8)[:, None, None]

        self.size = int(preprocess.size)
        self.fill = pad_value(preprocess)
        images, labels, origins = [], [], []
        for case in loaded_cases:
            if case.labels is None:
                raise InputError(f"case {case.case_id} has no label map to train on.")
            if case.labels.shape != case.image.shape:
                raise InputError(
                    f"case {case.case_id}: label map {case.labels.shape} and image"
                    f" {case.image.shape} differ in shape."
                )
            if int(case.labels.max(initial=0)) > n_organs:
                raise InputError(
                    f"case {case.case_id}: label id {int(case.labels.max())} is outside the"
                    f" {n_organs} organs {list(self.organs)}."
                )
            meta = case.canonical_meta
            image, grid = to_model_grid(
                case.image, inplane_spacing(meta.spacing), preprocess, inplane_offset(meta)
            )
            images.extend(image.astype(cache_dtype))
            labels.extend(labels_to_model_grid(case.labels.astype(np.uint8), grid))
            origins.extend((case.case_id, z) for z in range(case.image.shape[0]))
        # Presence on the model grid (whole slices): what the targets can show.
        presence = np.stack([(lab[None] == self._organ_ids).any(axis=(1, 2)) for lab in labels])

        has_organ = presence.any(axis=1)
        empty = np.flatnonzero(~has_organ)
        n_keep = int(np.floor(self.empty_slice_rate * empty.size + 0.5))
        chosen = np.random.default_rng([self.seed, 0x5E1EC7]).choice(empty, n_keep, replace=False)
        keep = np.sort(np.concatenate([np.flatnonzero(has_organ), chosen]))
        if keep.size == 0:
            raise InputError(f"no slice of the {len(loaded_cases)} case(s) shows any organ.")

        # Slices keep their own (model-grid) shapes; a legacy model's are all size x size.
        self._images = [np.ascontiguousarray(images[i]) for i in keep]
        self._labels = [np.ascontiguousarray(labels[i]) for i in keep]
        self._presence = presence[keep]
        self._origins = [origins[i] for i in keep]
        #: Slices of all cases before the empty-slice choice, and how many were empty.
        self.n_slices_total = len(labels)
        self.n_empty_total = int(empty.size)

    def __len__(self) -> int:
        return len(self._images)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch`` (call before every epoch)."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One sample.

        Returns:
            ``(image, target)``: float32 ``[1, S, S]`` and float32 ``[n_organs, S, S]`` in
            {0, 1}.
        """
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"slice index {index} out of range for {len(self)} slices")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        image, labels = self._images[index], self._labels[index]
        if image.shape != (self.size, self.size):
            image, labels = self._crop(image, labels, rng)
        image = image.astype(np.float32)
        masks = (labels[None] == self._organ_ids).astype(np.uint8)
        if self.augmenter is not None:
            image, masks = self.augmenter(image, masks, rng)
        return (
            torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)[None]),
            torch.from_numpy(masks.astype(np.float32)),
        )

    def _crop(
        self, image: np.ndarray, labels: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """A ``size x size`` crop (padded with air where the slice is smaller)."""
        size = self.size
        present = np.unique(labels)
        present = present[present > 0]
        if present.size and rng.random() < 0.5:
            organ = rng.choice(present)
            ys, xs = np.nonzero(labels == organ)
            pick = int(rng.integers(ys.size))
            centre = (int(ys[pick]), int(xs[pick]))
        else:
            # Anywhere on the body: pixels above the middle of the window's model intensities.
            body = image > self.fill * 0.5
            ys, xs = np.nonzero(body) if body.any() else np.nonzero(np.ones_like(body))
            pick = int(rng.integers(ys.size))
            centre = (int(ys[pick]), int(xs[pick]))
        starts = []
        for axis in (0, 1):
            length = image.shape[axis]
            if length <= size:
                # Pad: the slice sits at a random offset inside the crop.
                starts.append(-int(rng.integers(0, size - length + 1)))
            else:
                jitter = int(rng.integers(-size // 4, size // 4 + 1))
                start = centre[axis] - size // 2 + jitter
                starts.append(int(np.clip(start, 0, length - size)))
        out_image = np.full((size, size), self.fill, dtype=image.dtype)
        out_labels = np.zeros((size, size), dtype=labels.dtype)
        y0, x0 = starts
        src_y = slice(max(y0, 0), min(y0 + size, image.shape[0]))
        src_x = slice(max(x0, 0), min(x0 + size, image.shape[1]))
        dst_y = slice(src_y.start - y0, src_y.stop - y0)
        dst_x = slice(src_x.start - x0, src_x.stop - x0)
        out_image[dst_y, dst_x] = image[src_y, src_x]
        out_labels[dst_y, dst_x] = labels[src_y, src_x]
        return out_image, out_labels

    # ------------------------------------------------------------------ sampling
    def organ_slice_counts(self) -> np.ndarray:
        """Number of kept slices showing each organ, ``[n_organs]``."""
        return self._presence.sum(axis=0)

    def slice_weights(self, balance: float = 0.5) -> np.ndarray:
        """Sampling weights that draw slices of rare organs more often.

        ``w = 1 + sum over organs on the slice of (max_freq / freq_organ) ** balance``, where
        ``freq`` counts the slices showing an organ. The default square root keeps a tiny organ
        from taking over an epoch; 1.0 gives every organ about equal exposure; 0 no preference.

        Args:
            balance: the exponent above (``StageConfig.organ_balance``).

        Returns:
            float64 ``[len(self)]``, normalised to sum 1, for a ``WeightedRandomSampler``.
        """
        counts = self.organ_slice_counts().astype(np.float64)
        boost = np.zeros_like(counts)
        seen = counts > 0
        if seen.any():
            boost[seen] = (counts.max() / counts[seen]) ** balance
        weights = 1.0 + self._presence.astype(np.float64) @ boost
        return weights / weights.sum()

    # ------------------------------------------------------------------ debugging
    @property
    def case_ids_per_slice(self) -> list[str]:
        """The case of every kept slice, in index order."""
        return [case_id for case_id, _ in self._origins]

    def slice_origin(self, index: int) -> tuple[str, int]:
        """``(case_id, z)`` of slice ``index``: z indexes the case's canonical volume."""
        return self._origins[index]
