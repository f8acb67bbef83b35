"""OpenVINO engine: parity with PyTorch, bf16, the compiled-blob cache, the accuracy check that
refuses bf16, and the fallbacks where OpenVINO or bf16 is missing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.inference.conftest import ORGANS, IntensityEngine, own_copy, ramp_volume
from vetseg.cli import app
from vetseg.errors import InputError, ModelFileError
from vetseg.inference import capabilities, openvino_engine, precision
from vetseg.inference.engines import (
    ModelSource,
    OnnxEngine,
    export_onnx_bytes,
    make_engine,
    probability_difference,
)
from vetseg.inference.openvino_engine import blob_path, open_openvino
from vetseg.inference.precision import CheckVolume, check_precision, check_volumes
from vetseg.inference.segmenter import Segmenter
from vetseg.io.image import ImageMeta
from vetseg.models.files import load_model

pytest.importorskip("openvino")
needs_bf16 = pytest.mark.skipif(
    not capabilities.bf16_native(), reason="this CPU has no native bf16 (AVX512_BF16 or AMX)"
)


class Perturbed:
    """An engine whose spleen logits are pushed up by ``shift``: a stand-in for a model whose
    bf16 output differs from fp32 (its other channels are the wrapped engine's own)."""

    def __init__(self, inner: object, shift: float = 3.0) -> None:
        self.inner = inner
        self.shift = shift
        self.name = getattr(inner, "name", "perturbed")
        self.precision = getattr(inner, "precision", "bf16")

    def __call__(self, batch: np.ndarray, release: bool = False) -> np.ndarray:
        logits = self.inner(batch, release)
        logits[:, ORGANS.index("spleen")] += self.shift
        return logits


@pytest.fixture()
def large_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let ``auto`` treat the tests' 32 x 32 models as large (it leaves small ones in PyTorch)."""
    import vetseg.inference.engines as engines

    monkeypatch.setattr(engines, "AUTO_EXPORT_MIN_SIZE", 32)


@pytest.fixture()
def few_check_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """A quicker check: one phantom, 16 slices."""
    monkeypatch.setattr(precision, "CHECK_PHANTOMS", 1)
    monkeypatch.setattr(precision, "CHECK_SLICES", 16)


def test_openvino_fp32_matches_pytorch(random_model_dir: Path) -> None:
    model, info = load_model(random_model_dir)
    payload = export_onnx_bytes(model, info)
    engine = open_openvino(info, "fp32", onnx=lambda: payload, threads=1)
    assert engine is not None and engine.precision == "fp32"
    for batch in (1, 3):  # the batch axis is dynamic
        assert probability_difference(model, engine, size=32, batch=batch, seed=batch) < 1e-4
    x = np.random.default_rng(4).standard_normal((2, 1, 32, 32)).astype(np.float32)
    first = engine(x)
    assert np.array_equal(first, engine(x, release=True))  # the output is a copy, not a view
    assert np.array_equal(first, engine(x))  # memory comes back after a release


@needs_bf16
def test_bf16_runs_close_to_fp32_and_end_to_end(
    random_model_dir: Path, tmp_path: Path, few_check_slices: None
) -> None:
    folder, model, info = own_copy(random_model_dir, tmp_path)
    bf16 = open_openvino(info, "bf16", onnx=lambda: export_onnx_bytes(model, info), threads=1)
    assert bf16 is not None
    difference = probability_difference(model, bf16, size=32, batch=2)
    assert 0 < difference < 0.05  # rounded (8-bit mantissa), yet close

    from vetseg.io.image import read_label, write_image

    meta = ImageMeta((1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
    scan = write_image(ramp_volume((4, 32, 32)), meta, tmp_path / "scan.nii.gz")
    out = tmp_path / "seg.nii.gz"
    args = ["segment", str(folder), str(scan), "--out", str(out), "--engine", "openvino"]
    result = CliRunner().invoke(app, [*args, "--precision", "bf16", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "checking bf16 against fp32" in result.stderr
    assert read_label(out)[0].shape == (4, 32, 32)
    checks = json.loads((folder / "precision_checks.json").read_text())["checks"]
    assert [c["passed"] for c in checks] == [True]  # a random model passes: bf16 rounds little
    assert (folder / "openvino-bf16.blob").is_file()
    # The second run uses the cached decision: no check, nothing said.
    result = CliRunner().invoke(app, [*args, "--precision", "bf16", "--threads", "1"])
    assert result.exit_code == 0 and "checking" not in result.stderr


def test_compiled_blob_is_reused_and_rebuilt_when_stale_or_damaged(
    random_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder, model, info = own_copy(random_model_dir, tmp_path)
    payload = export_onnx_bytes(model, info)
    compiled: list[object] = []
    real_compile = openvino_engine._compile

    def counting(*args: object) -> object:
        compiled.append(args)
        return real_compile(*args)

    monkeypatch.setattr(openvino_engine, "_compile", counting)

    def load(model_info: object = info) -> openvino_engine.OpenVinoEngine:
        engine = open_openvino(model_info, "fp32", onnx=lambda: payload, cache_dir=folder)
        assert engine is not None
        return engine

    first = load()
    assert len(compiled) == 1 and not first.from_cache
    path = blob_path(folder, "fp32")
    assert path.read_bytes().startswith(openvino_engine.BLOB_MAGIC)
    second = load()
    assert len(compiled) == 1 and second.from_cache  # imported, not compiled again
    x = np.random.default_rng(0).standard_normal((2, 1, 32, 32)).astype(np.float32)
    assert np.array_equal(first(x), second(x))
    # Cache only (no ONNX to compile from): the blob is enough.
    assert open_openvino(info, "fp32", onnx=None, cache_dir=folder) is not None

    retrained = load_model(folder)[1]
    retrained.weights_sha256 = "e" * 64
    assert not load(retrained).from_cache and len(compiled) == 2  # other weights: compiled
    assert open_openvino(info, "fp32", onnx=None, cache_dir=folder) is None  # overwritten
    load()
    assert len(compiled) == 3
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # one flipped bit deep in OpenVINO's payload
    path.write_bytes(bytes(data))
    assert not load().from_cache and len(compiled) == 4  # damaged: never trusted, rebuilt
    assert load().from_cache


def test_check_precision_passes_equal_engines_and_refuses_a_shifted_organ(
    intensity_segmenter: Segmenter,
) -> None:
    info = intensity_segmenter.info
    meta = ImageMeta((1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
    volume = ramp_volume((6, 32, 32))
    # Reference labels: exactly what the intensity engine gives, but one row of liver lost.
    truth = Segmenter(None, info, engine=IntensityEngine()).predict(volume, meta).labels
    truth[:, 0, :] = 0
    volumes = [CheckVolume("ramp", volume, meta, truth, ("liver", "spleen"))]

    same = check_precision(info, IntensityEngine(), IntensityEngine(), volumes, source="ramp")
    assert same.passed and same.label_agreement == 1.0 and same.max_dice_change == 0.0
    liver = same.organs[0]
    assert liver.dice_reference is not None and 0.8 < liver.dice_reference < 1.0
    assert same.organs[2].dice_agreement is None  # kidney_left: no engine finds it

    shifted = check_precision(
        info, Perturbed(IntensityEngine(), shift=12.0), IntensityEngine(), volumes, source="ramp"
    )
    assert not shifted.passed and shifted.label_agreement < 1.0
    spleen = shifted.organs[ORGANS.index("spleen")]
    assert spleen.dice_change > precision.MAX_DICE_CHANGE
    assert shifted.max_dice_change == spleen.dice_change
    assert "spleen" in shifted.reason and "more than" in shifted.reason
    # Without reference labels the engines are compared with each other.
    unlabelled = [CheckVolume("ramp", volume, meta)]
    again = check_precision(info, Perturbed(IntensityEngine(), 12.0), IntensityEngine(), unlabelled)
    assert not again.passed and "between the engines" in again.reason
    assert precision.PrecisionReport.from_json(again.to_json()) == again  # as cached


def test_auto_refuses_a_bf16_that_moves_dice_and_says_so_once(
    random_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    large_auto: None,
    few_check_slices: None,
) -> None:
    """Runs on any CPU: the "bf16" engine here is OpenVINO fp32 with its spleen logits pushed
    up, and the CPU is said to have bf16, so only the decision is under test."""
    folder, model, info = own_copy(random_model_dir, tmp_path)
    real_open = openvino_engine.open_openvino

    def bf16_differs(info: object, precision_: str, **kwargs: object) -> object:
        if precision_ != "bf16":
            return real_open(info, precision_, **kwargs)
        engine = real_open(info, "fp32", **{**kwargs, "cache_dir": None})
        return Perturbed(engine)

    monkeypatch.setattr(openvino_engine, "open_openvino", bf16_differs)
    monkeypatch.setattr(capabilities, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    said: list[str] = []
    segmenter = Segmenter.load(folder, engine="auto", threads=1, say=said.append)
    # bf16 is refused, not OpenVINO: it runs in fp32 (faster than ONNX Runtime fp32 here).
    assert (segmenter.engine.name, segmenter.engine.precision) == ("openvino", "fp32")
    refusals = [s for s in said if "bf16 refused" in s]
    assert len(refusals) == 1 and "spleen" in refusals[0] and "running fp32" in refusals[0]
    report = json.loads((folder / "precision_checks.json").read_text())["checks"][0]
    assert report["passed"] is False and report["max_dice_change"] > 0.005
    # The decision is cached: the next load does not check again, and still says why.
    monkeypatch.setattr(precision, "check_precision", lambda *a, **k: pytest.fail("rechecked"))
    said.clear()
    again = Segmenter.load(folder, engine="auto", threads=1, say=said.append)
    assert (again.engine.name, again.engine.precision) == ("openvino", "fp32")
    assert len([s for s in said if "refused" in s]) == 1
    explicit = Segmenter.load(folder, engine="openvino", precision="bf16", threads=1)
    assert explicit.engine.name == "openvino" and explicit.engine.precision == "fp32"


@needs_bf16
def test_auto_picks_checked_bf16_and_then_starts_without_the_network(
    random_model_dir: Path, tmp_path: Path, large_auto: None, few_check_slices: None
) -> None:
    folder, model, info = own_copy(random_model_dir, tmp_path)
    first = Segmenter.load(folder, engine="auto", threads=1)
    assert (first.engine.name, first.engine.precision) == ("openvino", "bf16")
    second = Segmenter.load(folder, engine="auto", threads=1)
    assert second.engine.precision == "bf16" and second.engine.from_cache
    assert second.model is None  # cached blob and decision: no network built
    volume = np.random.default_rng(2).normal(0, 300, (3, 32, 32)).astype(np.float32)
    reference = Segmenter(model, info).predict_canonical(volume)[0]
    assert (second.predict_canonical(volume)[0] == reference).mean() > 0.99


def test_without_openvino_auto_falls_back_and_says_so_once(
    random_model_dir: Path, tmp_path: Path, no_openvino: None, large_auto: None
) -> None:
    folder, model, info = own_copy(random_model_dir, tmp_path)
    said: list[str] = []
    engine = make_engine("auto", model, info, model_dir=folder, threads=1, say=said.append)
    assert engine.name == "onnx"
    assert len(said) == 1 and "OpenVINO is not installed" in said[0]
    with pytest.raises(ModelFileError, match="not installed"):
        make_engine("openvino", model, info, model_dir=folder)
    assert capabilities.machine_support().engines[2].precisions == ()
    result = CliRunner().invoke(app, ["info", "--engines"])
    assert result.exit_code == 0 and "not installed" in result.stdout


def test_auto_falls_back_where_openvino_cannot_compile_the_model(
    random_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, large_auto: None
) -> None:
    def refuse(*args: object) -> object:
        raise RuntimeError("unsupported operation")

    monkeypatch.setattr(openvino_engine, "_compile", refuse)
    monkeypatch.setattr(capabilities, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    folder, model, info = own_copy(random_model_dir, tmp_path)
    said: list[str] = []
    engine = make_engine("auto", model, info, model_dir=folder, threads=1, say=said.append)
    assert engine.name == "onnx"
    assert len(said) == 1 and "cannot run this model" in said[0] and "unsupported" in said[0]
    with pytest.raises(ModelFileError, match="cannot compile"):  # asked for by name: an error
        make_engine("openvino", model, info, model_dir=folder, precision="fp32")


def test_a_cpu_without_bf16_runs_fp32_and_says_so(
    random_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, large_auto: None
) -> None:
    monkeypatch.setattr(capabilities, "cpu_flags", lambda: frozenset({"sse2", "avx2"}))
    assert not capabilities.bf16_native()
    folder, model, info = own_copy(random_model_dir, tmp_path)
    said: list[str] = []
    auto = make_engine("auto", model, info, model_dir=folder, threads=1, say=said.append)
    assert auto.name == "onnx" and len(said) == 1 and "no native bf16" in said[0]
    said.clear()
    ov = make_engine("openvino", model, info, model_dir=folder, threads=1, say=said.append)
    assert (ov.name, ov.precision) == ("openvino", "fp32") and "no native bf16" in said[0]
    assert not (folder / "precision_checks.json").exists()  # nothing was checked
    with pytest.raises(InputError, match="fp32 only"):
        make_engine("onnx", model, info, precision="bf16")


def test_check_volumes_are_the_models_validation_cases_when_on_disk(
    random_model_dir: Path, tmp_path: Path, few_check_slices: None
) -> None:
    from vetseg.data.phantoms import write_msd_dataset

    _, info = load_model(random_model_dir)
    volumes, where = check_volumes(info)
    assert "synthetic human phantom" in where and volumes[0].labels is not None
    assert volumes[0].image.shape[0] == 16 and volumes[0].labelled_organs == ORGANS

    rng = np.random.default_rng(0)
    meta = ImageMeta((1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
    cases = []
    for k in range(3):
        labels = np.zeros((10, 24, 24), dtype=np.uint8)
        labels[:, 4:12, 4:12] = 1
        cases.append((f"c{k}", rng.normal(0, 50, (10, 24, 24)).astype(np.int16), labels, meta))
    data = tmp_path / "data"
    write_msd_dataset(data, cases, ("liver",), {"species": "human"})
    info.training = {"data": str(data), "split": {"val": ["c1", "c2"]}}
    volumes, where = check_volumes(info)
    assert where.startswith("2 validation case(s)")
    assert [v.name for v in volumes] == ["c1", "c2"]
    assert volumes[0].labelled_organs == ("liver",) and volumes[0].image.shape[0] == 8
    assert int(volumes[0].labels.max()) == 1
    info.training["data"] = str(tmp_path / "moved")  # gone since training: phantoms again
    assert "phantom" in check_volumes(info)[1]


def test_cached_decisions_are_keyed_and_a_damaged_file_is_not_trusted(
    intensity_segmenter: Segmenter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = intensity_segmenter.info
    meta = ImageMeta((1.0, 1.0, 2.0), (0.0, 0.0, 0.0))
    volumes = [CheckVolume("ramp", ramp_volume((3, 32, 32)), meta)]
    runs: list[int] = []

    def run() -> precision.PrecisionReport:
        runs.append(1)
        return check_precision(info, IntensityEngine(), IntensityEngine(), volumes)

    report, cached = precision.cached_check(info, "bf16", tmp_path, run)
    assert not cached and report.passed and report.key["weights_sha256"] == info.weights_sha256
    again, cached = precision.cached_check(info, "bf16", tmp_path, run)
    assert cached and again == report and len(runs) == 1
    monkeypatch.setattr(capabilities, "openvino_version", lambda: "2099.1")  # an upgrade
    assert precision.cached_check(info, "bf16", tmp_path, run)[1] is False and len(runs) == 2
    (tmp_path / precision.CHECKS_NAME).write_text("{ not json")
    assert precision.cached_check(info, "bf16", tmp_path, run)[1] is False and len(runs) == 3


def test_a_read_only_model_folder_caches_in_the_user_cache(
    random_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model shipped inside an installed package cannot be written: the blobs and decisions
    go to $XDG_CACHE_HOME/vetseg/models/<weights checksum>."""
    _, info = load_model(random_model_dir)
    assert openvino_engine.cache_folder(random_model_dir, info) == random_model_dir
    monkeypatch.setattr(openvino_engine.os, "access", lambda path, mode: False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = openvino_engine.cache_folder(random_model_dir, info)
    assert folder == tmp_path / "cache" / "vetseg" / "models" / info.weights_sha256[:16]
    assert folder.is_dir() and openvino_engine.cache_folder(None, info) is None


def test_model_source_loads_the_network_only_when_needed(
    random_model_dir: Path, tmp_path: Path
) -> None:
    from vetseg.inference.engines import export_onnx

    folder, model, info = own_copy(random_model_dir, tmp_path)
    source = ModelSource(info, model_dir=folder)
    export_onnx(model, info, folder / "model.onnx")
    assert source.onnx() == folder / "model.onnx" and source.model is None
    engine = OnnxEngine(source.onnx(), threads=1)
    assert probability_difference(model, engine, size=32) < 1e-3


@needs_bf16
def test_cli_info_engines_reports_the_check_for_a_model(
    random_model_dir: Path, tmp_path: Path, few_check_slices: None
) -> None:
    folder, _, _ = own_copy(random_model_dir, tmp_path)
    result = CliRunner().invoke(app, ["info", "--engines", str(folder), "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "openvino" in result.stdout and "native bf16: none" not in result.stdout
    assert "Dice change" in result.stdout and "--engine auto runs" in result.stdout
    assert CliRunner().invoke(app, ["info"]).exit_code == 2  # a scan, or --engines
