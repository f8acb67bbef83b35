"""OpenVINO: the CPU engine that runs vetseg's models in bf16 where the CPU has it.

OpenVINO reads the same ONNX export as ONNX Runtime (:func:`vetseg.inference.engines.
export_onnx_bytes`) and compiles it for this CPU in float32 or bf16 (``INFERENCE_PRECISION_HINT``;
on a bf16-capable CPU OpenVINO's own default is bf16, so vetseg always says which it wants).

The compiled model is cached as a file in the model folder, ``openvino-<precision>.blob``: a
header line, a JSON line with the key it was compiled for (weights SHA-256, OpenVINO version,
precision, CPU fingerprint, input size) and the SHA-256 of the payload, then OpenVINO's exported
blob. A later load imports it instead of exporting the network to ONNX again (which needs PyTorch,
MONAI and a few seconds). A blob whose key differs (retrained weights, another OpenVINO, another
CPU) or whose payload does not match its checksum is compiled afresh and overwritten, never
trusted; it is written atomically, so a killed run leaves the old file or the new one.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vetseg.errors import ModelFileError
from vetseg.fileutil import atomic_write_bytes

if TYPE_CHECKING:
    import openvino as ov

    from vetseg.models.files import ModelInfo

#: First line of a cached blob file.
BLOB_MAGIC = b"vetseg-openvino-blob 1\n"
#: OpenVINO's names of vetseg's precisions.
_OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}


@functools.lru_cache(maxsize=1)
def core() -> ov.Core:
    """The process's one OpenVINO ``Core`` (it loads the CPU plugin once)."""
    import openvino as ov

    return ov.Core()


def compile_config(precision: str, threads: int | None) -> dict[str, Any]:
    """OpenVINO CPU settings: one stream (vetseg calls it one batch at a time), the precision
    asked for, ``threads`` inference threads (None: OpenVINO's default, all cores)."""
    if precision not in _OV_PRECISION:
        raise ValueError(f"precision must be one of {', '.join(_OV_PRECISION)}, got {precision!r}")
    config: dict[str, Any] = {
        "INFERENCE_PRECISION_HINT": _OV_PRECISION[precision],
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": "1",
    }
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    return config


def _compile(source: bytes | Path, config: dict[str, Any]) -> Any:
    """Read an ONNX model (bytes or file) and compile it for the CPU (0.2-0.5 s at 512 x 512)."""
    model = core().read_model(source if isinstance(source, bytes) else str(source))
    return core().compile_model(model, "CPU", config)


def _import(payload: bytes, precision: str, threads: int | None) -> Any:
    """A compiled model from an exported blob.

    The precision must be given again: the blob holds the graph, and OpenVINO 2026.4 imports
    it at the CPU's default precision (bf16 here) unless told otherwise (measured: an fp32 blob
    imported without the hint gave bf16-rounded logits).
    """
    return core().import_model(io.BytesIO(payload), "CPU", compile_config(precision, threads))


class OpenVinoEngine:
    """A compiled OpenVINO model on the CPU, called one batch at a time.

    Build one with :func:`open_openvino`.

    Args:
        compiled: OpenVINO's ``CompiledModel``.
        precision: ``"fp32"`` or ``"bf16"``, what it was compiled for.
        from_cache: True when it was imported from a cached blob rather than compiled.
    """

    name = "openvino"

    def __init__(self, compiled: Any, precision: str, from_cache: bool = False) -> None:
        self.compiled = compiled
        self.precision = precision
        self.from_cache = from_cache
        self._request = compiled.create_infer_request()

    def __call__(self, batch: np.ndarray, release: bool = False) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        result = self._request.infer({0: x})
        # The output array is the request's own buffer, overwritten by the next call: copy it.
        logits = np.array(result[0], dtype=np.float32, copy=True)
        if release:
            # Gives back the intermediate buffers (about 0.5 GB for 4 slices of 512 x 512);
            # the next call allocates them again.
            self.compiled.release_memory()
        return logits

    def export(self) -> bytes:
        """OpenVINO's blob of the compiled model (for :func:`write_blob`)."""
        exported = self.compiled.export_model()
        return exported.getvalue() if hasattr(exported, "getvalue") else bytes(exported)

    def __repr__(self) -> str:
        return f"OpenVinoEngine({self.precision}{', cached' if self.from_cache else ''})"


# --------------------------------------------------------------------------- blob cache
def blob_key(info: ModelInfo, precision: str) -> dict[str, Any]:
    """What a cached blob must have been compiled for to be used."""
    from vetseg.inference.capabilities import cpu_fingerprint, openvino_version

    return {
        "model_id": info.model_id,
        "weights_sha256": info.weights_sha256,
        "input_size": info.preprocess.tile_size,
        "organs": list(info.organs),
        "precision": precision,
        "openvino": openvino_version(),
        "cpu": cpu_fingerprint(),
    }


def blob_path(folder: Path, precision: str) -> Path:
    """The cached blob of ``precision`` in ``folder``."""
    return Path(folder) / f"openvino-{precision}.blob"


def write_blob(path: Path, key: dict[str, Any], payload: bytes) -> Path:
    """Write a blob with its key and checksum, atomically."""
    header = {**key, "payload_sha256": hashlib.sha256(payload).hexdigest()}
    data = BLOB_MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload
    return atomic_write_bytes(path, data)


def read_blob(path: Path, key: dict[str, Any]) -> bytes | None:
    """The payload of a cached blob, or None when it is missing, stale or damaged."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    if not data.startswith(BLOB_MAGIC):
        return None
    end = data.find(b"\n", len(BLOB_MAGIC))
    if end < 0:
        return None
    try:
        header = json.loads(data[len(BLOB_MAGIC) : end])
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(header, dict) or any(header.get(k) != v for k, v in key.items()):
        return None
    payload = data[end + 1 :]
    if hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
        return None
    return payload


def open_openvino(
    info: ModelInfo,
    precision: str,
    *,
    onnx: Callable[[], bytes | Path] | None,
    threads: int | None = None,
    cache_dir: Path | None = None,
) -> OpenVinoEngine | None:
    """An OpenVINO engine of a model: the cached blob if current, else compiled and cached.

    Args:
        info: the model's description (the cache key comes from it).
        precision: ``"fp32"`` or ``"bf16"``.
        onnx: gives the ONNX model (bytes or file) when there is no usable cached blob; None
            to use the cache only.
        threads: inference threads (None: OpenVINO's default).
        cache_dir: where the blob is cached (None: no cache). A folder that cannot be written
            only costs the cache.

    Returns:
        The engine, or None when ``onnx`` is None and no current blob is cached.

    Raises:
        ModelFileError: OpenVINO cannot compile the ONNX model.
    """
    key = blob_key(info, precision)
    path = blob_path(cache_dir, precision) if cache_dir is not None else None
    if path is not None:
        payload = read_blob(path, key)
        if payload is not None:
            try:
                compiled = _import(payload, precision, threads)
                return OpenVinoEngine(compiled, precision, from_cache=True)
            except Exception:  # noqa: BLE001 - a blob OpenVINO refuses is rebuilt below
                pass
    if onnx is None:
        return None
    source = onnx()
    try:
        compiled = _compile(source, compile_config(precision, threads))
    except Exception as exc:  # OpenVINO raises its own RuntimeError types for a bad model
        raise ModelFileError(f"OpenVINO cannot compile model {info.model_id} ({exc}).") from None
    engine = OpenVinoEngine(compiled, precision)
    if path is not None:
        try:
            write_blob(path, key, engine.export())
        except OSError:
            pass  # a read-only model folder: compile again next time
    return engine


def cache_folder(model_dir: Path | None, info: ModelInfo) -> Path | None:
    """Where a model's compiled blobs and precision decisions are kept.

    The model folder itself when it can be written (they travel and go with it), else a
    folder per weights checksum under ``$XDG_CACHE_HOME/vetseg`` (``~/.cache/vetseg``), e.g.
    for a model shipped inside an installed package. None without a model folder.
    """
    if model_dir is None:
        return None
    if os.access(model_dir, os.W_OK):
        return Path(model_dir)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vetseg"
    folder = base / "models" / (info.weights_sha256[:16] or info.model_id)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder
