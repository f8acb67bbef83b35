"""Training stacks of neighbouring slices (``PreprocessConfig.context_slices``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.data.test_augment import _only, _slice
from tests.data.test_cache import ORGANS, PRE, SETTINGS, _decoded, _write_dataset
from tests.data.test_slices import _case
from vetseg.config import AugmentConfig
from vetseg.config import PreprocessConfig as Pre
from vetseg.data.augment import build_augment
from vetseg.data.cache import prepare_cache
from vetseg.data.context import context_indices, neighbour_indices, stack_context
from vetseg.data.preprocess import prepare_volume
from vetseg.data.slices import SliceDataset
from vetseg.labels import CORE_ORGANS
from vetseg.training.stages import settle_preprocess
from vetseg.training.validation import cached_validation_cases, make_validation_cases


def test_indices_repeat_the_end_slices() -> None:
    np.testing.assert_array_equal(context_indices(0, 3, 5, 1), [0, 0, 1, 2, 3])
    np.testing.assert_array_equal(context_indices(3, 5, 5, 2), [1, 2, 3, 4, 4, 4])
    np.testing.assert_array_equal(neighbour_indices(np.array([0, 4]), 5, 1), [[0, 0, 1], [3, 4, 4]])
    slices = np.arange(7, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)
    stacks = stack_context(slices, 1)
    assert stacks.shape == (5, 3, 2, 2)
    np.testing.assert_array_equal(stacks[:, :, 0, 0], [[k, k + 1, k + 2] for k in range(5)])
    assert stack_context(slices, 0).shape == (7, 1, 2, 2)


def test_in_memory_samples_are_the_slice_and_its_neighbours() -> None:
    case = _case("a", n_slices=30, liver=range(0, 10))
    pre = Pre(size=32, context_slices=1)
    wide = SliceDataset([case], CORE_ORGANS, pre, augment=None, empty_slice_rate=0.2)
    one = SliceDataset([case], CORE_ORGANS, Pre(size=32), augment=None, empty_slice_rate=0.2)
    prepared = prepare_volume(case.image, Pre(size=32))[:, 0]
    assert len(wide) == len(one)
    for index in range(len(wide)):
        _, z = wide.slice_origin(index)
        image, target = wide[index]
        assert image.shape == (3, 32, 32)
        np.testing.assert_array_equal(image[1].numpy(), one[index][0][0].numpy())
        for channel, k in enumerate((max(z - 1, 0), z, min(z + 1, 29))):
            np.testing.assert_array_equal(image[channel].numpy(), prepared[k])
        assert torch.equal(target, one[index][1])


def test_cached_stacks_and_validation_equal_the_decoded_ones(tmp_path: Path) -> None:
    root = _write_dataset(tmp_path / "ds")
    cache = prepare_cache(root, tmp_path / "cache", SETTINGS)  # context does not change a cache
    loaded = _decoded(root)
    ids = [case.case_id for case in loaded]
    pre = dataclasses.replace(settle_preprocess(PRE, loaded), context_slices=1)
    augment = AugmentConfig(horizontal_flip=0.5, shift_scale_rotate=0.5)
    decoded = SliceDataset(loaded, ORGANS, pre, augment=augment, empty_slice_rate=0.5, seed=4)
    cached = SliceDataset.from_cache(cache, ids, ORGANS, pre, augment, 0.5, seed=4)
    assert len(cached) == len(decoded) > 0
    for index in range(len(decoded)):
        for a, b in zip(cached[index], decoded[index], strict=True):
            assert torch.equal(a, b)
        assert decoded[index][0].shape == (3, 32, 32)
    wide = make_validation_cases(loaded, pre, max_slices=8)
    one = make_validation_cases(loaded, dataclasses.replace(pre, context_slices=0), max_slices=8)
    for a, b, c in zip(
        cached_validation_cases(cache, ids, pre, max_slices=8), wide, one, strict=True
    ):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
        assert b.images.shape[1] == 3 and torch.equal(b.images[:, 1:2], c.images)


@pytest.mark.parametrize(
    "fired",
    ["horizontal_flip", "vertical_flip", "shift_scale_rotate", "distortion", "motion_blur"],
)
def test_augmentation_moves_the_stack_as_one(fired: str) -> None:
    image, masks = _slice(3)
    augment = build_augment(_only(**{fired: 1.0}), CORE_ORGANS)
    flat_image, flat_masks = augment(image, masks, np.random.default_rng(7))
    stack = np.stack([image, image, image])
    out_image, out_masks = augment(stack, masks, np.random.default_rng(7))
    assert out_image.shape == (3, *image.shape) and out_image.dtype == np.float32
    for channel in out_image:
        np.testing.assert_allclose(channel, flat_image, atol=1e-5)
    np.testing.assert_array_equal(out_masks, flat_masks)


def test_noise_is_drawn_for_every_slice_of_the_stack() -> None:
    image, masks = _slice(3)
    augment = build_augment(_only(gauss_noise=1.0), CORE_ORGANS)
    out_image, _ = augment(np.stack([image, image, image]), masks, np.random.default_rng(7))
    assert not np.allclose(out_image[0], out_image[1])
