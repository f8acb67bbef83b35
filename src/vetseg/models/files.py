"""Model files: ``model.safetensors`` + ``model.json``, and nothing else.

A vetseg model is a folder holding the weights as safetensors (no pickle: a model file a lab was
sent cannot run code when loaded) and a JSON description: architecture, organ names and ids,
preprocessing, input size, training data and split, metrics, and the parent model's id, so the
lineage of every model can be traced back to the human model it started from.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vetseg.config import PreprocessConfig, from_dict, to_dict
from vetseg.errors import InputError, ModelFileError
from vetseg.fileutil import atomic_write_bytes, atomic_write_json

if TYPE_CHECKING:
    import torch
    from torch import nn

FORMAT_NAME = "vetseg-model"
FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
META_NAME = "model.json"
_PICKLE_SUFFIXES = {".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin", ".tar", ".zip", ".npz"}


@dataclass
class ModelInfo:
    """What ``model.json`` says about a model.

    Attributes:
        model_id: unique id of this model.
        architecture: everything :func:`vetseg.models.factory.build_model` needs.
        organs: organ names, one output channel each; label id ``i + 1`` is ``organs[i]``.
        preprocess: how scans become model input.
        stage: "human", "transfer", "refine", "rl", "scratch", ...
        species: species the model segments.
        parent: id of the model this one was trained from (None for a model from scratch).
        training: data, split, settings and the command that made it.
        metrics: validation (and test) figures.
        created: ISO time stamp (UTC).
        synthetic_data: True when any training data was synthetic (phantoms, atlas synthesis).
        real_data: True when any training data of this stage was a real scan (a human model
            trained on phantoms plus real CT has both flags).
    """

    model_id: str
    architecture: dict[str, Any]
    organs: tuple[str, ...]
    preprocess: PreprocessConfig
    stage: str
    species: str | None = None
    parent: str | None = None
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    synthetic_data: bool = False
    real_data: bool = False
    weights_sha256: str = ""
    weights_dtype: str = "float32"
    #: The folder model.json was read from (not written into it); None for a model in memory.
    folder: Path | None = field(default=None, compare=False, repr=False)

    @property
    def training_data(self) -> Path | None:
        """The training dataset folder: ``training.data`` resolved against the model folder.

        New models record it relative to their folder, older ones as an absolute path.
        """
        data = self.training.get("data")
        if not isinstance(data, str) or not data:
            return None
        path = Path(data)
        if path.is_absolute():
            return path
        return None if self.folder is None else (self.folder / path).resolve()

    @property
    def data_note(self) -> str:
        """What the training data was, for titles and summaries ("" for real data only)."""
        if not self.synthetic_data:
            return ""
        return "synthetic and real data" if self.real_data else "SYNTHETIC data"

    def to_json(self) -> dict[str, Any]:
        """The JSON document written as ``model.json``."""
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "model_id": self.model_id,
            "stage": self.stage,
            "species": self.species,
            "parent": self.parent,
            "created": self.created,
            "architecture": self.architecture,
            "organs": list(self.organs),
            "organ_ids": {name: i + 1 for i, name in enumerate(self.organs)},
            "preprocess": to_dict(self.preprocess),
            "input_size": self.preprocess.size,
            "training": self.training,
            "metrics": self.metrics,
            "synthetic_data": self.synthetic_data,
            "real_data": self.real_data,
            "weights": WEIGHTS_NAME,
            "weights_sha256": self.weights_sha256,
            "weights_dtype": self.weights_dtype,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], source: Path) -> ModelInfo:
        """Parse ``model.json``; a missing or foreign field is a :class:`ModelFileError`."""
        if data.get("format") != FORMAT_NAME:
            raise ModelFileError(
                f"{source}: not a vetseg model description (format field missing)."
            )
        organs, architecture = data.get("organs"), data.get("architecture")
        if isinstance(organs, list) and isinstance(architecture, dict):
            outputs = architecture.get("n_organs")
            if outputs is not None and outputs != len(organs):
                raise ModelFileError(
                    f"{source}: names {len(organs)} organs but its architecture has {outputs} "
                    "outputs, so it does not describe these weights."
                )
        try:
            info = cls(
                model_id=str(data["model_id"]),
                architecture=dict(data["architecture"]),
                organs=tuple(data["organs"]),
                preprocess=from_dict(PreprocessConfig, data["preprocess"]),
                stage=str(data["stage"]),
                species=data.get("species"),
                parent=data.get("parent"),
                training=dict(data.get("training", {})),
                metrics=dict(data.get("metrics", {})),
                created=str(data.get("created", "")),
                synthetic_data=bool(data.get("synthetic_data", False)),
                real_data=bool(data.get("real_data", not data.get("synthetic_data", False))),
                weights_sha256=str(data.get("weights_sha256", "")),
                weights_dtype=str(data.get("weights_dtype", "float32")),
            )
        except InputError as exc:  # a setting out of range, e.g. context_slices 9
            raise ModelFileError(f"{source}: {exc}") from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(f"{source}: model description is incomplete ({exc}).") from exc
        # A record without in_channels (every model before context slices) is one channel.
        channels = info.architecture.get("in_channels", 1)
        if info.architecture.get("class") != "PeerUNet" and channels != info.preprocess.in_channels:
            raise ModelFileError(
                f"{source}: its network takes {channels} input channel(s) but its preprocessing"
                f" gives {info.preprocess.in_channels} (context_slices"
                f" {info.preprocess.context_slices}), so it does not describe these weights."
            )
        return info


def relative_path(path: str | Path, start: str | Path | None) -> str:
    """``path`` relative to the folder ``start`` (POSIX), or absolute where that cannot be.

    Result files (model.json, evaluation JSON, reports) record paths this way, so that they
    hold no machine's absolute paths and stay right when their folder tree moves as a whole.
    """
    absolute = Path(path).resolve()
    if start is None:
        return absolute.as_posix()
    try:
        return Path(os.path.relpath(absolute, Path(start).resolve())).as_posix()
    except ValueError:  # another drive (Windows)
        return absolute.as_posix()


def new_model_id(stage: str) -> str:
    """A sortable, unique id: ``<stage>-<UTC time>-<random>``."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{stage}-{stamp}-{uuid.uuid4().hex[:6]}"


def save_model(model: nn.Module, out_dir: Path, info: ModelInfo, *, half: bool = False) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``out_dir`` atomically.

    Args:
        model: the network; its ``state_dict`` (parameters and buffers) is saved.
        out_dir: folder, created if needed.
        info: the description; ``created``, ``weights_sha256`` and dtype are filled in here.
        half: store floating tensors as float16 (half the size; loaded back as float32).

    Returns:
        The folder written.
    """
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        value = tensor.detach().cpu().contiguous()
        if half and value.is_floating_point():
            value = value.half()
        tensors[name] = value
    payload = save(tensors, metadata={"format": FORMAT_NAME, "model_id": info.model_id})
    info.weights_sha256 = hashlib.sha256(payload).hexdigest()
    info.weights_dtype = "float16" if half else "float32"
    if not info.created:
        info.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    out_dir = Path(out_dir)
    atomic_write_bytes(out_dir / WEIGHTS_NAME, payload)
    atomic_write_json(out_dir / META_NAME, info.to_json())
    return out_dir


def resolve_model_dir(path: Path) -> Path:
    """The model folder for ``path`` (the folder, its model.json or its model.safetensors).

    Raises:
        ModelFileError: for a pickled checkpoint, any other file kind, or a folder without both
            ``model.safetensors`` and ``model.json``.
    """
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such model file or folder.")
    if path.is_file():
        if path.name in (WEIGHTS_NAME, META_NAME):
            path = path.parent
        elif path.suffix.lower() in _PICKLE_SUFFIXES:
            raise ModelFileError(
                f"{path}: refusing to load a pickled checkpoint; vetseg loads only a model folder "
                f"with {WEIGHTS_NAME} + {META_NAME} (unpickling a file can run code)."
            )
        else:
            raise ModelFileError(
                f"{path}: not a vetseg model; expected a folder with {WEIGHTS_NAME} + {META_NAME}."
            )
    for name in (WEIGHTS_NAME, META_NAME):
        if not (path / name).is_file():
            raise ModelFileError(f"{path}: not a vetseg model folder ({name} is missing).")
        # A link may point within the folder; one that leads out of it would make the model's
        # identity (and what `vetseg use` copies) depend on a file nobody looks after.
        target = (path / name).resolve()
        if target.parent != path.resolve():
            raise ModelFileError(
                f"{path}: {name} is a link to {target}, outside the model folder; copy the file "
                "into the folder instead."
            )
    return path


def read_model_info(path: Path) -> ModelInfo:
    """Read ``model.json`` of the model at ``path`` without loading weights."""
    model_dir = resolve_model_dir(path)
    meta_path = model_dir / META_NAME
    try:
        data = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{meta_path}: not valid JSON ({exc}).") from exc
    if not isinstance(data, dict):
        raise ModelFileError(f"{meta_path}: not a vetseg model description.")
    info = ModelInfo.from_json(data, meta_path)
    info.folder = model_dir.resolve()
    return info


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, with a clear error for a corrupt one."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: not a readable safetensors file ({exc}).") from exc


def load_model(path: Path, *, check_hash: bool = True) -> tuple[nn.Module, ModelInfo]:
    """Rebuild a model from its folder; weights from safetensors only.

    Args:
        path: the model folder, or its model.json / model.safetensors.
        check_hash: verify the weights against the SHA-256 recorded in model.json.

    Returns:
        The model in eval mode (float32, CPU) and its description.
    """
    from vetseg.models.factory import build_model

    model_dir = resolve_model_dir(path)
    info = read_model_info(model_dir)
    weights_path = model_dir / WEIGHTS_NAME
    if check_hash and info.weights_sha256:
        digest = hashlib.sha256(weights_path.read_bytes()).hexdigest()
        if digest != info.weights_sha256:
            raise ModelFileError(
                f"{weights_path}: weights do not match the checksum in {META_NAME} "
                "(file changed or damaged)."
            )
    state = load_state(weights_path)
    model = build_model(info.architecture)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ModelFileError(
            f"{weights_path}: weights do not fit the architecture in {META_NAME} "
            f"({len(missing)} missing, {len(unexpected)} unexpected tensors)."
        )
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ModelFileError(
                f"{weights_path}: tensor {name} has shape {tuple(tensor.shape)}, "
                f"the architecture needs {tuple(expected[name].shape)}."
            )
        state[name] = tensor.to(expected[name].dtype)
    model.load_state_dict(state)
    model.eval()
    return model, info
