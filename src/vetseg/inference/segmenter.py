"""Segment a scan: the object the CLI (and any server) calls.

``Segmenter.load(path)`` reads a model folder (safetensors + model.json), ``predict(volume, meta)``
returns an organ label map on the scan's own grid, ``predict_file(in, out)`` does the same from file
to file.

Memory stays bounded by one batch of slices: slices go through the engine (PyTorch, ONNX
Runtime or OpenVINO, :mod:`vetseg.inference.engines`) ``batch_size`` at a time; each batch's
logits are resized back to the scan's in-plane grid and reduced at once to two bytes per voxel,
the winning organ's id (uint8) and its probability (uint8, 0..255 for 0..1). No ``n_organs x
volume`` float array is ever made: at 512 x 512 x 400 with 7 organs it would take 2.9 GB.

After the model, optional post-processing (:mod:`vetseg.inference.postprocess`) cleans the
label map in the canonical frame, and the per-organ statistics of the report
(:mod:`vetseg.inference.report`) are computed from the same arrays.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vetseg.data.context import context_indices, stack_context
from vetseg.inference.engines import Engine, ModelSource, Say, TorchEngine, select_engine
from vetseg.inference.postprocess import PostprocessConfig, postprocess_labels
from vetseg.inference.report import OrganStats, organ_statistics
from vetseg.models.files import ModelInfo, read_model_info, resolve_model_dir

#: ``progress(done_slices, total_slices)``, called after every batch.
Progress = Callable[[int, int], None]
#: Slices per chunk when the uncertainty map is computed (bounds its float32 working copy).
_CHUNK_SLICES = 16


@dataclass
class Prediction:
    """A segmentation on the scan's own grid.

    Attributes:
        labels: uint8 [z, y, x] (array order of the input), ``organs[i]`` has id ``i + 1``.
        confidence: mean probability inside each organ's mask (NaN for an empty organ).
        organ_stats: the report rows: volume (ml), mean and sd intensity, confidence.
        probability: uint8 [z, y, x], the winning organ's probability (0..255 for 0..1) on the
            input grid; only when asked for (``keep_probability``), else None.
        seconds: wall time per step (``reorient``, ``model``, ``postprocess``, ``statistics``,
            ``field``).
        cut_slices: slices whose body the scanner's field of view cuts
            (:func:`~vetseg.data.preprocess.slices_cut_by_field`), of ``slices`` (across the
            body, in the model's orientation).
    """

    labels: np.ndarray
    confidence: dict[str, float]
    organ_stats: list[OrganStats] = field(default_factory=list)
    probability: np.ndarray | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    cut_slices: int = 0
    slices: int = 0

    def uncertainty(self) -> np.ndarray:
        """Per-voxel uncertainty in percent (uint8 0..100); needs ``probability``.

        See :func:`uncertainty_percent`.
        """
        if self.probability is None:
            raise ValueError("this prediction was made without keep_probability=True")
        return uncertainty_percent(self.probability)


def uncertainty_percent(probability: np.ndarray) -> np.ndarray:
    """Binary entropy of the winning organ's probability, in percent of its maximum (1 bit).

    0 where the model is sure (probability near 0: background, or near 1: the organ), 100 where
    it stands at 0.5, on the decision threshold. With one sigmoid per organ, "1 - max
    probability" would call all background uncertain; the entropy does not. It does not see two
    organs that both claim a voxel; their borders show up anyway, as the winner's probability
    falls there.

    Args:
        probability: ``[z, y, x]`` uint8 (0..255 for 0..1) or float in [0, 1].

    Returns:
        uint8 ``[z, y, x]``, 0..100.
    """
    scale = 255.0 if probability.dtype == np.uint8 else 1.0
    out = np.empty(probability.shape, dtype=np.uint8)
    for start in range(0, probability.shape[0], _CHUNK_SLICES):
        part = slice(start, start + _CHUNK_SLICES)
        p = np.clip(probability[part].astype(np.float32) / scale, 1e-7, 1 - 1e-7)
        entropy = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
        out[part] = np.round(entropy * 100).astype(np.uint8)
    return out


def slice_weights(radius: int) -> np.ndarray:
    """Binomial weights of the slices at distance 0, 1, ..., ``radius`` (a discrete Gaussian).

    ``radius`` 1: ``[2, 1]`` (1/4, 1/2, 1/4 once normalised); 2: ``[6, 4, 1]``.
    """
    from math import comb

    return np.array([comb(2 * radius, radius + d) for d in range(radius + 1)], dtype=np.float64)


def default_batch_size(size: int) -> int:
    """Slices per forward pass for ``size x size`` input: about a million pixels, 1 to 16.

    The network's activations dominate memory: at 512 x 512 ONNX Runtime's working memory is
    about 0.3 GB for 2 slices and 0.9 GB for 4 (benchmarks/speed.py: a 400-slice scan peaks at
    2.0 GB with ONNX Runtime, 2.2 GB with PyTorch), and bigger batches barely run faster on a
    CPU.
    """
    return max(1, min(16, 2**20 // (size * size)))


class _Clock:
    """Wall time per named step; a step that recurs adds up."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = self.laps.get(name, 0.0) + now - self._last
        self._last = now


class Segmenter:
    """A loaded model and the preprocessing it was trained with.

    Args:
        model: the network (eval mode); None when ``engine`` runs an exported file and the
            network itself is not needed (see :meth:`load`).
        info: its model.json description.
        batch_size: slices per forward pass (None: :func:`default_batch_size` of the model's
            input size, 4 at 512 x 512).
        threshold: probability above which a voxel belongs to an organ; where several organs
            pass, the most probable wins.
        engine: what runs the network (default: PyTorch eager on ``model``).
        postprocess: rules that clean the label map (default None: labels as the model gave
            them; the CLI turns the built-in rules on).
        smooth_slices: average every organ's probability over this many neighbouring slices
            on each side (binomial weights: 1 -> 1/4, 1/2, 1/4) before thresholding, so that
            neighbouring slices no longer decide alone (0, the default: off; see
            :func:`slice_weights`). Memory grows by ``2 * smooth_slices`` slices of organ
            probabilities.
        mirror: also run every slice mirrored left-right and average the two answers' logits
            (the mirrored one mirrored back, paired organs such as the kidneys swapped), a
            test-time augmentation that doubles the network's time (default off).
        tilings: grids of tiles averaged per slice (1, 3 or 5; see
            :attr:`~vetseg.config.PreprocessConfig.tilings`); None, the default: the model's
            own (``model.json``, measured for it; 1 for a model that names none).
    """

    def __init__(
        self,
        model: nn.Module | None,
        info: ModelInfo,
        batch_size: int | None = None,
        threshold: float = 0.5,
        *,
        engine: Engine | None = None,
        postprocess: PostprocessConfig | None = None,
        smooth_slices: int = 0,
        mirror: bool = False,
        tilings: int | None = None,
    ) -> None:
        if batch_size is None:
            batch_size = default_batch_size(info.preprocess.size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must lie strictly between 0 and 1, got {threshold}")
        if model is None and engine is None:
            raise ValueError("a Segmenter needs the model, an engine, or both")
        if smooth_slices < 0:
            raise ValueError(f"smooth_slices must be 0 or more, got {smooth_slices}")
        self.smooth_slices = smooth_slices
        self.mirror = mirror
        if tilings is not None:
            # The model's own validation (one of TILINGS, a model with a pixel spacing).
            info = dataclasses.replace(
                info, preprocess=dataclasses.replace(info.preprocess, tilings=tilings)
            )
        self.model = model.eval() if model is not None else None
        self.info = info
        self.batch_size = batch_size
        self.threshold = threshold
        self.engine: Engine = engine if engine is not None else TorchEngine(model)
        self.postprocess = postprocess

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        engine: str = "torch",
        onnx_path: str | Path | None = None,
        threads: int | None = None,
        precision: str = "auto",
        say: Say | None = None,
        **kwargs: Any,
    ) -> Segmenter:
        """Load a model folder (or its model.json / model.safetensors).

        The network itself is built only when the engine needs it: an exported ``model.onnx``
        of these weights or a cached OpenVINO blob runs without it (no MONAI import, no model
        build, seconds less start-up; ``model`` stays None).

        Args:
            path: the model.
            engine: ``"torch"``, ``"onnx"``, ``"openvino"`` or ``"auto"`` (see
                :func:`vetseg.inference.engines.select_engine`).
            onnx_path: an exported ONNX file for the ``"onnx"`` engine (default: ``model.onnx``
                in the model folder if exported from these weights, else exported now).
            threads: ONNX Runtime / OpenVINO threads (None: their default).
            precision: ``"auto"``, ``"fp32"`` or ``"bf16"`` (OpenVINO; bf16 only after the
                accuracy check, :mod:`vetseg.inference.precision`).
            say: told once about engine fallbacks and checks (e.g. bf16 refused).
            **kwargs: ``batch_size``, ``threshold``, ``postprocess``, ``smooth_slices``,
                ``mirror``.
        """
        model_dir = resolve_model_dir(Path(path))
        info = read_model_info(model_dir)
        source = ModelSource(info, model_dir=model_dir, onnx_path=onnx_path)
        runner = select_engine(engine, source, threads=threads, precision=precision, say=say)
        return cls(source.model, info, engine=runner, **kwargs)

    @property
    def organs(self) -> tuple[str, ...]:
        return self.info.organs

    @property
    def tilings(self) -> int:
        """Grids of tiles averaged per slice (:attr:`PreprocessConfig.tilings`)."""
        return self.info.preprocess.tilings

    def _spacing(self, spacing_yx: tuple[float, float] | None) -> tuple[float, float]:
        """The slices' in-plane spacing; a model with a pixel spacing cannot do without it."""
        if spacing_yx is not None:
            return (float(spacing_yx[0]), float(spacing_yx[1]))
        if self.info.preprocess.spacing is not None:
            raise ValueError(
                "this model works at a pixel spacing of"
                f" {self.info.preprocess.spacing:g} mm: give the slices' spacing (spacing_yx)"
            )
        return (1.0, 1.0)  # unused by a legacy model

    def _batch(self, volume: np.ndarray, start: int, stop: int) -> np.ndarray:
        """HU slices ``start .. stop - 1`` of ``volume`` as float32, with the neighbours on
        each side a model with ``context_slices`` takes (the end slices repeated at the
        volume's ends; :mod:`vetseg.data.context`)."""
        context = self.info.preprocess.context_slices
        if context == 0:
            return volume[start:stop].astype(np.float32)
        return volume[context_indices(start, stop, volume.shape[0], context)].astype(np.float32)

    def _logits(
        self,
        slices_hu: np.ndarray,
        spacing_yx: tuple[float, float],
        release: bool = False,
        offset_yx: tuple[float, float] = (0.0, 0.0),
    ) -> torch.Tensor:
        """:meth:`_logits_once`, or with :attr:`mirror` the mean of the logits of the slices and
        of their left-right mirror image (mirrored back, paired organs swapped).

        The mirror image's x axis runs the other way, so its first pixel sits at minus the
        scanner position of the original's last: its model grid falls on the mirror of the
        original's lattice, and both answers stay on the scanner's lattice whatever the field
        of view.
        """
        if not self.mirror:
            return self._logits_once(slices_hu, spacing_yx, release, offset_yx)
        from vetseg.labels import lr_swap_permutation

        direct = self._logits_once(slices_hu, spacing_yx, False, offset_yx)
        last_x = offset_yx[1] + (slices_hu.shape[-1] - 1) * spacing_yx[1]
        mirrored = self._logits_once(
            np.ascontiguousarray(slices_hu[..., ::-1]), spacing_yx, release, (offset_yx[0], -last_x)
        )
        swap = lr_swap_permutation(self.organs)
        return (direct + torch.flip(mirrored, dims=[-1])[:, swap]) / 2.0

    def _logits_once(
        self,
        slices_hu: np.ndarray,
        spacing_yx: tuple[float, float],
        release: bool = False,
        offset_yx: tuple[float, float] = (0.0, 0.0),
    ) -> torch.Tensor:
        """Logits ``[b, n_organs, y, x]`` on the slices' own in-plane grid, for HU slices.

        ``slices_hu`` is a batch from :meth:`_batch`: for a model with ``context_slices = N``
        it holds ``N`` neighbours on each side, ``[b + 2N, y, x]``, and the network gets every
        slice's stack of ``1 + 2N`` channels. The slices go to the model grid
        (:func:`~vetseg.data.preprocess.to_model_grid`), through the engine in tiles of
        ``tile_size`` pixels (:func:`~vetseg.data.preprocess.tiled_logits`), and back.
        ``release``: the engine frees its working memory after this batch (a scan's last).
        """
        from vetseg.data.preprocess import (
            body_level,
            logits_to_native,
            pad_value,
            plan_tiles,
            tiled_logits,
            to_model_grid,
        )

        pre = self.info.preprocess
        image, grid = to_model_grid(slices_hu, spacing_yx, pre, offset_yx)
        if pre.context_slices:
            image = stack_context(image, pre.context_slices)
        pending = [0]
        body = body_level(pre)
        n_tiles = len(plan_tiles(image, pre.tile_size, body, pre.tilings))

        def run(batch: np.ndarray) -> np.ndarray:
            pending[0] += batch.shape[0]
            last = release and pending[0] >= n_tiles
            raw = self.engine(batch, release=True) if last else self.engine(batch)
            return np.asarray(raw, dtype=np.float32)

        logits = tiled_logits(
            run, image, pre.tile_size, pad_value(pre), self.batch_size, body, pre.tilings
        )
        # Logits, not masks, go back, so borders are decided at the scan's resolution.
        return logits_to_native(logits, grid)

    @torch.inference_mode()
    def _label_slices(
        self,
        slices_hu: np.ndarray,
        spacing_yx: tuple[float, float],
        release: bool = False,
        offset_yx: tuple[float, float] = (0.0, 0.0),
    ) -> tuple[np.ndarray, np.ndarray]:
        """Labels (uint8) and the winning probability (uint8, 0..255) of HU slices ``[b, y, x]``
        (with their neighbours, :meth:`_batch`)."""
        logits = self._logits(slices_hu, spacing_yx, release, offset_yx)
        # The sigmoid is monotonic: the organ with the largest logit is the most probable, and
        # only its probability is needed, so one sigmoid per voxel instead of one per organ.
        best_logit, best = logits.max(dim=1)
        best_prob = torch.sigmoid(best_logit)
        labels = torch.where(best_prob > self.threshold, best + 1, torch.zeros_like(best))
        quantised = torch.round(best_prob * 255.0).to(torch.uint8)
        return labels.to(torch.uint8).numpy(), quantised.numpy()

    @torch.inference_mode()
    def probabilities_canonical(
        self, volume: np.ndarray, spacing_yx: tuple[float, float] | None = None
    ) -> np.ndarray:
        """Every organ's probability ``[z, n_organs, y, x]`` (float32) for a canonical volume.

        For inspection and tests on small volumes: at full size this array is large; the
        label path (:meth:`segment_canonical`) never builds it. ``spacing_yx``: the in-plane
        pixel size in mm (needed by a model with a pixel spacing).
        """
        spacing = self._spacing(spacing_yx)
        out = []
        for start in range(0, volume.shape[0], self.batch_size):
            batch = self._batch(volume, start, min(start + self.batch_size, volume.shape[0]))
            last = start + self.batch_size >= volume.shape[0]
            out.append(torch.sigmoid(self._logits(batch, spacing, release=last)).numpy())
        return np.concatenate(out, axis=0)

    def segment_canonical(
        self,
        volume: np.ndarray,
        progress: Progress | None = None,
        spacing_yx: tuple[float, float] | None = None,
        offset_yx: tuple[float, float] = (0.0, 0.0),
    ) -> tuple[np.ndarray, np.ndarray]:
        """The model's labels and winning probabilities for a canonical volume in HU.

        Args:
            volume: ``[z, y, x]`` HU, axis 0 along the body (see :func:`to_canonical`).
            progress: called with ``(slices done, slices in all)`` after every batch.
            spacing_yx: in-plane pixel size ``(y, x)`` in mm (needed by a model with a pixel
                spacing; a legacy model squashes every slice to its input size).
            offset_yx: scanner position of pixel ``[., 0, 0]`` along y and x (mm): keeps the
                model grid on the same scanner lattice however the field of view is cut.

        Returns:
            ``(labels, probability)``: uint8 ``[z, y, x]`` each; probability 0..255 for 0..1.
        """
        spacing = self._spacing(spacing_yx)
        if self.smooth_slices > 0:
            return self._segment_smoothed(volume, progress, spacing, offset_yx)
        labels = np.zeros(volume.shape, dtype=np.uint8)
        prob = np.zeros(volume.shape, dtype=np.uint8)
        total = volume.shape[0]
        for start in range(0, total, self.batch_size):
            stop = min(start + self.batch_size, total)
            labels[start:stop], prob[start:stop] = self._label_slices(
                self._batch(volume, start, stop),
                spacing,
                release=stop == total,
                offset_yx=offset_yx,
            )
            if progress is not None:
                progress(stop, total)
        return labels, prob

    @torch.inference_mode()
    def _segment_smoothed(
        self,
        volume: np.ndarray,
        progress: Progress | None,
        spacing: tuple[float, float],
        offset_yx: tuple[float, float],
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`segment_canonical` with organ probabilities averaged across slices.

        Streams: each slice's probabilities are added, weighted, to the running sums of the
        slices within ``smooth_slices`` of it; a slice is labelled as soon as its last
        neighbour has been seen, so at most ``2 * smooth_slices + 1`` sums are held. At the
        ends of the volume the weights of the slices that exist are renormalised.
        """
        weights = slice_weights(self.smooth_slices)
        radius = self.smooth_slices
        total = volume.shape[0]
        labels = np.zeros(volume.shape, dtype=np.uint8)
        prob = np.zeros(volume.shape, dtype=np.uint8)
        sums: dict[int, torch.Tensor] = {}
        weight_sums: dict[int, float] = {}
        for start in range(0, total, self.batch_size):
            stop = min(start + self.batch_size, total)
            batch = self._batch(volume, start, stop)
            probs = torch.sigmoid(self._logits(batch, spacing, stop == total, offset_yx))
            for offset in range(stop - start):
                seen = start + offset
                for target in range(max(0, seen - radius), min(total, seen + radius + 1)):
                    weight = float(weights[abs(seen - target)])
                    if target in sums:
                        sums[target] += weight * probs[offset]
                    else:
                        sums[target] = weight * probs[offset]
                    weight_sums[target] = weight_sums.get(target, 0.0) + weight
                done = seen - radius if seen < total - 1 else None
                ready = range(done, done + 1) if done is not None else range(total)
                for target in [t for t in ready if t in sums and t >= 0]:
                    mean = sums.pop(target) / weight_sums.pop(target)
                    best_prob, best = mean.max(dim=0)
                    labels[target] = torch.where(
                        best_prob > self.threshold, best + 1, torch.zeros_like(best)
                    ).numpy()
                    prob[target] = torch.round(best_prob * 255.0).to(torch.uint8).numpy()
            if progress is not None:
                progress(stop, total)
        return labels, prob

    def predict_canonical(
        self, volume: np.ndarray, spacing_yx: tuple[float, float] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Labels ``[z, y, x]`` (uint8) and winning probability (float16, 0..1), canonical input.

        No post-processing; see :meth:`segment_canonical` for the memory-lean form.
        """
        labels, prob = self.segment_canonical(volume, spacing_yx=spacing_yx)
        return labels, (prob.astype(np.float16) / np.float16(255.0)).astype(np.float16)

    def predict(
        self,
        volume: np.ndarray,
        meta: Any,
        *,
        keep_probability: bool = False,
        progress: Progress | None = None,
    ) -> Prediction:
        """Segment a volume ``[z, y, x]`` in HU with its geometry; labels come back on its grid.

        Args:
            volume: the scan as read (any axis order; ``meta`` says which).
            meta: its :class:`~vetseg.io.image.ImageMeta`.
            keep_probability: also return the winning probability per voxel (for the
                uncertainty map).
            progress: called with ``(slices done, slices in all)`` after every batch.

        Returns:
            Labels on the input grid, post-processed when the segmenter has rules, with the
            per-organ statistics.
        """
        from vetseg.io.image import from_canonical, to_canonical

        clock = _Clock()
        orientation = self.info.preprocess.orientation
        canonical, canonical_meta = to_canonical(volume, meta, orientation)
        clock.lap("reorient")
        from vetseg.data.preprocess import inplane_offset, inplane_spacing

        model_labels, prob = self.segment_canonical(
            canonical,
            progress,
            inplane_spacing(canonical_meta.spacing),
            inplane_offset(canonical_meta),
        )
        clock.lap("model")
        labels_c = model_labels
        if self.postprocess is not None and self.postprocess.enabled:
            # The left-liver-to-spleen rule encodes human anatomy (liver right, spleen left);
            # an animal's liver spans both sides and its lobes come apart: human models only.
            labels_c = postprocess_labels(
                model_labels.copy(),
                self.organs,
                canonical_meta.spacing,
                self.postprocess,
                orientation if self.info.species == "human" else None,
            )
            clock.lap("postprocess")
        stats = organ_statistics(
            labels_c,
            canonical,
            self.organs,
            canonical_meta.spacing,
            probability=prob,
            model_labels=model_labels if labels_c is not model_labels else None,
        )
        clock.lap("statistics")
        from vetseg.data.preprocess import slices_cut_by_field

        cut_slices, slices = slices_cut_by_field(canonical, self.info.preprocess), len(canonical)
        clock.lap("field")
        del model_labels, canonical
        labels = from_canonical(labels_c, meta, volume.shape, orientation)
        probability = (
            from_canonical(prob, meta, volume.shape, orientation) if keep_probability else None
        )
        clock.lap("reorient")
        return Prediction(
            labels=np.ascontiguousarray(labels),
            confidence={s.organ: s.confidence for s in stats},
            organ_stats=stats,
            probability=probability,
            seconds=clock.laps,
            cut_slices=cut_slices,
            slices=slices,
        )

    def predict_file(self, scan: str | Path, out: str | Path) -> Prediction:
        """Read a scan (NIfTI, NRRD, MHA or DICOM folder), segment it, write the label map."""
        from vetseg.io.image import read_scan, write_image

        volume, meta = read_scan(Path(scan))
        prediction = self.predict(volume, meta)
        write_image(prediction.labels, meta, Path(out), segment_names=self.segment_names)
        return prediction

    @property
    def segment_names(self) -> dict[int, str]:
        """Label id -> organ name, as written into label maps."""
        return {i + 1: name for i, name in enumerate(self.organs)}
