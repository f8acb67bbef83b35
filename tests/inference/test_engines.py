"""ONNX export and ONNX Runtime parity with PyTorch; batched, streamed, bounded memory."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

from tests.inference.conftest import ORGANS, own_copy, tiny_info, tiny_network
from vetseg.cli import app
from vetseg.errors import ModelFileError
from vetseg.inference.engines import (
    OnnxEngine,
    TorchEngine,
    export_onnx,
    export_onnx_bytes,
    make_engine,
    probability_difference,
)
from vetseg.inference.segmenter import Segmenter
from vetseg.models.files import load_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, object, Path]:
    model = tiny_network(seed=3)
    info = tiny_info(model)
    info.weights_sha256 = "a" * 64
    path = export_onnx(model, info, tmp_path_factory.mktemp("onnx") / "model.onnx")
    return model, info, path


def test_onnx_probabilities_match_pytorch(exported: tuple) -> None:
    model, info, path = exported
    engine = OnnxEngine(path, threads=1)
    for batch in (1, 3):  # the batch axis is dynamic
        assert probability_difference(model, engine, size=32, batch=batch, seed=batch) < 1e-3
    # The same through the segmenter, on a scan whose slices are not the model's size.
    volume = np.random.default_rng(0).normal(0, 300, (5, 40, 48)).astype(np.float32)
    torch_probs = Segmenter(model, info, batch_size=2).probabilities_canonical(volume)
    onnx_probs = Segmenter(model, info, batch_size=2, engine=engine).probabilities_canonical(volume)
    assert torch_probs.shape == (5, len(ORGANS), 40, 48)
    assert np.abs(torch_probs - onnx_probs).max() < 1e-3


def test_onnx_release_gives_the_same_logits_and_the_arena_back(exported: tuple) -> None:
    _, _, path = exported
    engine = OnnxEngine(path, threads=1)
    x = np.random.default_rng(5).standard_normal((2, 1, 32, 32)).astype(np.float32)
    plain = engine(x)
    released = engine(x, release=True)
    again = engine(x)  # the arena grows back on the next call
    assert np.array_equal(plain, released) and np.array_equal(plain, again)


def test_the_segmenter_releases_engine_memory_after_the_last_batch_only(
    intensity_segmenter: Segmenter,
) -> None:
    engine = intensity_segmenter.engine
    intensity_segmenter.segment_canonical(np.zeros((10, 32, 32), dtype=np.int16))
    assert engine.calls == [(4, False), (4, False), (2, True)]
    engine.calls.clear()
    intensity_segmenter.probabilities_canonical(np.zeros((8, 32, 32), dtype=np.float32))
    assert engine.calls == [(4, False), (4, True)]


def test_export_records_the_weights_it_came_from(exported: tuple) -> None:
    _, info, path = exported
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["vetseg_model_id"] == info.model_id
    assert meta["vetseg_weights_sha256"] == info.weights_sha256
    assert meta["vetseg_organs"] == ",".join(ORGANS)


def test_a_stale_export_is_refused(exported: tuple) -> None:
    model, info, path = exported
    info_retrained = tiny_info(model)
    info_retrained.weights_sha256 = "b" * 64
    with pytest.raises(ModelFileError, match="other weights"):
        make_engine("onnx", model, info_retrained, onnx_path=path)
    with pytest.raises(ModelFileError, match="unknown engine"):
        make_engine("tensorrt", model, info)


def test_onnx_engine_in_memory_export_labels_like_torch(random_model_dir: Path) -> None:
    model, info = load_model(random_model_dir)
    engine = OnnxEngine(export_onnx_bytes(model, info), threads=1)
    volume = np.random.default_rng(1).normal(0, 300, (6, 32, 32)).astype(np.float32)
    labels_torch, _ = Segmenter(model, info).segment_canonical(volume)
    labels_onnx, _ = Segmenter(model, info, engine=engine).segment_canonical(volume)
    # Equal except where a probability sits within rounding of the threshold.
    assert (labels_torch == labels_onnx).mean() > 0.999


def test_cli_export_then_segment_with_onnx(random_model_dir: Path, tmp_path: Path) -> None:
    from vetseg.io.image import ImageMeta, read_label, write_image

    runner = CliRunner()
    onnx_file = tmp_path / "model.onnx"
    result = runner.invoke(app, ["export", str(random_model_dir), "--onnx", str(onnx_file)])
    assert result.exit_code == 0, result.output
    assert onnx_file.is_file() and "within" in result.stdout
    volume = np.random.default_rng(2).normal(0, 300, (4, 32, 32)).astype(np.int16)
    meta = ImageMeta((1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
    scan = write_image(volume, meta, tmp_path / "scan.nii.gz")
    outs = {}
    for engine in ("torch", "onnx"):
        out = tmp_path / f"seg_{engine}.nii.gz"
        args = ["segment", str(random_model_dir), str(scan), "--out", str(out)]
        args += ["--engine", engine, "--no-postprocess"]
        if engine == "onnx":
            args += ["--onnx-file", str(onnx_file), "--threads", "1"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        outs[engine] = read_label(out)[0]
    assert (outs["torch"] == outs["onnx"]).mean() > 0.999


def test_slices_stream_without_full_volume_probabilities(random_model_dir: Path) -> None:
    """Memory grows by the two uint8 outputs per voxel, nothing more: no float array of the
    whole volume (every organ's probabilities would be 16 bytes per voxel here)."""
    model, info = load_model(random_model_dir)
    segmenter = Segmenter(model, info, batch_size=2, engine=TorchEngine(model))
    segmenter.segment_canonical(np.zeros((2, 48, 48), dtype=np.int16))  # warm-up

    def peak_bytes(slices: int) -> int:
        volume = np.zeros((slices, 48, 48), dtype=np.int16)
        tracemalloc.start()
        segmenter.segment_canonical(volume)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return peak

    extra_voxels = (40 - 8) * 48 * 48
    growth = peak_bytes(40) - peak_bytes(8)
    assert growth >= 2 * extra_voxels  # the outputs themselves are traced
    assert growth < 3.5 * extra_voxels  # any float32 volume would add 4 bytes per voxel


def test_auto_engine_prefers_onnx_runtime(
    random_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_openvino: None
) -> None:
    """Without OpenVINO, auto is ONNX Runtime (see test_openvino.py for the machine with it)."""
    import vetseg.inference.engines as engines

    folder, model, info = own_copy(random_model_dir, tmp_path)
    # No model.onnx: a small model (32 x 32) stays in PyTorch, where the export does not pay...
    assert make_engine("auto", model, info, model_dir=folder).name == "torch"
    # ...a large one is exported in memory, and labels as PyTorch does.
    monkeypatch.setattr(engines, "AUTO_EXPORT_MIN_SIZE", 32)
    auto = make_engine("auto", model, info, model_dir=folder, threads=1)
    assert auto.name == "onnx"
    assert probability_difference(model, auto, size=32) < 1e-3
    export_onnx(model, info, folder / "model.onnx")
    exported = []
    monkeypatch.setattr(engines, "export_onnx_bytes", lambda *a: exported.append(a) or b"")
    assert make_engine("auto", model, info, model_dir=folder, threads=1).name == "onnx"
    assert exported == []  # the folder's current model.onnx, no new export
    stale = tiny_info(model)
    stale.weights_sha256 = "c" * 64  # the model was retrained after the export
    monkeypatch.setattr(engines, "export_onnx_bytes", export_onnx_bytes)
    assert make_engine("auto", model, stale, model_dir=folder, threads=1).name == "onnx"

    def broken(*args: object) -> bytes:
        raise RuntimeError("this model cannot be exported")

    monkeypatch.setattr(engines, "export_onnx_bytes", broken)
    assert make_engine("auto", model, stale, model_dir=folder).name == "torch"
    with pytest.raises(ModelFileError):  # asked for by name, a stale file is an error
        make_engine("onnx", model, stale, model_dir=folder)


def test_an_exported_model_runs_without_building_the_network(
    random_model_dir: Path, tmp_path: Path
) -> None:
    """With a current model.onnx, loading reads model.json only: no MONAI import (1.5 s) and
    no network build; the labels are those of the network."""
    import subprocess
    import sys

    folder, model, info = own_copy(random_model_dir, tmp_path)
    export_onnx(model, info, folder / "model.onnx")
    code = (
        "import sys, numpy as np\n"
        "from vetseg.inference.segmenter import Segmenter\n"
        f"s = Segmenter.load({str(folder)!r}, engine='auto', threads=1)\n"
        "labels, _ = s.segment_canonical(np.zeros((2, 32, 32), dtype=np.int16))\n"
        "print(s.model is None, s.engine.name, 'monai' in sys.modules, labels.shape)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8", check=True
    )
    assert out.stdout.split("\n")[0] == "True onnx False (2, 32, 32)"

    volume = np.random.default_rng(2).normal(0, 300, (3, 32, 32)).astype(np.float32)
    fast = Segmenter.load(folder, engine="onnx", threads=1)
    assert fast.model is None
    reference = Segmenter(model, info).probabilities_canonical(volume)
    assert np.abs(fast.probabilities_canonical(volume) - reference).max() < 1e-3


def test_a_stale_model_onnx_is_exported_afresh_by_auto_and_refused_by_onnx(
    random_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_openvino: None
) -> None:
    import json

    import vetseg.inference.engines as engines

    folder, model, info = own_copy(random_model_dir, tmp_path)
    stale = tiny_info(model)
    stale.weights_sha256 = "d" * 64
    export_onnx(model, stale, folder / "model.onnx")  # recorded weights differ from model.json
    auto = Segmenter.load(folder, engine="auto", threads=1)
    assert auto.engine.name == "torch" and auto.model is not None  # small: PyTorch
    monkeypatch.setattr(engines, "AUTO_EXPORT_MIN_SIZE", 32)
    auto = Segmenter.load(folder, engine="auto", threads=1)
    assert auto.engine.name == "onnx" and auto.model is not None  # exported in memory
    with pytest.raises(ModelFileError, match="other weights"):
        Segmenter.load(folder, engine="onnx")
    assert json.loads((folder / "model.json").read_text())["weights_sha256"] == info.weights_sha256
