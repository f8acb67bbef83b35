"""Segmenter: label maps on the scan's own grid, whatever its orientation; files in and out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vetseg.config import PreprocessConfig
from vetseg.data.preprocess import normalize_slices, resize_slices
from vetseg.inference.segmenter import Segmenter
from vetseg.io.image import ImageMeta, read_image, read_label, to_canonical, write_image
from vetseg.models.animal import AnimalOrganNet
from vetseg.models.files import ModelInfo, new_model_id
from vetseg.models.human import HumanOrganNet


@pytest.fixture()
def segmenter() -> Segmenter:
    torch.manual_seed(0)
    human = HumanOrganNet(n_organs=2, decoder_channels=(32, 24, 16, 16))
    model = AnimalOrganNet.from_human(human, n_organs=2, refine_blocks=1)
    # A bias that makes organ 1 win wherever the image is bright: a known, checkable output.
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([-5.0, -6.0]))
    info = ModelInfo(
        model_id=new_model_id("test"),
        architecture=model.architecture(),
        organs=("liver", "spleen"),
        preprocess=PreprocessConfig(size=32),
        stage="test",
    )
    return Segmenter(model.eval(), info, batch_size=3)


def _oblique_meta() -> ImageMeta:
    # Axis 0 of the array (SimpleITK z) runs left-right: the long axis is stored elsewhere.
    direction = (0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
    return ImageMeta(spacing=(0.7, 0.8, 1.5), origin=(10.0, -5.0, 3.0), direction=direction)


def test_predict_returns_labels_on_the_input_grid(segmenter: Segmenter) -> None:
    volume = np.random.default_rng(0).normal(0, 100, (7, 20, 24)).astype(np.float32)
    prediction = segmenter.predict(volume, _oblique_meta())
    assert prediction.labels.shape == volume.shape
    assert prediction.labels.dtype == np.uint8
    assert set(prediction.confidence) == {"liver", "spleen"}


def test_predict_agrees_with_the_canonical_volume(segmenter: Segmenter) -> None:
    """The same anatomy stored in another axis order gives the same labels, moved back."""
    with torch.no_grad():
        segmenter.model.head.weight.zero_()
        segmenter.model.head.weight[0, :, 0, 0] = 0.5  # depends on the image
    volume = np.random.default_rng(1).normal(0, 300, (6, 16, 20)).astype(np.float32)
    meta = _oblique_meta()
    with torch.no_grad():  # centre organ 1's logit so about half the voxels pass
        canonical, _ = to_canonical(volume, meta)
        x = resize_slices(normalize_slices(canonical), 32, order=1)
        x = torch.from_numpy(np.ascontiguousarray(x, np.float32)).unsqueeze(1)
        segmenter.model.head.bias[0] -= segmenter.model(x)[:, 0].median()
    labels = segmenter.predict(volume, meta).labels
    canonical, canonical_meta = to_canonical(volume, meta)
    labels_c = segmenter.predict(canonical, canonical_meta).labels
    back, _ = to_canonical(labels, meta)
    assert np.array_equal(back, labels_c)
    assert {0, 1} <= set(np.unique(labels_c).tolist())  # a non-trivial label map


def test_predict_file_writes_a_label_map_in_the_scan_geometry(
    segmenter: Segmenter, tmp_path: Path
) -> None:
    volume = np.random.default_rng(2).normal(0, 100, (5, 16, 16)).astype(np.int16)
    meta = _oblique_meta()
    scan = write_image(volume, meta, tmp_path / "scan.nii.gz")
    segmenter.predict_file(scan, tmp_path / "seg.nii.gz")
    image, image_meta = read_image(scan)
    labels, label_meta = read_label(
        tmp_path / "seg.nii.gz", reference=image_meta, reference_shape=image.shape
    )
    assert labels.shape == volume.shape
    assert label_meta == image_meta
