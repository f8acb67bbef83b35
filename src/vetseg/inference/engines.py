"""Inference engines: what turns a batch of model-input slices into organ logits.

Three engines share one call, ``engine(batch) -> logits``, ``[B, C, S, S]`` float32 in (C = 1,
or a slice and its neighbours: ``PreprocessConfig.in_channels``) and
``[B, n_organs, S, S]`` float32 out; ``engine(batch, release=True)`` also gives the engine's
working memory back after the batch (the segmenter asks for it on a scan's last batch, so that
post-processing does not run beside an idle gigabyte):

- :class:`TorchEngine`: the PyTorch model itself, eager, under ``inference_mode``, optionally
  in channels-last memory layout (faster convolutions on CPU);
- :class:`OnnxEngine`: the same network exported to ONNX (:func:`export_onnx`) and run by ONNX
  Runtime, which fuses BatchNorm into convolutions and activations into their producers;
- :class:`~vetseg.inference.openvino_engine.OpenVinoEngine`: the same export compiled by
  OpenVINO, in float32 or, on CPUs with native bf16, in bf16 once :mod:`vetseg.inference.
  precision` has checked that it labels like float32 (about 2x ONNX Runtime's speed here).

:func:`make_engine` picks one by name; ``auto`` picks the fastest that passes the check.

The exported file records the model id and the SHA-256 of the weights it came from, so a stale
export (the model was retrained since) is refused rather than silently used.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from vetseg.errors import InputError, ModelFileError
from vetseg.fileutil import atomic_write_bytes

if TYPE_CHECKING:
    from torch import nn

    from vetseg.inference.precision import PrecisionReport
    from vetseg.models.files import ModelInfo

#: Engine names the CLI accepts; see :func:`make_engine` for what ``auto`` picks.
ENGINES: tuple[str, ...] = ("auto", "torch", "onnx", "openvino")
#: Precisions the CLI accepts: ``auto`` is bf16 where the CPU has it and the model passes the
#: accuracy check, else fp32; ``bf16`` is the same but says so when it falls back.
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
#: ``say(message)``: where engine choices that the user should know about are told (once each).
Say = Callable[[str], None]
#: Name of an exported model inside a model folder, used by ``--engine onnx`` when present.
ONNX_NAME = "model.onnx"
#: Smallest model input size at which ``auto`` exports a model to ONNX in memory. The export
#: takes about 2 s; at 512 x 512 ONNX Runtime repays it within 4 slices (0.2 s per slice
#: against 0.8-1.1 s in PyTorch), while at the demo's 96 x 96 PyTorch segments a whole 20-slice
#: scan in 1.2 s (measured on 2 cores).
AUTO_EXPORT_MIN_SIZE = 256
#: ONNX operator set of the export (ONNX Runtime 1.16+ runs it).
OPSET = 17


class Engine(Protocol):
    """Logits for a batch of model-input slices."""

    name: str

    def __call__(self, batch: np.ndarray, release: bool = False) -> np.ndarray:
        """``[B, C, S, S]`` float32 -> ``[B, n_organs, S, S]`` float32 logits.

        ``release``: free the engine's working memory once this batch is done (the next call
        allocates it again).
        """
        ...


class TorchEngine:
    """The PyTorch model, eager.

    Args:
        model: the network; put in eval mode. It is used, not copied: later changes to its
            weights show in the engine's output.
        channels_last: run convolutions in NHWC memory layout (usually faster on CPU).
    """

    name = "torch"

    def __init__(self, model: nn.Module, channels_last: bool = False) -> None:
        import torch

        self.model = model.eval()
        self.channels_last = channels_last
        if channels_last:
            self.model.to(memory_format=torch.channels_last)

    def __call__(self, batch: np.ndarray, release: bool = False) -> np.ndarray:
        # PyTorch's CPU allocator returns every tensor to the system allocator when it dies:
        # there is nothing to release.
        import torch

        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return self.model(x).float().contiguous().numpy()


class OnnxEngine:
    """An exported model run by ONNX Runtime on the CPU.

    Args:
        source: path of a ``.onnx`` file, or its bytes.
        threads: intra-op threads (None: ONNX Runtime's default, one per physical core).
    """

    name = "onnx"

    def __init__(self, source: str | Path | bytes, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # warnings about unused initialisers are noise here
        # The memory pattern (one block planned per input shape, grown by the arena in powers
        # of two) costs about 0.9 GB at 4 slices of 512 x 512 and gains no speed (measured).
        options.enable_mem_pattern = False
        if threads is not None:
            options.intra_op_num_threads = int(threads)
        model = source if isinstance(source, bytes) else str(source)
        try:
            self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types, all for a bad file
            where = "the exported model" if isinstance(source, bytes) else str(source)
            raise ModelFileError(f"{where}: ONNX Runtime cannot load it ({exc}).") from None
        self.input_name = self.session.get_inputs()[0].name
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        # ONNX Runtime keeps what its CPU arena grew to (about 1 GB for 4 slices of 512 x 512)
        # until the session dies, unless a run asks it to shrink the arena when it ends.
        self._release = ort.RunOptions()
        self._release.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def __call__(self, batch: np.ndarray, release: bool = False) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        options = self._release if release else None
        return self.session.run(None, {self.input_name: x}, options)[0]


def export_onnx_bytes(model: nn.Module, info: ModelInfo) -> bytes:
    """The model as an ONNX file (bytes): batch axis dynamic, input ``S x S`` fixed.

    Fixing the in-plane size to the model's input size (inference always resizes to it) lets
    ONNX Runtime plan every buffer once. The model id, weights checksum and organ names go into
    the file's metadata.

    Args:
        model: the network (put in eval mode; float32, CPU).
        info: its description (input size, organs, id, weights checksum).

    Returns:
        The serialised ONNX model.
    """
    import onnx
    import torch

    size = info.preprocess.tile_size
    model = model.eval()
    dummy = torch.zeros(1, info.preprocess.in_channels, size, size)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter warns about its own deprecation and constant folding.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (dummy,),
            buffer,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    metadata = {
        "vetseg_model_id": info.model_id,
        "vetseg_weights_sha256": info.weights_sha256,
        "vetseg_organs": ",".join(info.organs),
        "vetseg_input_size": str(size),
    }
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "vetseg"
    return proto.SerializeToString()


def export_onnx(model: nn.Module, info: ModelInfo, out: str | Path) -> Path:
    """Write the model as an ONNX file, atomically (see :func:`export_onnx_bytes`)."""
    return atomic_write_bytes(Path(out), export_onnx_bytes(model, info))


def probability_difference(
    model: nn.Module, engine: Engine, size: int, batch: int = 2, seed: int = 0, channels: int = 1
) -> float:
    """Largest difference between the PyTorch model's and an engine's organ probabilities.

    Args:
        model: the reference network.
        engine: the engine to check (e.g. an :class:`OnnxEngine` of the same model).
        size: input height and width.
        batch: slices in the check.
        seed: seed of the random input (standard normal, like normalised CT slices).
        channels: input channels of the model (``PreprocessConfig.in_channels``).

    Returns:
        ``max |sigmoid(engine) - sigmoid(model)|`` over every organ and pixel.
    """
    import torch

    shape = (batch, channels, size, size)
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    with torch.inference_mode():
        reference = torch.sigmoid(model.eval()(torch.from_numpy(x))).numpy()
    other = 1.0 / (1.0 + np.exp(-engine(x).astype(np.float64)))
    return float(np.max(np.abs(other - reference)))


def check_onnx_matches(engine: OnnxEngine, info: ModelInfo, source: Path) -> None:
    """Refuse an ONNX file exported from other weights than ``info``'s.

    Raises:
        ModelFileError: the file's recorded weights checksum or organs differ from the model's.
    """
    check_onnx_metadata(engine.metadata, info, source)


def onnx_file_metadata(path: Path) -> dict[str, str]:
    """The metadata of an ONNX file (read with the ``onnx`` package, no runtime session).

    Raises:
        ModelFileError: not a readable ONNX file.
    """
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others for a damaged file
        raise ModelFileError(f"{path}: not a readable ONNX file ({exc}).") from None
    return {p.key: p.value for p in proto.metadata_props}


def check_onnx_metadata(metadata: dict[str, str], info: ModelInfo, source: Path) -> None:
    """Refuse ONNX metadata that records other weights or organs than ``info``'s.

    Raises:
        ModelFileError: the recorded weights checksum or organs differ from the model's.
    """
    recorded = metadata.get("vetseg_weights_sha256")
    if recorded is None:
        raise ModelFileError(
            f"{source}: not exported by vetseg (no weights checksum in its metadata); "
            "run `vetseg export` again."
        )
    if info.weights_sha256 and recorded != info.weights_sha256:
        raise ModelFileError(
            f"{source}: exported from other weights than model {info.model_id}; "
            "run `vetseg export` again."
        )
    organs = metadata.get("vetseg_organs", "")
    if organs != ",".join(info.organs):
        raise ModelFileError(f"{source}: its organs ({organs}) differ from the model's.")


def open_onnx(path: Path, info: ModelInfo, threads: int | None = None) -> OnnxEngine:
    """An :class:`OnnxEngine` of an exported file, checked against ``info``.

    Raises:
        ModelFileError: no such file, not loadable, or exported from other weights or organs.
    """
    if not path.is_file():
        raise ModelFileError(f"{path}: no such ONNX file.")
    engine = OnnxEngine(path, threads=threads)
    check_onnx_matches(engine, info, path)
    return engine


class ModelSource:
    """Where an engine gets the network from, each part loaded only when needed.

    An engine may need the PyTorch network (``torch``, an export), an ONNX model (``onnx``,
    ``openvino``) or nothing but a cached compiled blob (``openvino``). Building the network
    imports MONAI and takes seconds; a current exported file or blob makes that unnecessary.

    Args:
        info: the model's description.
        model: the network, when already loaded.
        model_dir: the model folder (weights, ``model.onnx``, cached blobs and decisions).
        onnx_path: an exported ONNX file given by the user; it must match the weights.
    """

    def __init__(
        self,
        info: ModelInfo,
        *,
        model: nn.Module | None = None,
        model_dir: Path | None = None,
        onnx_path: str | Path | None = None,
    ) -> None:
        self.info = info
        self.model = model
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.onnx_path = Path(onnx_path) if onnx_path is not None else None
        self._onnx: bytes | Path | None = None

    def network(self) -> nn.Module:
        """The PyTorch network (loaded from the folder on first use)."""
        if self.model is None:
            from vetseg.models.files import load_model

            if self.model_dir is None:
                raise ModelFileError(f"model {self.info.model_id}: no network and no folder.")
            self.model, _ = load_model(self.model_dir)
        return self.model

    def onnx_file(self) -> Path | None:
        """A current exported file: ``onnx_path`` (refused when stale), else the folder's
        ``model.onnx`` when it was exported from these weights, else None.

        Raises:
            ModelFileError: ``onnx_path`` is missing, unreadable or from other weights.
        """
        if self.onnx_path is not None:
            if not self.onnx_path.is_file():
                raise ModelFileError(f"{self.onnx_path}: no such ONNX file.")
            check_onnx_metadata(onnx_file_metadata(self.onnx_path), self.info, self.onnx_path)
            return self.onnx_path
        candidate = self.model_dir / ONNX_NAME if self.model_dir is not None else None
        if candidate is None or not candidate.is_file():
            return None
        try:
            check_onnx_metadata(onnx_file_metadata(candidate), self.info, candidate)
        except ModelFileError:
            return None  # exported from other weights: export these afresh
        return candidate

    def onnx(self) -> bytes | Path:
        """The ONNX model: a current exported file, else these weights exported now."""
        if self._onnx is None:
            found = self.onnx_file()
            if found is None:
                return self._remember(export_onnx_bytes(self.network(), self.info))
            self._onnx = found
        return self._onnx

    def _remember(self, payload: bytes) -> bytes:
        self._onnx = payload
        return payload

    def cache_folder(self) -> Path | None:
        """Where compiled blobs and precision decisions are kept (see
        :func:`vetseg.inference.openvino_engine.cache_folder`)."""
        from vetseg.inference.openvino_engine import cache_folder

        return cache_folder(self.model_dir, self.info)


def make_engine(
    name: str,
    model: nn.Module | None,
    info: ModelInfo,
    *,
    onnx_path: str | Path | None = None,
    model_dir: Path | None = None,
    threads: int | None = None,
    precision: str = "auto",
    say: Say | None = None,
) -> Engine:
    """The engine called ``name`` for a model (see :func:`select_engine`).

    Args:
        name: one of :data:`ENGINES`.
        model: the loaded network, or None to load it from ``model_dir`` only if needed.
        info: its description.
        onnx_path: an exported ONNX file (must match the weights).
        model_dir: the model folder.
        threads: ONNX Runtime / OpenVINO threads (None: their default).
        precision: one of :data:`PRECISIONS`.
        say: told about fallbacks and checks, once each.
    """
    source = ModelSource(info, model=model, model_dir=model_dir, onnx_path=onnx_path)
    return select_engine(name, source, threads=threads, precision=precision, say=say)


def worth_exporting(info: ModelInfo) -> bool:
    """Whether ``auto`` exports the model (ONNX Runtime, OpenVINO) rather than running PyTorch.

    A legacy model runs one ``size x size`` input per slice: at 96 x 96 PyTorch segments a scan
    in about a second and the export would not pay. A model with a pixel spacing runs as many
    tiles as the scan's millimetres need (four 128 px tiles per slice of a 290 mm field at
    1.5 mm), so the work grows with the scan, not the tile, and the export pays.
    """
    return info.preprocess.size >= AUTO_EXPORT_MIN_SIZE or info.preprocess.spacing is not None


def select_engine(
    name: str,
    source: ModelSource,
    *,
    threads: int | None = None,
    precision: str = "auto",
    say: Say | None = None,
) -> Engine:
    """The engine called ``name`` at ``precision``.

    - ``torch``: PyTorch eager, fp32.
    - ``onnx``: ONNX Runtime fp32 on ``onnx_path``, else the folder's ``model.onnx`` (refused
      when exported from other weights), else the weights exported in memory now.
    - ``openvino``: OpenVINO on the cached compiled blob, else compiled from the ONNX model (and
      cached); precision ``auto``/``bf16`` is bf16 where the CPU has it natively and the model
      passes the accuracy check (:mod:`vetseg.inference.precision`), else fp32, said once.
    - ``auto`` (the CLI's default): for models of :data:`AUTO_EXPORT_MIN_SIZE` and more, OpenVINO
      bf16 when OpenVINO is installed, the CPU has native bf16 and the check passes (2x ONNX
      Runtime fp32 on this project's CPU, benchmarks/speed.py); OpenVINO fp32 when the check
      refuses bf16 (1.67x ONNX Runtime fp32 there); otherwise, and for smaller
      models (where the network is a small part of the time), what it picked before: ONNX
      Runtime on a current ``model.onnx``, else an in-memory export for large models, else
      PyTorch. Each fallback is said once.

    Raises:
        ModelFileError: unknown engine, OpenVINO asked for but not installed, or an ONNX file
            that does not match the model.
        InputError: unknown precision, or bf16 asked of an engine that runs fp32 only.
    """
    from vetseg.inference.capabilities import bf16_native, openvino_version

    say = say or (lambda message: None)
    if name not in ENGINES:
        raise ModelFileError(f"unknown engine {name!r}; vetseg runs {', '.join(ENGINES)}.")
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}.")
    if precision == "bf16" and name in ("torch", "onnx"):
        raise InputError(f"--engine {name} runs fp32 only; bf16 runs in OpenVINO.")
    info = source.info
    if name == "torch":
        return TorchEngine(source.network())
    if name == "onnx":
        # Asked for by name, an exported file that does not match the weights is an error.
        given = source.onnx_path
        if given is None and source.model_dir is not None:
            in_folder = source.model_dir / ONNX_NAME
            given = in_folder if in_folder.is_file() else None
        if given is not None:
            return open_onnx(given, info, threads)
        return OnnxEngine(source.onnx(), threads=threads)
    if name == "openvino":
        if openvino_version() is None:
            raise ModelFileError("OpenVINO is not installed (pip install openvino).")
        return _openvino(source, precision, threads, say)
    # auto
    if source.onnx_path is not None or precision == "fp32":
        return _auto_fp32(source, threads)
    if precision == "auto" and not worth_exporting(info):
        return _auto_fp32(source, threads)
    if openvino_version() is None:
        say("OpenVINO is not installed, so no bf16: ONNX Runtime fp32 (pip install openvino).")
        return _auto_fp32(source, threads)
    if not bf16_native():
        say("this CPU has no native bf16 (AVX512_BF16 or AMX): fp32.")
        return _auto_fp32(source, threads)
    try:
        report, candidate, reference = checked_bf16(source, threads, say)
    except Exception as exc:  # noqa: BLE001 - OpenVINO failing on a model leaves the fp32 engines
        say(f"OpenVINO cannot run this model, so no bf16 ({exc}): fp32.")
        return _auto_fp32(source, threads)
    if candidate is not None:
        return candidate
    say(_refusal(report))
    # OpenVINO in fp32 ran 1.67x ONNX Runtime fp32 on this project's CPU (speed.json): the
    # refused precision is bf16, not the engine.
    try:
        return _openvino_fp32(source, threads)
    except Exception:  # noqa: BLE001 - an OpenVINO failure leaves the ONNX Runtime reference
        return reference if reference is not None else _auto_fp32(source, threads)


def _auto_fp32(source: ModelSource, threads: int | None) -> Engine:
    """``auto`` in fp32: ONNX Runtime on a current export, else an in-memory export for large
    models, else PyTorch (also where the export fails).

    An exported file is checked through the ONNX Runtime session's own metadata (no ``onnx``
    import, which costs start-up time).
    """
    if source.onnx_path is not None:
        return open_onnx(source.onnx_path, source.info, threads)
    if source.model_dir is not None and (source.model_dir / ONNX_NAME).is_file():
        try:
            return open_onnx(source.model_dir / ONNX_NAME, source.info, threads)
        except ModelFileError:
            pass  # exported from other weights: these are exported afresh below
    if not worth_exporting(source.info):
        return TorchEngine(source.network())
    try:
        return OnnxEngine(source.onnx(), threads=threads)
    except Exception:  # noqa: BLE001 - any export or load failure leaves PyTorch, which runs all
        return TorchEngine(source.network())


def _refusal(report: PrecisionReport) -> str:
    return (
        f"bf16 refused for this model: {report.reason} ({report.slices} slices of "
        f"{report.source}); running fp32."
    )


def _openvino(source: ModelSource, precision: str, threads: int | None, say: Say) -> Engine:
    """``--engine openvino``: bf16 when asked (or auto), native and checked; else fp32."""
    from vetseg.inference.capabilities import bf16_native

    if precision in ("auto", "bf16"):
        if not bf16_native():
            say("this CPU has no native bf16 (AVX512_BF16 or AMX): OpenVINO fp32.")
        else:
            report, candidate, _ = checked_bf16(source, threads, say)
            if candidate is not None:
                return candidate
            say(_refusal(report))
    return _openvino_fp32(source, threads)


def _openvino_fp32(source: ModelSource, threads: int | None) -> Engine:
    """OpenVINO in fp32 on the cached compiled blob, else compiled from the ONNX model."""
    from vetseg.inference import openvino_engine

    engine = openvino_engine.open_openvino(
        source.info, "fp32", onnx=source.onnx, threads=threads, cache_dir=source.cache_folder()
    )
    assert engine is not None  # with an onnx source it compiles
    return engine


def checked_bf16(
    source: ModelSource, threads: int | None, say: Say
) -> tuple[PrecisionReport, Engine | None, Engine | None]:
    """The bf16 decision for a model (cached, else checked now) and the engines it made.

    Returns:
        ``(report, bf16 engine if it passed else None, the fp32 reference engine if one was
        built for the check else None)``.
    """
    from vetseg.inference import openvino_engine, precision

    info = source.info
    folder = source.cache_folder()
    key = precision.check_key(info, "bf16")
    report = precision.load_check(folder, key)
    if report is not None:
        if not report.passed:
            return report, None, None
        engine = openvino_engine.open_openvino(
            info, "bf16", onnx=source.onnx, threads=threads, cache_dir=folder
        )
        return report, engine, None
    candidate = openvino_engine.open_openvino(
        info, "bf16", onnx=source.onnx, threads=threads, cache_dir=folder
    )
    assert candidate is not None
    volumes, where = precision.check_volumes(info)
    say(f"checking bf16 against fp32 on {where} (once per model and machine)...")
    reference = OnnxEngine(source.onnx(), threads=threads)
    report = precision.check_precision(
        info,
        candidate,
        reference,
        volumes,
        source=where,
        candidate_name="openvino bf16",
        reference_name="onnx fp32",
    )
    report.key = key
    precision.save_check(folder, report)
    if report.passed:
        say(report.summary())
        return report, candidate, reference
    return report, None, reference
