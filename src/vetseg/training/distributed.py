"""Data-parallel training on torchrun: process group, batch sharding, synchronised BatchNorm.

``torchrun --nproc_per_node N -m vetseg train-human ...`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and a rendezvous address in their environment; :func:`current`
reads them once and joins the process group (gloo on CPU, NCCL on CUDA). Without them the run
is one process, as before. No process management of our own.

The device: CUDA when a GPU is visible, else the CPU; ``VETSEG_DEVICE=cpu`` trains on the CPU
although a GPU is there (``cuda`` insists on a GPU). Under torchrun each process takes the GPU
of its ``LOCAL_RANK``; more processes on a machine than it has GPUs are refused in one sentence.

What makes N processes train like one with their combined batch:

* every process draws the same global sample stream from ``(seed, epoch)`` and takes its
  share of every global batch (:func:`shard_batches`); ``batch_size`` stays the batch of all
  processes together, so a run resumed with another number of processes continues the same
  sample stream;
* DistributedDataParallel averages the gradients; the Tversky counts are summed over the
  processes before the index is taken (:func:`all_reduce_sum`, differentiable), since the
  loss pools them over the batch;
* BatchNorm sees the statistics of the combined batch: PyTorch's ``SyncBatchNorm`` on CUDA, and
  on CPU, where that one refuses to run, :class:`CpuSyncBatchNorm2d` (the same arithmetic over
  a differentiable all-reduce).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from vetseg.errors import InputError


@dataclass(frozen=True)
class Distributed:
    """This process's place in the run.

    Attributes:
        rank: 0 .. world_size - 1; rank 0 alone writes files and prints.
        world_size: processes in the run (1: not distributed).
        local_rank: the process's index on its machine (its GPU).
        device: where the model trains.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_CURRENT: Distributed | None = None


def current() -> Distributed:
    """The run's :class:`Distributed`, joining the process group on first call under torchrun.

    Raises:
        InputError: torchrun's variables are half set or the group cannot be joined.
    """
    global _CURRENT
    if _CURRENT is None:
        _CURRENT = _from_environment()
    return _CURRENT


#: Environment variable choosing the training device: ``cpu``, ``cuda`` or unset (auto).
DEVICE_VARIABLE = "VETSEG_DEVICE"


def _use_cuda() -> bool:
    """Whether to train on CUDA: ``VETSEG_DEVICE`` if set, else whether a GPU is visible."""
    choice = os.environ.get(DEVICE_VARIABLE, "").strip().lower()
    if choice in ("", "auto"):
        return torch.cuda.is_available()
    if choice == "cpu":
        return False
    if choice == "cuda":
        if not torch.cuda.is_available():
            raise InputError(
                f"{DEVICE_VARIABLE}=cuda but PyTorch sees no CUDA GPU here "
                f"(torch {torch.__version__}); unset it to train on the CPU."
            )
        return True
    raise InputError(f"{DEVICE_VARIABLE} must be cpu, cuda or auto, not {choice!r}.")


def _from_environment() -> Distributed:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = _use_cuda()
    if world <= 1:
        return Distributed(device=torch.device("cuda" if cuda else "cpu"))
    try:
        rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    except (KeyError, ValueError):
        raise InputError(
            "WORLD_SIZE is set but RANK or LOCAL_RANK is not: start the run with torchrun."
        ) from None
    if cuda and local_rank >= torch.cuda.device_count():
        gpus = torch.cuda.device_count()
        raise InputError(
            f"process {local_rank} of this machine has no GPU of its own ({gpus} visible): "
            f"start at most {gpus} per machine (torchrun --nproc_per_node {gpus}), or train "
            f"on the CPU with {DEVICE_VARIABLE}=cpu."
        )
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return Distributed(rank, world, local_rank, device)


def shutdown() -> None:
    """Leave the process group (after the run's last collective)."""
    global _CURRENT
    if dist.is_initialized():
        dist.destroy_process_group()
    _CURRENT = None


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shard_batches(indices: Sequence[int], batch_size: int, rank: int, world: int) -> list[int]:
    """This process's share of every global batch of ``indices``, in order.

    Global batch ``k`` is ``indices[k * batch_size : (k + 1) * batch_size]``; process ``rank``
    takes its ``rank``-th contiguous ``batch_size // world`` of each. One process gets them all.

    Raises:
        InputError: a batch size that the processes cannot share evenly.
    """
    if batch_size % world:
        raise InputError(
            f"batch size {batch_size} must be a multiple of the {world} processes (it is the"
            " batch of all of them together)."
        )
    share = batch_size // world
    out: list[int] = []
    for start in range(0, len(indices), batch_size):
        batch = indices[start : start + batch_size]
        out.extend(batch[rank * share : (rank + 1) * share])
    return out


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        # d(sum over processes)/d(this process's tensor) is 1 for every process's output.
        out = grad.clone()
        dist.all_reduce(out)
        return out


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over the processes, with gradient (each process gets the sum of all gradients)."""
    return _AllReduceSum.apply(tensor)


def all_gather_objects(items: list[Any]) -> list[Any]:
    """Every process's ``items``, concatenated in rank order (same list on every process)."""
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, items)
    return [item for part in gathered for item in part]


def mean_over_processes(value: float) -> float:
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor)
    return float(tensor.item()) / dist.get_world_size()


class CpuSyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of all processes' batches together.

    Sums and sums of squares (float64) go through one differentiable all-reduce per layer, so
    the gradient is that of BatchNorm over the combined batch. In eval mode, or alone, it is
    plain BatchNorm2d; parameters and buffers keep their names.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        channels = x.shape[1]
        count = torch.full((1,), x.numel() / channels, dtype=torch.float64, device=x.device)
        local = torch.cat(
            (x.sum((0, 2, 3), dtype=torch.float64), (x * x).sum((0, 2, 3), dtype=torch.float64))
        )
        stats = all_reduce_sum(torch.cat((local, count)))
        n = stats[-1]
        mean = stats[:channels] / n
        var = stats[channels : 2 * channels] / n - mean * mean
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)  # type: ignore[union-attr,operator]
                factor = self.momentum
                if factor is None:  # cumulative average
                    factor = 1.0 / float(self.num_batches_tracked)
                unbiased = var * (n / (n - 1))
                self.running_mean.mul_(1 - factor).add_(factor * mean.to(x.dtype))
                self.running_var.mul_(1 - factor).add_(factor * unbiased.to(x.dtype))  # type: ignore[union-attr]
        scale = torch.rsqrt(var + self.eps).to(x.dtype)
        y = (x - mean.to(x.dtype)[None, :, None, None]) * scale[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Make every BatchNorm2d of ``model`` synchronise across processes (in place).

    CUDA: PyTorch's ``SyncBatchNorm``; CPU: :class:`CpuSyncBatchNorm2d`. Parameters and buffers
    are shared with the replaced layers, and :func:`local_batchnorm` undoes it.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    _swap(model, nn.BatchNorm2d, CpuSyncBatchNorm2d)
    return model


def local_batchnorm(model: nn.Module) -> nn.Module:
    """Undo :func:`sync_batchnorm`: plain BatchNorm2d layers with the same tensors (in place)."""
    _swap(model, (nn.SyncBatchNorm, CpuSyncBatchNorm2d), nn.BatchNorm2d)
    return model


def _swap(module: nn.Module, old: Any, new: type[nn.BatchNorm2d]) -> None:
    for name, child in module.named_children():
        if isinstance(child, old) and type(child) is not new:
            layer = new.__new__(new)
            layer.__dict__ = child.__dict__  # same parameters, buffers, mode and settings
            if hasattr(layer, "process_group"):
                del layer.__dict__["process_group"]
            setattr(module, name, layer)
        else:
            _swap(child, old, new)


def wrap(model: nn.Module, context: Distributed) -> nn.Module:
    """``model`` in DistributedDataParallel (built per epoch: only the trainable parameters of
    the epoch's phase are registered for gradient averaging)."""
    if not context.enabled:
        return model
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    # Depthwise kernels' gradients come with another stride on their size-1 axis: harmless.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
