"""The training checkpoint: one atomic safetensors file per epoch, its JSON state in the metadata.

Weights, the best epoch's weights, the optimiser's state and the bookkeeping live in one file, so
they can never disagree. Tensors are stored on the CPU whatever device trained them, and
nothing in the file depends on how many processes trained: a run resumes on another device or
with another number of processes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vetseg.errors import VetsegError
from vetseg.fileutil import atomic_write_bytes


def save_checkpoint(
    path: Path,
    model: nn.Module,
    best_state: dict[str, torch.Tensor] | None,
    optimizer: torch.optim.Optimizer,
    state_json: dict[str, Any],
) -> None:
    """Write the checkpoint atomically (``state_json`` gains the optimiser's param groups)."""
    from safetensors.torch import save

    def cpu(value: torch.Tensor) -> torch.Tensor:
        return value.detach().to("cpu", copy=True).contiguous()

    tensors = {f"model.{name}": cpu(value) for name, value in model.state_dict().items()}
    for name, value in (best_state or {}).items():
        tensors[f"best.{name}"] = cpu(value)
    opt_state = optimizer.state_dict()
    for index, state in opt_state["state"].items():
        for key, value in state.items():
            tensors[f"optim.{index}.{key}"] = cpu(value)
    state_json = {**state_json, "param_groups": opt_state["param_groups"]}
    payload = save(tensors, metadata={"vetseg_checkpoint": json.dumps(state_json)})
    atomic_write_bytes(path, payload)


def load_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device
) -> dict[str, Any]:
    """Load weights and optimiser state into ``model`` and ``optimizer``.

    Returns:
        The checkpoint's JSON state plus ``"best_state"`` (the best epoch's weights on
        ``device``, or None).

    Raises:
        VetsegError: the file is not a vetseg training checkpoint.
    """
    from safetensors import safe_open

    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        for key in handle.keys():  # noqa: SIM118 - safe_open has no iterator
            tensors[key] = handle.get_tensor(key)
    if "vetseg_checkpoint" not in metadata:
        raise VetsegError(f"{path}: not a vetseg training checkpoint.")
    state = json.loads(metadata["vetseg_checkpoint"])
    model.load_state_dict(
        {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    )
    best = {k[len("best.") :]: v.to(device) for k, v in tensors.items() if k.startswith("best.")}
    optim_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            optim_state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": optim_state, "param_groups": state["param_groups"]})
    return {**state, "best_state": best or None}
