"""Per-sample augmentation of 2D axial slices and their organ masks (DESIGN section 4).

torchio's split, with albumentations 2.x doing the pixel work: :meth:`Augmenter.draw` takes every
random decision from a numpy ``Generator`` (which transforms fire, which distortion, a seed for
each transform's own parameters), :meth:`Augmenter.apply` applies such a draw deterministically.
The same generator state therefore gives the same output, whatever the process or worker.

Pipeline, in order, each with its own probability from :class:`~vetseg.config.AugmentConfig`:
MotionBlur, HorizontalFlip, VerticalFlip, Affine (shift-scale-rotate), one of GridDistortion /
OpticalDistortion / ElasticTransform, GaussNoise. Before them, and only when
``AugmentConfig.hu_shift`` is set, the slice's soft tissue may be moved in HU
(:func:`shift_soft_tissue`, applied by the slice dataset while the slice is still in HU).

Conventions that matter:

* The slice is in canonical orientation, so its last axis runs from the patient's right to left:
  a horizontal flip is a left-right flip and swaps paired organ channels (kidney_left <->
  kidney_right, ...), or the masks would teach the model mirrored anatomy. A vertical flip
  (anterior <-> posterior) swaps nothing.
* Masks use nearest interpolation everywhere and stay binary.
* A stack of neighbouring slices ``[C, S, S]`` (``PreprocessConfig.context_slices``) is one
  multi-channel image: every geometric transform moves all its slices alike, as the scan would
  have moved; noise is drawn per pixel of every slice.
* albumentations clips float images to ``[0, 1]`` in its pixel transforms (MotionBlur,
  GaussNoise) and fills borders with 0. The slice is zero-mean, unit-variance, so the transforms
  run on a copy rescaled to ``[0, 1]`` by the slice's own min and max and are mapped back after:
  blurring is then exact, borders exposed by a shift or rotation are filled with the slice's
  minimum (air, not the mean), and noise is clipped at the slice's extremes, as the CT window
  already clips a real scan's noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import albumentations as A
import numpy as np

from vetseg.config import AugmentConfig
from vetseg.errors import InputError
from vetseg.labels import lr_swap_permutation

#: Noise standard deviation in units of the slice's standard deviation (the slice has unit
#: variance). Real CT noise is ~10-20 HU against a slice spread of ~400 HU, i.e. ~0.03-0.05.
NOISE_STD_RANGE: tuple[float, float] = (0.02, 0.1)

#: Names recorded for the transforms, in pipeline order.
TRANSFORM_NAMES: tuple[str, ...] = (
    "MotionBlur",
    "HorizontalFlip",
    "VerticalFlip",
    "Affine",
    "Distortion",
    "GaussNoise",
)
_FLIPS = ("HorizontalFlip", "VerticalFlip")
#: The distortion candidates of the one-of step, drawn with equal chance.
DISTORTION_NAMES: tuple[str, ...] = ("GridDistortion", "OpticalDistortion", "ElasticTransform")


@dataclass(frozen=True)
class AugmentDraw:
    """The random decisions for one sample; applying it is deterministic.

    Attributes:
        fired: names of the transforms that fire, in pipeline order (the distortion step is named
            by the distortion chosen, e.g. ``"ElasticTransform"``).
        seeds: a seed for each fired albumentations transform's own parameter draw.
        noise_std: GaussNoise standard deviation in slice-std units (used only when it fires).
    """

    fired: tuple[str, ...]
    seeds: dict[str, int] = field(default_factory=dict)
    noise_std: float = 0.0


class Augmenter:
    """Seeded augmentation of one slice and its masks; see the module docstring.

    Args:
        config: per-transform probabilities; ``enabled=False`` makes every call a copy.
        organs: the vocabulary, one mask channel per organ, used for the left-right swap.
    """

    def __init__(self, config: AugmentConfig, organs: Sequence[str]) -> None:
        probabilities = {
            "MotionBlur": config.motion_blur,
            "HorizontalFlip": config.horizontal_flip,
            "VerticalFlip": config.vertical_flip,
            "Affine": config.shift_scale_rotate,
            "Distortion": config.distortion,
            "GaussNoise": config.gauss_noise,
        }
        for name, p in probabilities.items():
            if not 0.0 <= p <= 1.0:
                raise InputError(f"augmentation probability of {name} must lie in [0, 1], got {p}.")
        self.config = config
        self.organs = tuple(organs)
        self.probabilities = probabilities
        self.swap = np.asarray(lr_swap_permutation(self.organs), dtype=np.int64)
        #: Names of the transforms that fired in the latest call (for tests and debugging).
        self.last_applied: tuple[str, ...] = ()
        # p=1: whether a transform fires is decided in draw(), never inside albumentations.
        self._fixed: dict[str, A.BasicTransform] = {
            "MotionBlur": A.MotionBlur(blur_limit=(3, 7), p=1.0),
            "Affine": A.Affine(
                scale=(0.9, 1.1),
                translate_percent=(-0.0625, 0.0625),
                rotate=(-15.0, 15.0),
                p=1.0,
            ),
            "GridDistortion": A.GridDistortion(num_steps=5, distort_limit=(-0.2, 0.2), p=1.0),
            "OpticalDistortion": A.OpticalDistortion(distort_limit=(-0.1, 0.1), p=1.0),
        }
        # Elastic strength depends on the slice size (see _elastic); built once per size.
        self._elastic: dict[tuple[int, int], A.ElasticTransform] = {}

    def draw(self, rng: np.random.Generator) -> AugmentDraw:
        """Take every random decision for one sample.

        A fixed number of values is drawn whatever fires, so one sample's draw never shifts the
        next one's.

        Args:
            rng: the sample's generator (e.g. derived from seed, epoch and index).

        Returns:
            The draw: fired transforms, their seeds and the noise level.
        """
        uniforms = rng.random(len(TRANSFORM_NAMES))
        seeds = rng.integers(0, 2**31 - 1, size=len(TRANSFORM_NAMES))
        distortion = DISTORTION_NAMES[int(rng.integers(len(DISTORTION_NAMES)))]
        noise_std = float(rng.uniform(*NOISE_STD_RANGE))
        if not self.config.enabled:
            return AugmentDraw(fired=())
        fired: list[str] = []
        chosen_seeds: dict[str, int] = {}
        for name, u, seed in zip(TRANSFORM_NAMES, uniforms, seeds, strict=True):
            if u < self.probabilities[name]:
                actual = distortion if name == "Distortion" else name
                fired.append(actual)
                chosen_seeds[actual] = int(seed)
        return AugmentDraw(fired=tuple(fired), seeds=chosen_seeds, noise_std=noise_std)

    def apply(
        self, draw: AugmentDraw, image: np.ndarray, masks: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Apply a draw to one slice and its masks.

        Args:
            draw: from :meth:`draw`.
            image: float ``[S, S]`` normalised slice, or ``[C, S, S]``: a slice and its
                neighbours, transformed jointly.
            masks: ``[n_organs, S, S]`` binary masks (uint8, bool or float).

        Returns:
            ``(image, masks)``: float32 image of the input's shape and masks of the input
            dtype, still binary.
        """
        if image.ndim not in (2, 3) or masks.ndim != 3 or masks.shape[1:] != image.shape[-2:]:
            raise InputError(
                f"augmentation expects image [S, S] or [C, S, S] and masks [n, S, S], got"
                f" {image.shape} and {masks.shape}."
            )
        if masks.shape[0] != len(self.organs):
            raise InputError(
                f"augmentation expects {len(self.organs)} mask channels, got {masks.shape[0]}."
            )
        mask_dtype = masks.dtype
        # Rescale to [0, 1] only when albumentations runs: flips alone stay bit-exact.
        low, scale = 0.0, 1.0
        if any(name not in _FLIPS for name in draw.fired):
            low, high = float(image.min()), float(image.max())
            scale = high - low if high > low else 1.0
        unit = ((image.astype(np.float32) - low) / scale).astype(np.float32)
        stacked = unit.ndim == 3
        if stacked:  # albumentations takes channels last
            unit = np.moveaxis(unit, 0, -1)
        work = (masks > 0.5).astype(np.uint8) if masks.dtype.kind == "f" else (masks != 0)
        work = np.ascontiguousarray(work, dtype=np.uint8)

        for name in draw.fired:
            if name == "HorizontalFlip":
                # Last axis = patient right -> left: mirror, and left organs become right ones.
                unit = unit[:, ::-1, ...]
                work = work[self.swap][:, :, ::-1]
            elif name == "VerticalFlip":
                unit = unit[::-1, ...]
                work = work[:, ::-1, :]
            else:
                transform = self._transform(name, unit.shape[:2], draw.noise_std / scale)
                transform.set_random_seed(draw.seeds[name])
                unit = np.ascontiguousarray(unit)
                work = np.ascontiguousarray(work)
                if work.shape[0]:
                    out = transform(image=unit, masks=work)
                    work = np.asarray(out["masks"], dtype=np.uint8)
                else:
                    out = transform(image=unit)
                unit = out["image"]

        if stacked:
            unit = np.moveaxis(unit, -1, 0)
        if scale != 1.0 or low != 0.0:
            unit = unit * np.float32(scale) + np.float32(low)
        image_out = np.ascontiguousarray(unit, dtype=np.float32)
        masks_out = np.ascontiguousarray(work).astype(mask_dtype)
        return image_out, masks_out

    def __call__(
        self, image: np.ndarray, masks: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw and apply in one go; the fired transforms are left in :attr:`last_applied`.

        Args:
            image: float ``[S, S]`` normalised slice (or ``[C, S, S]`` stack).
            masks: ``[n_organs, S, S]`` binary masks.
            rng: the sample's generator.

        Returns:
            ``(image, masks)`` as in :meth:`apply`.
        """
        draw = self.draw(rng)
        self.last_applied = draw.fired
        return self.apply(draw, image, masks)

    def _transform(
        self, name: str, shape: tuple[int, ...], noise_std_unit: float
    ) -> A.BasicTransform:
        """The albumentations transform for ``name`` (p=1), sized for ``shape`` where needed."""
        if name in self._fixed:
            return self._fixed[name]
        if name == "ElasticTransform":
            return self._elastic_for(shape)
        if name == "GaussNoise":
            # std_range is in units of the [0, 1] working range; built per call (0.1 ms, rare).
            return A.GaussNoise(std_range=(noise_std_unit, noise_std_unit), p=1.0)
        raise InputError(f"unknown augmentation {name!r}.")

    def _elastic_for(self, shape: tuple[int, ...]) -> A.ElasticTransform:
        key = (int(shape[0]), int(shape[1]))
        if key not in self._elastic:
            size = float(min(key))
            # Mean displacement ~1.5 % of the slice (2 px at 128, 7 px at 512): albumentations'
            # displacement scales as alpha / sigma, so alpha grows with the square of the size.
            self._elastic[key] = A.ElasticTransform(
                alpha=0.0095 * size * size, sigma=0.05 * size, p=1.0
            )
        return self._elastic[key]


#: The HU band a soft-tissue shift moves: organs, muscle, blood, enhanced or not. Air, lung, fat
#: below it and dense bone above it keep their values.
SOFT_TISSUE_HU: tuple[float, float] = (-200.0, 300.0)


def shift_soft_tissue(
    image_hu: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    n_organs: int,
    case_hu: float,
    organ_hu: float,
) -> tuple[np.ndarray, float, np.ndarray]:
    """Move a slice's soft tissue as another contrast timing, fat content or calibration would.

    Every pixel in :data:`SOFT_TISSUE_HU` gets one offset drawn uniformly in ``+-case_hu``, and
    each organ's pixels one more drawn in ``+-organ_hu`` (organ ``k`` = label ``k``; the
    labels stay as they are). A real contrast phase moves organs by different amounts (kidneys
    and spleen most, muscle little), hence the per-organ part; a model that tells organs apart
    by absolute HU alone cannot follow (benchmarks/hu_shift.py). Exactly ``1 + n_organs``
    values are drawn whatever the labels hold.

    Args:
        image_hu: ``[S, S]`` window-clipped HU, or a ``[C, S, S]`` stack of neighbouring slices
            (the centre slice's ``labels`` then stand for every slice of the stack).
        labels: ``[S, S]`` organ ids, 0 background.
        rng: the sample's generator.
        n_organs: number of organ ids (labels above it are left to the case offset).
        case_hu: half-range of the offset shared by all soft tissue.
        organ_hu: half-range of each organ's extra offset.

    Returns:
        ``(shifted float32 copy, case offset, per-organ offsets [n_organs])``.
    """
    case = float(rng.uniform(-case_hu, case_hu))
    organ = rng.uniform(-organ_hu, organ_hu, size=n_organs).astype(np.float32)
    table = np.concatenate([[0.0], organ]).astype(np.float32)
    ids = np.where(labels <= n_organs, labels, 0).astype(np.intp)
    offset = np.float32(case) + table[ids]
    out = np.array(image_hu, dtype=np.float32, copy=True)
    soft = (out > SOFT_TISSUE_HU[0]) & (out < SOFT_TISSUE_HU[1])
    out += np.where(soft, np.broadcast_to(offset, out.shape), np.float32(0.0))
    return out, case, organ


def build_augment(config: AugmentConfig, organs: Sequence[str]) -> Augmenter:
    """The training augmentation for a vocabulary.

    Args:
        config: probabilities per transform (DESIGN defaults in :class:`AugmentConfig`).
        organs: mask channel order; paired organs are swapped by a left-right flip.

    Returns:
        An :class:`Augmenter`.
    """
    return Augmenter(config, organs)
