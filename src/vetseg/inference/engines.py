"""Inference engines: what turns a batch of model-input slices into organ logits.

Two engines share one call, ``engine(batch) -> logits``, ``[B, 1, S, S]`` float32 in and
``[B, n_organs, S, S]`` float32 out; ``engine(batch, release=True)`` also gives the engine's
working memory back after the batch (the segmenter asks for it on a scan's last batch, so that
post-processing does not run beside an idle gigabyte):

- :class:`TorchEngine`: the PyTorch model itself, eager, under ``inference_mode``, optionally
  in channels-last memory layout (faster convolutions on CPU);
- :class:`OnnxEngine`: the same network exported to ONNX (:func:`export_onnx`) and run by ONNX
  Runtime, which fuses BatchNorm into convolutions and activations into their producers.

The exported file records the model id and the SHA-256 of the weights it came from, so a stale
export (the model was retrained since) is refused rather than silently used.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from vetseg.errors import ModelFileError
from vetseg.fileutil import atomic_write_bytes

if TYPE_CHECKING:
    from torch import nn

    from vetseg.models.files import ModelInfo

#: Engine names the CLI accepts; ``auto`` is ONNX Runtime (the folder's current ``model.onnx``,
#: else an export made in memory for input sizes of 256 and more), else PyTorch.
ENGINES: tuple[str, ...] = ("auto", "torch", "onnx")
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
        """``[B, 1, S, S]`` float32 -> ``[B, n_organs, S, S]`` float32 logits.

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

    size = info.preprocess.size
    model = model.eval()
    dummy = torch.zeros(1, 1, size, size)
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
    model: nn.Module, engine: Engine, size: int, batch: int = 2, seed: int = 0
) -> float:
    """Largest difference between the PyTorch model's and an engine's organ probabilities.

    Args:
        model: the reference network.
        engine: the engine to check (e.g. an :class:`OnnxEngine` of the same model).
        size: input height and width.
        batch: slices in the check.
        seed: seed of the random input (standard normal, like normalised CT slices).

    Returns:
        ``max |sigmoid(engine) - sigmoid(model)|`` over every organ and pixel.
    """
    import torch

    x = np.random.default_rng(seed).standard_normal((batch, 1, size, size)).astype(np.float32)
    with torch.inference_mode():
        reference = torch.sigmoid(model.eval()(torch.from_numpy(x))).numpy()
    other = 1.0 / (1.0 + np.exp(-engine(x).astype(np.float64)))
    return float(np.max(np.abs(other - reference)))


def check_onnx_matches(engine: OnnxEngine, info: ModelInfo, source: Path) -> None:
    """Refuse an ONNX file exported from other weights than ``info``'s.

    Raises:
        ModelFileError: the file's recorded weights checksum or organs differ from the model's.
    """
    recorded = engine.metadata.get("vetseg_weights_sha256")
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
    organs = engine.metadata.get("vetseg_organs", "")
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


def make_engine(
    name: str,
    model: nn.Module,
    info: ModelInfo,
    *,
    onnx_path: str | Path | None = None,
    model_dir: Path | None = None,
    threads: int | None = None,
) -> Engine:
    """The engine called ``name`` for a loaded model.

    For ``"onnx"`` the file is ``onnx_path``, else ``model.onnx`` in the model folder when it
    was exported from these weights, else the model is exported in memory now (a few seconds;
    ``vetseg export`` saves that time on later runs). ``"auto"`` (the CLI's default) is ONNX
    Runtime on a current ``model.onnx``; without one, it exports in memory for models of
    :data:`AUTO_EXPORT_MIN_SIZE` and more (at 512 x 512 ONNX Runtime runs the network four to
    five times faster than PyTorch eager, benchmarks/speed.py) and runs smaller models, or any
    that cannot be exported, in PyTorch.

    Raises:
        ModelFileError: unknown engine, or an ONNX file that does not match the model.
    """
    if name == "auto":
        if onnx_path is not None:
            return make_engine("onnx", model, info, onnx_path=onnx_path, threads=threads)
        candidate = model_dir / ONNX_NAME if model_dir is not None else None
        if candidate is not None and candidate.is_file():
            try:
                return make_engine("onnx", model, info, model_dir=model_dir, threads=threads)
            except ModelFileError:
                pass  # exported from other weights: export these now instead
        if info.preprocess.size < AUTO_EXPORT_MIN_SIZE:
            return TorchEngine(model)
        try:
            return OnnxEngine(export_onnx_bytes(model, info), threads=threads)
        except Exception:  # noqa: BLE001 - any export or load failure leaves PyTorch, which runs all
            return TorchEngine(model)
    if name == "torch":
        return TorchEngine(model)
    if name != "onnx":
        raise ModelFileError(f"unknown engine {name!r}; vetseg runs {', '.join(ENGINES)}.")
    candidate = Path(onnx_path) if onnx_path is not None else None
    if candidate is None and model_dir is not None and (model_dir / ONNX_NAME).is_file():
        candidate = model_dir / ONNX_NAME
    if candidate is not None:
        return open_onnx(candidate, info, threads)
    return OnnxEngine(export_onnx_bytes(model, info), threads=threads)
