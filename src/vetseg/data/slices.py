"""2D axial training slices of loaded cases, preprocessed once and held in memory.

Every case goes through :func:`~vetseg.data.preprocess.prepare_volume` (the same input
definition inference uses) once; label maps are resized with nearest interpolation. Slices that
show no organ carry little signal, so only a seeded fraction of them is kept. Per-sample
augmentation draws from a generator derived from ``(seed, epoch, index)``: a run reproduces
whatever the number of DataLoader workers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from vetseg.config import AugmentConfig, PreprocessConfig
from vetseg.data.augment import Augmenter, build_augment
from vetseg.data.datasets import LoadedCase
from vetseg.data.preprocess import prepare_volume, resize_slices
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
            images.append(prepare_volume(case.image, preprocess)[:, 0].astype(cache_dtype))
            labels.append(resize_slices(case.labels.astype(np.uint8), preprocess.size, order=0))
            origins.extend((case.case_id, z) for z in range(case.image.shape[0]))
        all_images = np.concatenate(images)
        all_labels = np.concatenate(labels)
        # Presence at model resolution: what the targets actually show.
        presence = (all_labels[:, None] == self._organ_ids[None]).any(axis=(2, 3))

        has_organ = presence.any(axis=1)
        empty = np.flatnonzero(~has_organ)
        n_keep = int(np.floor(self.empty_slice_rate * empty.size + 0.5))
        chosen = np.random.default_rng([self.seed, 0x5E1EC7]).choice(empty, n_keep, replace=False)
        keep = np.sort(np.concatenate([np.flatnonzero(has_organ), chosen]))
        if keep.size == 0:
            raise InputError(f"no slice of the {len(loaded_cases)} case(s) shows any organ.")

        self._images = np.ascontiguousarray(all_images[keep])
        self._labels = np.ascontiguousarray(all_labels[keep])
        self._presence = presence[keep]
        self._origins = [origins[i] for i in keep]
        #: Slices of all cases before the empty-slice choice, and how many were empty.
        self.n_slices_total = int(all_labels.shape[0])
        self.n_empty_total = int(empty.size)

    def __len__(self) -> int:
        return int(self._images.shape[0])

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
        image = self._images[index].astype(np.float32)
        masks = (self._labels[index][None] == self._organ_ids).astype(np.uint8)
        if self.augmenter is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            image, masks = self.augmenter(image, masks, rng)
        return (
            torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)[None]),
            torch.from_numpy(masks.astype(np.float32)),
        )

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
