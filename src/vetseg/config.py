"""Typed configuration: frozen dataclasses, saved as JSON beside every model.

Defaults are the patent's values (DESIGN section 4); CPU demos shrink epochs and image size by
passing other values, never by subclassing.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from vetseg.errors import InputError

T = TypeVar("T")

#: The most neighbouring slices on each side a model may take as extra input channels.
MAX_CONTEXT_SLICES = 8
#: Numbers of tile grids a model may average at inference (:attr:`PreprocessConfig.tilings`).
TILINGS = (1, 3, 5)


@dataclass(frozen=True)
class PreprocessConfig:
    """How a CT volume becomes model input slices.

    Attributes:
        window: CT window in HU; values are clipped to it before per-slice normalisation.
        size: in-plane size (pixels) of the model input; slices are resized to size x size.
        orientation: canonical orientation (ITK code) the scan is turned to before slicing, so
            that axis 0 runs along the body's long axis whatever the order on disk.
        spacing: in-plane pixel size of the model in mm. Set: every axial slice is resampled
            to it, and ``size`` is the tile the network sees (padded, or covered by
            overlapping tiles); a slice's millimetres, not its matrix, decide how large organs
            look. None: the legacy behaviour of models made before vetseg 0.2, every slice
            squashed to ``size x size`` whatever its field of view.
        intensity: ``(mean, std)`` of the window-clipped intensities inside the labelled
            organs of the training data (nnU-Net's CT normalisation): input = (clip - mean) /
            std, the same for every slice and scan. None: the legacy per-slice zero mean and
            unit variance, which depends on how much air the field of view holds.
        context_slices: neighbouring slices on each side fed as extra input channels: the
            network sees ``1 + 2 * context_slices`` channels, slices ``z - N .. z + N`` (the
            end slices repeated at the volume's ends), all on the model grid. 0 (the default):
            the patent's one-channel stem, each slice seen alone.
        tile: the tile (pixels) the network runs on when it segments a scan, when that differs
            from the training tile ``size``: the network is fully convolutional, and a larger
            tile shows it more of the body at once (both kidneys and the spine in one tile).
            None: ``size``. Only for models with a pixel spacing; chosen by measurement (the
            shipped human model: trained on 128 px tiles, run on 192 px, see README).
        tilings: how many grids of tiles the network runs on at inference, their logits
            averaged (Gaussian-weighted): 1, the grid placed on the body's box; 3, also that
            grid moved a quarter tile diagonally both ways; 5, also moved a quarter tile up,
            down, left and right (:data:`vetseg.data.preprocess.TILING_SHIFTS`). The answer of
            one grid depends on where its tile borders fall (a small field of view moves them),
            and the average of several placements depends on it less; each grid costs one
            more pass of the network. Only for models with a pixel spacing; chosen by
            measurement (benchmarks/tilings.py).
    """

    window: tuple[float, float] = (-1000.0, 1000.0)
    size: int = 512
    orientation: str = "LPS"
    spacing: float | None = None
    intensity: tuple[float, float] | None = None
    context_slices: int = 0
    tile: int | None = None
    tilings: int = 1

    def __post_init__(self) -> None:
        if self.window[0] >= self.window[1]:
            raise InputError(
                f"CT window {self.window} is empty: its low end must be below its high end."
            )
        if self.size < 32 or self.size % 32:
            raise InputError(f"input size {self.size} must be a multiple of 32 and at least 32.")
        if self.spacing is not None and not (math.isfinite(self.spacing) and self.spacing > 0):
            raise InputError(
                f"model pixel spacing must be a positive number of mm, got {self.spacing}."
            )
        if self.intensity is not None and not self.intensity[1] > 0:
            raise InputError(f"intensity scale must be positive, got {self.intensity}.")
        if self.tile is not None:
            if isinstance(self.tile, bool) or not isinstance(self.tile, int):
                raise InputError(
                    f"inference tile must be a whole number of pixels, got {self.tile!r}."
                )
            if self.tile < 32 or self.tile % 32:
                raise InputError(
                    f"inference tile {self.tile} must be a multiple of 32 and at least 32."
                )
            if self.spacing is None:
                raise InputError(
                    "an inference tile needs a model with a pixel spacing (a legacy model "
                    "squashes every slice to its input size)."
                )
        whole_tilings = isinstance(self.tilings, int) and not isinstance(self.tilings, bool)
        if not whole_tilings or self.tilings not in TILINGS:
            raise InputError(
                f"tilings must be one of {', '.join(map(str, TILINGS))} (grids of tiles "
                f"averaged at inference), got {self.tilings!r}."
            )
        if self.tilings != 1 and self.spacing is None:
            raise InputError(
                "shifted tilings need a model with a pixel spacing (a legacy model squashes "
                "every slice to its input size)."
            )
        context = self.context_slices
        whole = isinstance(context, int) and not isinstance(context, bool)
        if not whole or not 0 <= context <= MAX_CONTEXT_SLICES:
            raise InputError(
                f"context slices must be a whole number from 0 to {MAX_CONTEXT_SLICES} "
                f"(neighbours on each side), got {context!r}."
            )

    @property
    def tile_size(self) -> int:
        """The tile (pixels) the network runs on at inference: ``tile``, else ``size``."""
        return self.tile if self.tile is not None else self.size

    @property
    def in_channels(self) -> int:
        """Input channels of the network: the slice and its neighbours on both sides."""
        return 1 + 2 * self.context_slices

    @property
    def physical(self) -> bool:
        """True when the model works at a fixed pixel spacing (``spacing`` is set)."""
        return self.spacing is not None


@dataclass(frozen=True)
class AugmentConfig:
    """Per-sample augmentation probabilities (DESIGN section 4, defaults in the patent's ranges).

    ``hu_shift`` (off by default, not in the patent) is the chance that a training slice's soft
    tissue (-200..300 HU) is moved by one offset of up to +-``hu_shift_case`` HU plus, per
    labelled organ, up to +-``hu_shift_organ`` HU more: another contrast timing, fat content or
    scanner calibration (:func:`vetseg.data.augment.shift_soft_tissue`). Needs a model with a
    pixel spacing and intensity statistics (its slices are kept in HU until the last step).
    """

    motion_blur: float = 0.05
    horizontal_flip: float = 0.2
    vertical_flip: float = 0.2
    shift_scale_rotate: float = 0.3
    distortion: float = 0.2
    gauss_noise: float = 0.07
    enabled: bool = True
    hu_shift: float = 0.0
    hu_shift_case: float = 40.0
    hu_shift_organ: float = 20.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.hu_shift <= 1.0:
            raise InputError(f"hu_shift is a probability in [0, 1], got {self.hu_shift}.")
        for name in ("hu_shift_case", "hu_shift_organ"):
            value = getattr(self, name)
            if not 0.0 <= value <= 200.0:
                raise InputError(f"{name} must lie in [0, 200] HU, got {value}.")


@dataclass(frozen=True)
class StageConfig:
    """One training stage: human model (S100), transfer (S101) or a refine round (S103).

    Attributes:
        epochs: scheduled epochs in total (frozen ones included).
        freeze_epochs: the first epochs train with the body (EfficientNet module) frozen.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        tversky_alpha: Tversky weight of false positives.
        tversky_beta: Tversky weight of false negatives.
        threshold: when the best validation Dice stays under it, train ``extend`` more epochs.
        extend: extension epochs (0: none).
        batch_size: slices per step.
        steps_per_epoch: cap on optimiser steps per epoch (None: one pass over the slices).
        empty_slice_rate: fraction of slices without any organ kept for training.
        organ_balance: how strongly slices of rarely seen organs are oversampled (exponent of
            max_freq / freq; 0 none, 0.5 square root, 1 equal exposure per organ).
        seed: seed of the split, sampling, augmentation and initialisation.
        num_workers: DataLoader workers (0 on small machines).
        val_slices: validate on at most this many slices, evenly strided through each case
            (None: every slice). Tiled validation of large cases costs minutes per epoch on a
            CPU; a strided subset estimates the same Dice for choosing the epoch.
        loss: ``"bce_tversky"`` (vetseg, DESIGN section 4) or ``"dice_ce"`` (nnU-Net's Dice +
            cross-entropy with deep supervision, for the peer baseline).
        transferred_lr_scale: learning rate of the parts a transfer copies from the human model
            (``stem`` and ``body``) as a multiple of ``lr``, once they are unfrozen (1: the same
            rate; below 1 keeps them nearer the human weights).
    """

    epochs: int = 10
    freeze_epochs: int = 0
    lr: float = 1e-4
    weight_decay: float = 1e-5
    tversky_alpha: float = 0.5
    tversky_beta: float = 0.5
    threshold: float = 0.95
    extend: int = 2
    batch_size: int = 8
    steps_per_epoch: int | None = None
    empty_slice_rate: float = 0.1
    organ_balance: float = 0.5
    seed: int = 0
    num_workers: int = 0
    val_slices: int | None = None
    loss: str = "bce_tversky"
    transferred_lr_scale: float = 1.0
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise InputError(f"epochs must be at least 1, got {self.epochs}.")
        if not 0 <= self.freeze_epochs <= self.epochs:
            raise InputError(
                f"freeze epochs ({self.freeze_epochs}) must lie between 0 and"
                f" epochs ({self.epochs})."
            )
        if self.lr <= 0 or self.weight_decay < 0:
            raise InputError("learning rate must be positive and weight decay not negative.")
        if self.tversky_alpha < 0 or self.tversky_beta < 0:
            raise InputError("Tversky alpha and beta must not be negative.")
        if self.extend < 0 or self.batch_size < 1:
            raise InputError("extension epochs must be >= 0 and batch size >= 1.")
        if self.val_slices is not None and self.val_slices < 1:
            raise InputError(f"validation slices must be at least 1, got {self.val_slices}.")
        if self.loss not in ("bce_tversky", "dice_ce"):
            raise InputError(f"loss {self.loss!r}: expected 'bce_tversky' or 'dice_ce'.")
        if not (math.isfinite(self.transferred_lr_scale) and self.transferred_lr_scale > 0):
            raise InputError(
                f"transferred_lr_scale must be a positive number, got {self.transferred_lr_scale}."
            )

    @classmethod
    def human(cls, **overrides: Any) -> StageConfig:
        """S100 defaults: 10 epochs, BCE + Tversky(0.5, 0.5), 1-2 extension epochs; 1.5 mm
        pixels (TotalSegmentator's resolution) in 256 x 256 tiles (384 mm: a whole abdomen)."""
        from vetseg.species import HUMAN_SPACING_MM

        base = cls(preprocess=PreprocessConfig(size=256, spacing=HUMAN_SPACING_MM))
        return dataclasses.replace(base, **overrides)

    @classmethod
    def transfer(cls, **overrides: Any) -> StageConfig:
        """S101 defaults: 100 epochs, the first 50 frozen, Tversky(0.3, 0.7)."""
        base = cls(epochs=100, freeze_epochs=50, tversky_alpha=0.3, tversky_beta=0.7, extend=5)
        return dataclasses.replace(base, **overrides)

    @classmethod
    def refine(cls, **overrides: Any) -> StageConfig:
        """S103 defaults: 30 epochs, the first 20 frozen, 5-10 extension epochs."""
        base = cls(epochs=30, freeze_epochs=20, tversky_alpha=0.3, tversky_beta=0.7, extend=5)
        return dataclasses.replace(base, **overrides)


@dataclass(frozen=True)
class RLConfig:
    """PPO-style fine-tuning (DESIGN section 5; formulation in ``vetseg.training.rl``).

    ``baseline`` is what the advantage subtracts from the reward: ``"greedy"`` (DESIGN: the
    reward of the greedy masks) or ``"mean"`` (the mean reward of the other samples of the same
    image and organ, leave-one-out; needs ``samples_per_image >= 2``).
    """

    steps: int = 200
    sync_every: int = 10
    kappa: float = 0.5
    clip: float = 0.2
    replay_size: int = 256
    replay_updates: int = 1
    samples_per_image: int = 2
    lr: float = 1e-5
    batch_size: int = 4
    seed: int = 0
    baseline: str = "greedy"


def to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as plain JSON-able data (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build a config dataclass from ``data``; unknown keys are an error, nested configs allowed."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise InputError(f"unknown setting(s) {', '.join(unknown)} for {cls.__name__}.")
    kwargs: dict[str, Any] = {}
    nested = {"preprocess": PreprocessConfig, "augment": AugmentConfig}
    for name, value in data.items():
        if name in nested and isinstance(value, dict):
            value = from_dict(nested[name], value)
        elif name in ("window", "intensity") and isinstance(value, list):
            value = tuple(float(v) for v in value)
        kwargs[name] = value
    return cls(**kwargs)  # type: ignore[return-value]


def load_json(path: Path) -> dict[str, Any]:
    """Read a JSON settings file with a clear error for a missing or malformed one."""
    if not path.is_file():
        raise InputError(f"{path}: no such settings file.")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc}).") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path}: settings must be a JSON object.")
    return data
