"""Fixtures of the inference tests: a tiny saved model, a transparent engine, small scans."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from vetseg.config import PreprocessConfig
from vetseg.inference.segmenter import Segmenter
from vetseg.io.image import ImageMeta
from vetseg.models.animal import AnimalOrganNet
from vetseg.models.files import ModelInfo, load_model, new_model_id, save_model
from vetseg.models.human import HumanOrganNet

ORGANS = ("liver", "spleen", "kidney_left", "lungs")
#: An oblique axis order: array axis 0 runs left-right, as some files store it.
OBLIQUE = ImageMeta(
    spacing=(0.7, 0.8, 1.5),
    origin=(10.0, -5.0, 3.0),
    direction=(0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0),
)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: the test machine's few cores are shared, and two threads that wait
    for each other on a busy machine are ten times slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_network(n_organs: int = len(ORGANS), seed: int = 0) -> AnimalOrganNet:
    """The smallest animal network (random weights, eval mode)."""
    torch.manual_seed(seed)
    human = HumanOrganNet(n_organs=2, decoder_channels=(32, 24, 16, 16))
    return AnimalOrganNet.from_human(human, n_organs=n_organs, refine_blocks=1).eval()


def tiny_info(model: AnimalOrganNet, organs: tuple[str, ...] = ORGANS) -> ModelInfo:
    return ModelInfo(
        model_id=new_model_id("test"),
        architecture=model.architecture(),
        organs=organs,
        preprocess=PreprocessConfig(size=32),
        stage="test",
    )


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved model whose output is known: every voxel is liver (the head's bias decides).

    Random weights, no training: the tests check files, geometry and plumbing, not anatomy.
    """
    model = tiny_network()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([4.0, -4.0, -4.0, -4.0]))
    return save_model(
        model, tmp_path_factory.mktemp("model") / "liver_everywhere", tiny_info(model)
    )


def own_copy(model_dir: Path, tmp_path: Path) -> tuple[Path, torch.nn.Module, ModelInfo]:
    """A copy of a saved model folder that a test may add files to, and its loaded model."""
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    model, info = load_model(folder)
    return folder, model, info


@pytest.fixture()
def no_openvino(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without OpenVINO: ``import openvino`` fails."""
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)


@pytest.fixture(scope="session")
def random_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved model with random weights whose logits depend on the image."""
    model = tiny_network(seed=1)
    return save_model(model, tmp_path_factory.mktemp("model") / "random", tiny_info(model))


class IntensityEngine:
    """A transparent "network": organ logits straight from the normalised image.

    liver where the slice is bright (> 0.5 sd above its mean), spleen where it is dark
    (< -0.5 sd), nothing in between: a known label map for any scan, no weights involved.
    """

    name = "intensity"

    def __init__(self) -> None:
        #: ``(slices, release)`` of every call, in order.
        self.calls: list[tuple[int, bool]] = []

    def __call__(self, batch: np.ndarray, release: bool = False) -> np.ndarray:
        self.calls.append((batch.shape[0], release))
        x = batch[:, 0]
        logits = np.full((x.shape[0], len(ORGANS), *x.shape[1:]), -20.0, dtype=np.float32)
        logits[:, 0] = 20.0 * (x - 0.5)
        logits[:, 1] = 20.0 * (-x - 0.5)
        return logits


@pytest.fixture()
def intensity_segmenter(model_dir: Path) -> Segmenter:
    """A segmenter (size 32 preprocessing) whose labels follow :class:`IntensityEngine`."""
    model, info = load_model(model_dir)
    return Segmenter(model, info, batch_size=4, engine=IntensityEngine())


def ramp_volume(shape: tuple[int, int, int] = (6, 24, 20), seed: int = 0) -> np.ndarray:
    """int16 HU: a bright block, a dark block and noise, so both organs of the engine show,
    and air in one corner voxel of each slice (a CT in HU shows air somewhere; without any,
    ``vetseg segment`` refuses the scan, see :mod:`vetseg.io.units`)."""
    rng = np.random.default_rng(seed)
    volume = rng.normal(0, 20, shape)
    z, y, x = shape
    volume[:, : y // 3, : x // 2] += 400
    volume[:, 2 * y // 3 :, x // 2 :] -= 400
    volume[:, -1, 0] = -1000.0
    return volume.astype(np.int16)
