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
a run reproduces whatever the number of DataLoader workers. A model with neighbouring slices as
input channels (``PreprocessConfig.context_slices``) gets each slice's stack
(:mod:`vetseg.data.context`), cropped and augmented as one image.

:meth:`SliceDataset.from_cache` reads the same slices from a slice cache
(:mod:`vetseg.data.cache`) through memory maps instead of decoding scans: a model with a pixel
spacing and intensity statistics keeps window-clipped HU on the model grid (what the cache
stores) and applies its statistics per sample, so both give the very same samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vetseg.config import AugmentConfig, PreprocessConfig
from vetseg.data.augment import Augmenter, build_augment, shift_soft_tissue
from vetseg.data.context import neighbour_indices
from vetseg.data.datasets import LoadedCase
from vetseg.data.preprocess import (
    apply_intensity,
    clipped_on_model_grid,
    inplane_offset,
    inplane_spacing,
    labels_to_model_grid,
    pad_value,
    to_model_grid,
)
from vetseg.errors import InputError
from vetseg.io.units import AIR_HU

if TYPE_CHECKING:
    from vetseg.data.cache import SliceCache

#: One case on the model grid: ``(case_id, images [z, H, W], labels [z, H, W], presence
#: [z, n_organs])``; the arrays may be memory-mapped (:class:`~vetseg.data.cache.LazyArray`).
_Volume = tuple[str, Any, Any, np.ndarray]

#: Last entry of the soft-tissue HU shift's generator seed ``(seed, epoch, index, stream)``.
_HU_SHIFT_STREAM = 0x48553


def _check_hounsfield(volumes: Sequence[_Volume]) -> None:
    """Refuse the soft-tissue HU shift when no case shows air in HU (its middle slice's lowest
    value above :data:`vetseg.io.units.AIR_HU`): the -200..300 HU band would mean nothing there.

    Raises:
        InputError: naming the lowest value found.
    """
    lowest = min(float(np.min(np.asarray(v[1][len(v[3]) // 2]))) for v in volumes)
    if lowest > AIR_HU:
        raise InputError(
            f"--hu-shift assumes Hounsfield units, but no training scan shows air (lowest value"
            f" {lowest:g} in their middle slices, air is about -1000 HU): leave out --hu-shift"
            " for scans on another intensity scale."
        )


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
        self._setup(organs, preprocess, augment, empty_slice_rate, seed)
        if not loaded_cases:
            raise InputError("no cases to make training slices from.")
        volumes = []
        for case in loaded_cases:
            image, labels = self._model_grid(case)
            volumes.append(
                (case.case_id, image.astype(cache_dtype), labels, self._presence_of(labels))
            )
        self._select(volumes, in_memory=True)

    @classmethod
    def from_cache(
        cls,
        cache: SliceCache,
        case_ids: Sequence[str],
        organs: Sequence[str],
        preprocess: PreprocessConfig,
        augment: AugmentConfig | None = None,
        empty_slice_rate: float = 0.1,
        seed: int = 0,
    ) -> SliceDataset:
        """The same slices, read from a slice cache's memory maps instead of decoded scans.

        Only the kept slices' pages are ever read; nothing is decoded or resampled.

        Raises:
            InputError: a cache made with other settings (spacing, window, orientation,
                organs), a model without intensity statistics, or a case not in the cache.
        """
        from vetseg.data.cache import CacheSettings

        cache.check(CacheSettings.of(preprocess, organs, cache.settings.data_orientation))
        if preprocess.intensity is None:
            raise InputError("training from a slice cache needs the model's intensity statistics.")
        if not case_ids:
            raise InputError("no cases to make training slices from.")
        dataset = cls.__new__(cls)
        dataset._setup(organs, preprocess, augment, empty_slice_rate, seed)
        volumes = [
            (cid, cache.images(cid), cache.labels(cid), cache.presence(cid)) for cid in case_ids
        ]
        dataset._select(volumes, in_memory=False)
        return dataset

    def _setup(
        self,
        organs: Sequence[str],
        preprocess: PreprocessConfig,
        augment: AugmentConfig | None,
        empty_slice_rate: float,
        seed: int,
    ) -> None:
        if not 0.0 <= empty_slice_rate <= 1.0:
            raise InputError(f"empty slice rate must lie in [0, 1], got {empty_slice_rate}.")
        self.organs = tuple(organs)
        self.preprocess = preprocess
        self.seed = int(seed)
        self.epoch = 0
        self.empty_slice_rate = float(empty_slice_rate)
        self.augmenter: Augmenter | None = (
            build_augment(augment, self.organs) if augment is not None and augment.enabled else None
        )
        self._organ_ids = np.arange(1, len(self.organs) + 1, dtype=np.uint8)[:, None, None]
        self.size = int(preprocess.size)
        self.context = int(preprocess.context_slices)
        self.fill = pad_value(preprocess)
        # A model with a spacing and intensity statistics keeps window-clipped HU (what the
        # slice cache stores) and applies its statistics per sample; others keep model input.
        self._stores_clipped = preprocess.spacing is not None and preprocess.intensity is not None
        self._hu_shift: AugmentConfig | None = None
        if augment is not None and augment.enabled and augment.hu_shift > 0:
            if not self._stores_clipped:
                raise InputError(
                    "hu_shift needs a model with a pixel spacing and intensity statistics (its"
                    " slices stay in HU until the last step)."
                )
            self._hu_shift = augment

    def _shift_hu(self, image: np.ndarray, labels: np.ndarray, index: int) -> np.ndarray:
        """The soft-tissue HU shift (:func:`~vetseg.data.augment.shift_soft_tissue`), with its
        own generator so that the crop and the other augmentations draw as without it."""
        config = self._hu_shift
        assert config is not None
        rng = np.random.default_rng([self.seed, self.epoch, index, _HU_SHIFT_STREAM])
        if rng.random() >= config.hu_shift:
            return image
        shifted, _, _ = shift_soft_tissue(
            image,
            labels,
            rng,
            len(self.organs),
            config.hu_shift_case,
            config.hu_shift_organ,
        )
        return shifted

    def _model_grid(self, case: LoadedCase) -> tuple[np.ndarray, np.ndarray]:
        n_organs = len(self.organs)
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
        grid_args = (
            case.image,
            inplane_spacing(meta.spacing),
            self.preprocess,
            inplane_offset(meta),
        )
        image, grid = (
            clipped_on_model_grid(*grid_args) if self._stores_clipped else to_model_grid(*grid_args)
        )
        return image, labels_to_model_grid(case.labels.astype(np.uint8), grid)

    def _presence_of(self, labels: np.ndarray) -> np.ndarray:
        """Presence on the model grid (whole slices): what the targets can show."""
        return np.stack([(lab[None] == self._organ_ids).any(axis=(1, 2)) for lab in labels])

    def _select(self, volumes: list[_Volume], in_memory: bool) -> None:
        """Keep the slices that show an organ and a seeded share of the others."""
        if self._hu_shift is not None:
            _check_hounsfield(volumes)
        presence = np.concatenate([volume[3] for volume in volumes])
        origins = [(cid, v, z) for v, (cid, _, _, p) in enumerate(volumes) for z in range(len(p))]
        has_organ = presence.any(axis=1)
        empty = np.flatnonzero(~has_organ)
        n_keep = int(np.floor(self.empty_slice_rate * empty.size + 0.5))
        chosen = np.random.default_rng([self.seed, 0x5E1EC7]).choice(empty, n_keep, replace=False)
        keep = np.sort(np.concatenate([np.flatnonzero(has_organ), chosen]))
        if keep.size == 0:
            raise InputError(f"no slice of the {len(volumes)} case(s) shows any organ.")
        kept_origins = [origins[i] for i in keep]
        self._images: list[Any] = [volume[1] for volume in volumes]
        self._labels: list[Any] = [volume[2] for volume in volumes]
        # (volume, z in the stored volume) of every kept slice.
        self._where = np.array([(v, z) for _, v, z in kept_origins], dtype=np.int64)
        # z in the stored volume of every kept slice's input stack (itself and its neighbours).
        self._stack = np.zeros((len(kept_origins), 1 + 2 * self.context), dtype=np.int64)
        for v, volume in enumerate(volumes):
            rows = self._where[:, 0] == v
            n_slices = len(volume[3])
            self._stack[rows] = neighbour_indices(self._where[rows, 1], n_slices, self.context)
        if in_memory:
            # Held in memory: keep only the kept slices and their neighbours (most empty go).
            for v in range(len(volumes)):
                rows = self._where[:, 0] == v
                zs = np.unique(self._stack[rows])
                self._images[v] = np.ascontiguousarray(self._images[v][zs])
                self._labels[v] = np.ascontiguousarray(self._labels[v][zs])
                self._stack[rows] = np.searchsorted(zs, self._stack[rows])
                self._where[rows, 1] = self._stack[rows, self.context]
        self._presence = presence[keep]
        self._origins = [(cid, z) for cid, _, z in kept_origins]
        #: Slices of all cases before the empty-slice choice, and how many were empty.
        self.n_slices_total = int(presence.shape[0])
        self.n_empty_total = int(empty.size)

    def __len__(self) -> int:
        return len(self._origins)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch`` (call before every epoch)."""
        self.epoch = int(epoch)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One sample.

        Returns:
            ``(image, target)``: float32 ``[C, S, S]`` (C = 1 + 2 * context_slices: the slice,
            with its neighbours on both sides when the model takes them) and float32
            ``[n_organs, S, S]`` in {0, 1}.
        """
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"slice index {index} out of range for {len(self)} slices")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        volume, z = self._where[index]
        if self.context:
            image = np.stack([np.asarray(self._images[volume][k]) for k in self._stack[index]])
        else:
            image = np.asarray(self._images[volume][z])
        labels = np.asarray(self._labels[volume][z])
        if self._stores_clipped:
            if self._hu_shift is not None:
                image = self._shift_hu(image, labels, index)
            image = apply_intensity(image, self.preprocess)
        if image.shape[-2:] != (self.size, self.size):
            image, labels = self._crop(image, labels, rng)
        image = image.astype(np.float32)
        masks = (labels[None] == self._organ_ids).astype(np.uint8)
        if self.augmenter is not None:
            image, masks = self.augmenter(image, masks, rng)
        image = np.ascontiguousarray(image, dtype=np.float32)
        return (
            torch.from_numpy(image if self.context else image[None]),
            torch.from_numpy(masks.astype(np.float32)),
        )

    def _crop(
        self, image: np.ndarray, labels: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """A ``size x size`` crop (padded with air where the slice is smaller).

        ``image`` is ``[H, W]``, or a stack ``[C, H, W]`` cropped alike (its centre slice
        chooses the crop, as a lone slice would).
        """
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
            centre_slice = image[image.shape[0] // 2] if image.ndim == 3 else image
            body = centre_slice > self.fill * 0.5
            ys, xs = np.nonzero(body) if body.any() else np.nonzero(np.ones_like(body))
            pick = int(rng.integers(ys.size))
            centre = (int(ys[pick]), int(xs[pick]))
        starts = []
        for axis in (0, 1):
            length = labels.shape[axis]
            if length <= size:
                # Pad: the slice sits at a random offset inside the crop.
                starts.append(-int(rng.integers(0, size - length + 1)))
            else:
                jitter = int(rng.integers(-size // 4, size // 4 + 1))
                start = centre[axis] - size // 2 + jitter
                starts.append(int(np.clip(start, 0, length - size)))
        out_image = np.full((*image.shape[:-2], size, size), self.fill, dtype=image.dtype)
        out_labels = np.zeros((size, size), dtype=labels.dtype)
        y0, x0 = starts
        src_y = slice(max(y0, 0), min(y0 + size, labels.shape[0]))
        src_x = slice(max(x0, 0), min(x0 + size, labels.shape[1]))
        dst_y = slice(src_y.start - y0, src_y.stop - y0)
        dst_x = slice(src_x.start - x0, src_x.stop - x0)
        out_image[..., dst_y, dst_x] = image[..., src_y, src_x]
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
