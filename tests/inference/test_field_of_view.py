"""Field-of-view invariance: the labels of a scan do not depend on how much air surrounds it.

A model that works at a pixel spacing sees millimetres, not matrix sizes: padding a scan with
air, cropping it around the body, or storing it at another resolution must not change what it
finds. The network here is a transparent local one (intensity bands after a 3 x 3 mean, fixed
weights): it isolates the pipeline (resampling, intensity normalisation, tiling, the way back),
which is where field-of-view dependence came from. A legacy model (slices squashed to the input
size, per-slice statistics) fails these tests; see the last one.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from vetseg.config import PreprocessConfig
from vetseg.data.phantoms import make_phantom
from vetseg.errors import InputError
from vetseg.inference.engines import OnnxEngine, export_onnx
from vetseg.inference.segmenter import Segmenter
from vetseg.io.image import ImageMeta
from vetseg.models.files import ModelInfo, new_model_id

ORGANS = ("soft_tissue", "lungs", "bone")
#: HU bands (low, high) of the three "organs" of the transparent model.
BANDS_HU = ((0.0, 200.0), (-920.0, -600.0), (300.0, 1000.0))
PREPROCESS = PreprocessConfig(size=32, spacing=0.9, intensity=(50.0, 200.0))


class BandNet(nn.Module):
    """Logit of organ k = sharpness x (half width - |3 x 3 mean - band centre|)."""

    def __init__(self, preprocess: PreprocessConfig) -> None:
        super().__init__()
        mean, std = preprocess.intensity
        lows = torch.tensor([(b[0] - mean) / std for b in BANDS_HU])
        highs = torch.tensor([(b[1] - mean) / std for b in BANDS_HU])
        self.register_buffer("centre", ((lows + highs) / 2).view(1, -1, 1, 1))
        self.register_buffer("half_width", ((highs - lows) / 2).view(1, -1, 1, 1))
        self.pool = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = self.pool(x)
        return 20.0 * (self.half_width - (local - self.centre).abs())


def _segmenter(
    engine: str,
    tmp_path_factory: pytest.TempPathFactory,
    tile: int | None = None,
    mirror: bool = False,
    tilings: int = 1,
) -> Segmenter:
    model = BandNet(PREPROCESS).eval()
    preprocess = dataclasses.replace(PREPROCESS, tile=tile, tilings=tilings)
    info = ModelInfo(new_model_id("test"), {"class": "BandNet"}, ORGANS, preprocess, "test")
    if engine == "torch":
        return Segmenter(model, info, batch_size=8, mirror=mirror)
    info.weights_sha256 = "b" * 64
    path = export_onnx(model, info, tmp_path_factory.mktemp("fov") / "model.onnx")
    engine_ = OnnxEngine(path, threads=1)
    return Segmenter(model, info, batch_size=8, engine=engine_, mirror=mirror)


@pytest.fixture(scope="module")
def rabbit() -> tuple[np.ndarray, tuple[float, float, float]]:
    phantom = make_phantom("rabbit", np.random.default_rng([7, 0]))
    mid = phantom.ct.shape[0] // 2
    return phantom.ct[mid - 4 : mid + 4].astype(np.float32), phantom.spacing


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


@pytest.mark.parametrize(
    ("engine", "tile", "mirror", "tilings"),
    [
        ("torch", None, False, 1),
        ("torch", 64, False, 1),
        ("onnx", None, False, 1),
        ("onnx", 64, False, 1),
        ("torch", None, True, 1),
        ("onnx", 64, True, 1),
        ("torch", None, False, 5),
        ("onnx", 64, False, 3),
    ],
)
def test_padding_with_air_and_cropping_keep_the_labels(
    engine: str,
    tile: int | None,
    mirror: bool,
    tilings: int,
    rabbit: tuple,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Also for a model run on larger tiles than it trained on (``tile``; the ONNX file is
    then exported at that size), with the mirror pass (``mirror``) and with shifted tile
    grids (``tilings``)."""
    ct, spacing = rabbit
    segmenter = _segmenter(engine, tmp_path_factory, tile, mirror, tilings)
    meta = ImageMeta(spacing=spacing, origin=(0.0, 0.0, 0.0))
    base = segmenter.predict(ct, meta).labels

    # The scanner's field of view 2.3 times wider: air on every side, unevenly.
    pad = ((0, 0), (53, 97), (121, 66))
    padded = np.pad(ct, pad, constant_values=-1000.0)
    # The scanner writes where the first voxel lies: padding moves the origin.
    padded_meta = ImageMeta(spacing=spacing, origin=(-121 * spacing[0], -53 * spacing[1], 0.0))
    on_padded = segmenter.predict(padded, padded_meta).labels
    shared = on_padded[:, 53 : 53 + ct.shape[1], 121 : 121 + ct.shape[2]]
    assert (on_padded[:, :53] == 0).all()  # nothing found in the added air

    # Cropped around the body (a margin of 5 mm).
    body = ndimage.binary_fill_holes((ct > -400).any(axis=0))
    ys, xs = np.nonzero(body)
    margin = int(round(5.0 / spacing[0]))
    y0, y1 = max(ys.min() - margin, 0), ys.max() + margin + 1
    x0, x1 = max(xs.min() - margin, 0), xs.max() + margin + 1
    crop_meta = ImageMeta(spacing=spacing, origin=(x0 * spacing[0], y0 * spacing[1], 0.0))
    on_crop = segmenter.predict(np.ascontiguousarray(ct[:, y0:y1, x0:x1]), crop_meta).labels

    for label in range(1, len(ORGANS) + 1):
        reference = base == label
        assert reference.sum() > 100, ORGANS[label - 1]
        assert _dice(reference, shared == label) >= 0.98, ("padded", ORGANS[label - 1])
        inside = reference[:, y0:y1, x0:x1]
        assert _dice(inside, on_crop == label) >= 0.98, ("cropped", ORGANS[label - 1])


class ShapeSpy(BandNet):
    """BandNet that records the spatial size of every batch it is given."""

    def __init__(self, preprocess: PreprocessConfig) -> None:
        super().__init__(preprocess)
        self.seen: set[tuple[int, int]] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.add((int(x.shape[-2]), int(x.shape[-1])))
        return super().forward(x)


def test_an_inference_tile_is_what_the_network_is_run_on(rabbit: tuple) -> None:
    """``PreprocessConfig.tile``: trained on ``size`` tiles, run on ``tile`` ones. A local
    network gives the same labels inside the body either way; the tiles it is handed are the
    larger ones. (Outside the body's box the larger tile reaches further: this network calls
    the skin's edge, between air and tissue, "lungs" there.)"""
    ct, spacing = rabbit
    meta = ImageMeta(spacing=spacing, origin=(0.0, 0.0, 0.0))
    labels, seen = {}, {}
    for tile in (None, 96):
        preprocess = dataclasses.replace(PREPROCESS, tile=tile)
        model = ShapeSpy(preprocess).eval()
        info = ModelInfo(new_model_id("test"), {"class": "BandNet"}, ORGANS, preprocess, "test")
        labels[tile] = Segmenter(model, info, batch_size=8).predict(ct, meta).labels
        seen[tile] = model.seen
    assert seen == {None: {(32, 32)}, 96: {(96, 96)}}
    body = np.stack([ndimage.binary_fill_holes(s > -400) for s in ct])  # lungs inside
    for label in range(1, len(ORGANS) + 1):
        small, large = (labels[None] == label) & body, (labels[96] == label) & body
        assert small.sum() > 100, ORGANS[label - 1]
        assert _dice(small, large) >= 0.98, ORGANS[label - 1]


@pytest.mark.parametrize(
    ("tile", "message"),
    [
        (100, "inference tile 100 must be a multiple of 32"),
        (0, "inference tile 0 must be a multiple of 32 and at least 32"),
        (96.0, "inference tile must be a whole number of pixels"),
        (True, "inference tile must be a whole number of pixels"),
    ],
)
def test_a_bad_inference_tile_is_refused(tile: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        dataclasses.replace(PREPROCESS, tile=tile)


def test_an_inference_tile_needs_a_pixel_spacing() -> None:
    with pytest.raises(InputError, match="inference tile needs a model with a pixel spacing"):
        PreprocessConfig(size=32, tile=64)


def _volumes_at(
    segmenter: Segmenter, ct: np.ndarray, spacing: tuple[float, ...], target: float
) -> np.ndarray:
    """Organ volumes (ml, one per organ of the model) of ``ct`` resampled in-plane to
    ``target`` mm, as the segmenter labels it."""
    zoom = (1.0, spacing[1] / target, spacing[0] / target)
    scan = ndimage.zoom(ct, zoom, order=1, grid_mode=True, mode="grid-constant", cval=-1000)
    meta = ImageMeta(spacing=(target, target, spacing[2]), origin=(0.0, 0.0, 0.0))
    labels = segmenter.predict(scan, meta).labels
    voxel_ml = target * target * spacing[2] / 1000.0
    counts = np.bincount(labels.ravel(), minlength=len(segmenter.organs) + 1)
    return counts[1 : len(segmenter.organs) + 1] * voxel_ml


def test_half_and_one_millimetre_scans_give_the_same_volumes(rabbit: tuple) -> None:
    """The same anatomy stored at 0.5 mm and at 1.0 mm: organ volumes within 5%."""
    ct, spacing = rabbit
    model = BandNet(PREPROCESS).eval()
    info = ModelInfo(new_model_id("test"), {"class": "BandNet"}, ORGANS, PREPROCESS, "test")
    segmenter = Segmenter(model, info, batch_size=8)
    volumes = {target: _volumes_at(segmenter, ct, spacing, target) for target in (0.5, 1.0)}
    for organ, half, one in zip(ORGANS, volumes[0.5], volumes[1.0], strict=True):
        assert half > 0.05, organ
        assert abs(half - one) / half <= 0.05, (organ, half, one)


def test_a_legacy_model_depends_on_the_field_of_view(rabbit: tuple) -> None:
    """The check above can fail: the pre-0.2 input definition does not pass it."""
    ct, spacing = rabbit
    legacy = PreprocessConfig(size=32, intensity=None, spacing=None)
    model = BandNet(PREPROCESS).eval()
    info = ModelInfo(new_model_id("test"), {"class": "BandNet"}, ORGANS, legacy, "test")
    segmenter = Segmenter(model, info, batch_size=8)
    meta = ImageMeta(spacing=spacing, origin=(0.0, 0.0, 0.0))
    base = segmenter.predict(ct, meta).labels
    padded = np.pad(ct, ((0, 0), (53, 97), (121, 66)), constant_values=-1000.0)
    padded_meta = ImageMeta(spacing=spacing, origin=(-121 * spacing[0], -53 * spacing[1], 0.0))
    shared = segmenter.predict(padded, padded_meta).labels[
        :, 53 : 53 + ct.shape[1], 121 : 121 + ct.shape[2]
    ]
    worst = min(_dice(base == k, shared == k) for k in (1, 2, 3))
    assert worst < 0.9


@pytest.mark.slow
@pytest.mark.parametrize(("engine", "tilings"), [("torch", 1), ("onnx", 1), ("torch", 5)])
def test_the_shipped_human_model_gives_the_same_labels_padded_with_air(
    engine: str, tilings: int, tmp_path: Path
) -> None:
    """The real network, not a transparent one: EfficientNet's squeeze-and-excitation pools over
    the whole tile, so a tile that moves relative to the body changes its answer. Tiles follow
    the body (:func:`~vetseg.data.preprocess.plan_tiles`): padding the field with air must not
    move a probability by more than float rounding (1/255 as stored), so a label may change
    only where an organ's probability sits at the 0.5 decision threshold. (Tiling the whole
    field moved the liver's Dice to 0.92 and the spleen's to 0.48 on a real CT padded with 100
    mm of air: benchmarks/body_box_tiles.py.) The same with five grids of tiles (``tilings``),
    each moved relative to the body's box."""
    from vetseg.data.preprocess import body_level

    shipped = Path(__file__).resolve().parents[2] / "src" / "vetseg" / "assets" / "human_model"
    model = shutil.copytree(shipped, tmp_path / "human_model")  # an export lands beside it
    segmenter = Segmenter.load(model, engine=engine, threads=1, tilings=tilings)
    assert body_level(segmenter.info.preprocess) is not None and segmenter.tilings == tilings
    phantom = make_phantom("human", np.random.default_rng([11, 0]), True, "wide")
    mid = phantom.ct.shape[0] // 2
    ct = phantom.ct[mid - 2 : mid + 2].astype(np.float32)
    spacing = tuple(float(s) for s in phantom.spacing)
    meta = ImageMeta(spacing=spacing, origin=(0.0, 0.0, 0.0))
    first = segmenter.predict(ct, meta, keep_probability=True)
    base = first.labels
    assert len(np.unique(base)) >= 4  # the model finds organs here: the check is not empty
    padded = np.pad(ct, ((0, 0), (40, 71), (90, 23)), constant_values=-1000.0)
    padded_meta = ImageMeta(spacing=spacing, origin=(-90 * spacing[0], -40 * spacing[1], 0.0))
    second = segmenter.predict(padded, padded_meta, keep_probability=True)
    window = (slice(None), slice(40, 40 + ct.shape[1]), slice(90, 90 + ct.shape[2]))
    on_padded, probability = second.labels[window], second.probability[window]
    assert first.probability is not None and probability is not None
    moved = np.abs(probability.astype(np.int16) - first.probability.astype(np.int16))
    assert moved.max() <= 1  # float rounding of the resampling, nothing more
    changed = on_padded != base
    # A changed label is a tie: the winning probability at 0.5 (127 or 128 of 255) either way.
    assert np.isin(first.probability[changed], (127, 128)).all()
    assert np.isin(probability[changed], (127, 128)).all()
    assert changed.sum() <= 10, changed.sum()
    for organ in np.unique(base[base > 0]):
        a, b = base == organ, on_padded == organ
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) >= 0.999, organ  # the issue asks 0.98
    assert not second.labels[:, :40].any() and not second.labels[:, :, :90].any()


@pytest.mark.slow
def test_the_shipped_human_model_finds_the_same_volumes_at_half_and_one_millimetre() -> None:
    """The real network on one phantom stored at 0.5 mm and at 1.0 mm: every organ of more
    than 5 ml within 5% (measured: within 1% for all of them)."""
    shipped = Path(__file__).resolve().parents[2] / "src" / "vetseg" / "assets" / "human_model"
    segmenter = Segmenter.load(shipped, engine="torch")
    phantom = make_phantom("human", np.random.default_rng([11, 0]), True, "wide")
    mid = phantom.ct.shape[0] // 2
    ct = phantom.ct[mid - 3 : mid + 3].astype(np.float32)
    spacing = tuple(float(s) for s in phantom.spacing)
    volumes = {target: _volumes_at(segmenter, ct, spacing, target) for target in (0.5, 1.0)}
    large = volumes[0.5] > 5.0
    assert large.sum() >= 5  # liver, spleen, kidneys, bone, stomach, ... are found
    relative = np.abs(volumes[0.5] - volumes[1.0])[large] / volumes[0.5][large]
    assert relative.max() <= 0.05, dict(zip(segmenter.organs, volumes[0.5], strict=True))


def test_the_inference_tile_round_trips_in_model_json_and_old_files_have_none(
    tmp_path: Path,
) -> None:
    preprocess = dataclasses.replace(PREPROCESS, tile=64)
    info = ModelInfo(new_model_id("test"), {"class": "BandNet"}, ORGANS, preprocess, "test")
    record = info.to_json()
    assert ModelInfo.from_json(record, tmp_path).preprocess == preprocess
    record["preprocess"].pop("tile")  # a model.json written before the field existed
    old = ModelInfo.from_json(record, tmp_path).preprocess
    assert old.tile is None and old.tile_size == PREPROCESS.size
