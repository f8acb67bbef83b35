"""Segment a scan: the object the CLI (and any server) calls.

``Segmenter.load(path)`` reads a model folder (safetensors + model.json), ``predict(volume, meta)``
returns an organ label map on the scan's own grid, ``predict_file(in, out)`` does the same from file
to file. Slices go through the model in batches; each batch's probabilities are resized back to the
scan's in-plane grid and turned into labels at once, so memory stays bounded by one batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from vetseg.models.files import ModelInfo, load_model


@dataclass
class Prediction:
    """A segmentation on the scan's own grid.

    Attributes:
        labels: uint8 [z, y, x] (array order of the input), ``organs[i]`` has id ``i + 1``.
        confidence: mean probability inside each organ's mask (NaN for an empty organ).
    """

    labels: np.ndarray
    confidence: dict[str, float]


class Segmenter:
    """A loaded model and the preprocessing it was trained with.

    Args:
        model: the network (eval mode).
        info: its model.json description.
        batch_size: slices per forward pass.
        threshold: probability above which a voxel belongs to an organ; where several organs
            pass, the most probable wins.
    """

    def __init__(
        self, model: nn.Module, info: ModelInfo, batch_size: int = 8, threshold: float = 0.5
    ) -> None:
        self.model = model.eval()
        self.info = info
        self.batch_size = batch_size
        self.threshold = threshold

    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> Segmenter:
        """Load a model folder (or its model.json / model.safetensors)."""
        model, info = load_model(Path(path))
        return cls(model, info, **kwargs)

    @property
    def organs(self) -> tuple[str, ...]:
        return self.info.organs

    @torch.no_grad()
    def _label_slices(self, slices_hu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels and winning probabilities for canonical axial slices ``[b, y, x]`` in HU."""
        from vetseg.data.preprocess import normalize_slices, resize_slices

        pre = self.info.preprocess
        height, width = slices_hu.shape[1:]
        image = resize_slices(normalize_slices(slices_hu, pre.window), pre.size, order=1)
        logits = self.model(torch.from_numpy(np.ascontiguousarray(image, np.float32)).unsqueeze(1))
        if (height, width) != (pre.size, pre.size):
            logits = F.interpolate(
                logits, size=(height, width), mode="bilinear", align_corners=False
            )
        probs = torch.sigmoid(logits)
        best_prob, best = probs.max(dim=1)
        labels = torch.where(best_prob > self.threshold, best + 1, torch.zeros_like(best))
        return labels.to(torch.uint8).numpy(), best_prob.numpy()

    def predict_canonical(self, volume: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels ``[z, y, x]`` (uint8) and winning probability for a canonical volume in HU."""
        labels = np.zeros(volume.shape, dtype=np.uint8)
        prob = np.zeros(volume.shape, dtype=np.float16)
        for start in range(0, volume.shape[0], self.batch_size):
            stop = min(start + self.batch_size, volume.shape[0])
            labels[start:stop], p = self._label_slices(volume[start:stop].astype(np.float32))
            prob[start:stop] = p
        return labels, prob

    def predict(self, volume: np.ndarray, meta: Any) -> Prediction:
        """Segment a volume ``[z, y, x]`` in HU with its geometry; labels come back on its grid."""
        from vetseg.io.image import from_canonical, to_canonical

        canonical, _ = to_canonical(volume, meta, self.info.preprocess.orientation)
        labels_c, prob_c = self.predict_canonical(canonical)
        confidence = {}
        for i, organ in enumerate(self.organs):
            inside = labels_c == i + 1
            confidence[organ] = float(prob_c[inside].mean()) if inside.any() else float("nan")
        labels = from_canonical(labels_c, meta, volume.shape, self.info.preprocess.orientation)
        return Prediction(labels=np.ascontiguousarray(labels), confidence=confidence)

    def predict_file(self, scan: str | Path, out: str | Path) -> Prediction:
        """Read a scan (NIfTI, NRRD, MHA or DICOM folder), segment it, write the label map."""
        from vetseg.io.image import read_image, write_image

        volume, meta = read_image(Path(scan))
        prediction = self.predict(volume, meta)
        names = {i + 1: name for i, name in enumerate(self.organs)}
        write_image(prediction.labels, meta, Path(out), segment_names=names)
        return prediction
