"""Data-parallel training on CPU (gloo): 2 processes train as 1 with the combined batch.

The processes are started by ``torch.multiprocessing.spawn`` (the trainer under test) and by
``torchrun`` in a subprocess (the command a user runs); both on tiny data, a few seconds each.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from safetensors import safe_open
from torch import nn

from tests.training.helpers import TinyNet
from tests.training.test_trainer import ToySlices, _val_cases
from vetseg.config import StageConfig
from vetseg.errors import InputError
from vetseg.training import distributed
from vetseg.training.trainer import CHECKPOINT_NAME, METRICS_NAME, Trainer

REPO = Path(__file__).resolve().parents[2]
CONFIG = {"lr": 1e-2, "batch_size": 4, "extend": 0, "seed": 3, "freeze_epochs": 0}


@pytest.fixture(autouse=True)
def _on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests compare gloo runs to 1e-5: keep every process (spawned ones inherit the
    environment) on the CPU also where a GPU is visible (on one GPU, the second process of a
    CUDA run would have no device; bf16 autocast would not match to 1e-5 either)."""
    monkeypatch.setenv(distributed.DEVICE_VARIABLE, "cpu")
    distributed.shutdown()


class NoBiasBeforeNorm(TinyNet):
    """TinyNet without the conv bias that its BatchNorm cancels: that bias's gradient is zero
    up to rounding, and Adam's first step turns rounding noise into a step of +-lr, so it
    cannot agree to 1e-5 between any two runs that round differently."""

    def __init__(self) -> None:
        super().__init__()
        self.body[0] = nn.Conv2d(4, 4, 3, padding=1, bias=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(rank: int, world: int, port: int, out: Path, config: dict[str, Any]) -> None:
    """One process of a run: train TinyNet on the toy slices, then keep its final weights."""
    if world > 1:
        env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        env.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
        os.environ.update(env)
    torch.set_num_threads(1)
    import vetseg.training.checkpoint as checkpoint

    write = checkpoint.atomic_write_bytes

    def counted(path: Path, payload: bytes) -> Path:
        with open(out / f"writes-rank{rank}.txt", "a") as log:
            log.write(f"{Path(path).name}\n")
        return write(path, payload)

    checkpoint.atomic_write_bytes = counted  # type: ignore[assignment]
    try:
        torch.manual_seed(0)
        trainer = Trainer(
            NoBiasBeforeNorm(),
            ToySlices(),
            _val_cases(),
            ("a", "b"),
            StageConfig(**config),
            out / "train",
            progress=False,
        )
        trainer.fit(resume=(out / "train" / CHECKPOINT_NAME).is_file())
        torch.save(trainer.model.state_dict(), out / f"final-rank{rank}.pt")
    finally:
        checkpoint.atomic_write_bytes = write  # the 1-process runs share pytest's process
        distributed.shutdown()


def _spawn(world: int, out: Path, **config: Any) -> None:
    out.mkdir(parents=True, exist_ok=True)
    settings = {**CONFIG, **config}
    if world == 1:
        _run(0, 1, 0, out, settings)
    else:
        mp.spawn(_run, args=(world, _free_port(), out, settings), nprocs=world, join=True)


def _checkpoint_weights(out: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(out / "train" / CHECKPOINT_NAME), framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys() if k.startswith("model.")}  # noqa: SIM118


def test_two_processes_take_the_step_of_one_with_the_combined_batch(tmp_path: Path) -> None:
    _spawn(1, tmp_path / "one", epochs=1, steps_per_epoch=1)
    _spawn(2, tmp_path / "two", epochs=1, steps_per_epoch=1)
    one = torch.load(tmp_path / "one" / "final-rank0.pt")
    for rank in (0, 1):
        two = torch.load(tmp_path / "two" / f"final-rank{rank}.pt")
        assert one.keys() == two.keys()
        for name in one:
            # Weights and BatchNorm running statistics (synchronised: the combined batch's).
            torch.testing.assert_close(two[name], one[name], rtol=0, atol=1e-5, msg=name)
    torch.manual_seed(0)
    initial = NoBiasBeforeNorm().state_dict()
    assert not torch.equal(one["body.0.weight"], initial["body.0.weight"])  # a step was taken
    # Rank 0 alone wrote the checkpoint, once; rank 1 wrote nothing.
    assert (tmp_path / "two" / "writes-rank0.txt").read_text() == f"{CHECKPOINT_NAME}\n"
    assert not (tmp_path / "two" / "writes-rank1.txt").exists()
    assert len((tmp_path / "two" / "train" / METRICS_NAME).read_text().splitlines()) == 1


def test_a_two_process_checkpoint_resumes_in_one_process(tmp_path: Path) -> None:
    _spawn(2, tmp_path / "split", epochs=1, steps_per_epoch=2)
    _spawn(1, tmp_path / "split", epochs=2, steps_per_epoch=2)  # resumes at epoch 2
    _spawn(1, tmp_path / "whole", epochs=2, steps_per_epoch=2)
    history = (tmp_path / "split" / "train" / METRICS_NAME).read_text().splitlines()
    assert len(history) == 2
    assert (tmp_path / "split" / "writes-rank0.txt").read_text().splitlines() == [
        CHECKPOINT_NAME,
        CHECKPOINT_NAME,
    ]
    resumed, whole = (
        _checkpoint_weights(tmp_path / "split"),
        _checkpoint_weights(tmp_path / "whole"),
    )
    for name in whole:
        torch.testing.assert_close(resumed[name], whole[name], rtol=0, atol=1e-4, msg=name)


def test_batches_are_shared_evenly_or_refused() -> None:
    indices = list(range(12))
    assert distributed.shard_batches(indices, 4, 0, 2) == [0, 1, 4, 5, 8, 9]
    assert distributed.shard_batches(indices, 4, 1, 2) == [2, 3, 6, 7, 10, 11]
    assert distributed.shard_batches(indices, 4, 0, 1) == indices
    with pytest.raises(InputError, match="multiple of the 3 processes"):
        distributed.shard_batches(indices, 4, 0, 3)


def test_batchnorm_conversion_keeps_the_tensors_and_undoes_cleanly() -> None:
    model = TinyNet()
    weight = model.body[1].weight
    distributed.sync_batchnorm(model, torch.device("cpu"))
    assert isinstance(model.body[1], distributed.CpuSyncBatchNorm2d)
    assert model.body[1].weight is weight
    x = torch.randn(2, 1, 8, 8)
    before = model(x)  # alone, it is plain BatchNorm
    distributed.local_batchnorm(model)
    assert type(model.body[1]) is torch.nn.BatchNorm2d and model.body[1].weight is weight
    torch.testing.assert_close(model(x), before)


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(),
    reason="torchrun is not installed",
)
def test_torchrun_trains_the_human_model_and_one_process_resumes(tmp_path: Path) -> None:
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    python = [sys.executable, "-m", "vetseg"]
    subprocess.run(
        [*python, "phantoms", str(tmp_path / "human"), "--species", "human", "--cases", "3"],
        check=True,
        env=env,
        capture_output=True,
    )
    subprocess.run(
        [
            *python,
            "prepare",
            str(tmp_path / "human"),
            "--out",
            str(tmp_path / "cache"),
            "--spacing",
            "6",
            "--workers",
            "2",
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    fast = [
        "--spacing",
        "6",
        "--size",
        "64",
        "--batch-size",
        "4",
        "--steps-per-epoch",
        "2",
        "--extend",
        "0",
    ]
    args = ["train-human", str(tmp_path / "cache"), "--out", str(tmp_path / "model"), *fast]
    run = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "vetseg", *args, "--epochs", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("written to") == 1  # rank 0 alone reports
    run = subprocess.run(
        [*python, *args, "--epochs", "2", "--resume"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = (tmp_path / "model" / "train" / METRICS_NAME).read_text().splitlines()
    assert len(lines) == 2 and (tmp_path / "model" / "model.safetensors").is_file()


def _fake_gpus(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_the_device_follows_vetseg_device_and_the_gpus_present(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    _fake_gpus(monkeypatch, 1)
    for choice, expected in (("cpu", "cpu"), ("", "cuda"), ("auto", "cuda"), ("CUDA", "cuda")):
        monkeypatch.setenv(distributed.DEVICE_VARIABLE, choice)
        assert distributed._from_environment().device.type == expected
    monkeypatch.setenv(distributed.DEVICE_VARIABLE, "tpu")
    with pytest.raises(InputError, match="must be cpu, cuda or auto, not 'tpu'"):
        distributed._from_environment()
    _fake_gpus(monkeypatch, 0)
    monkeypatch.setenv(distributed.DEVICE_VARIABLE, "cuda")
    with pytest.raises(InputError, match="sees no CUDA GPU"):
        distributed._from_environment()
    monkeypatch.setenv(distributed.DEVICE_VARIABLE, "")
    assert distributed._from_environment().device.type == "cpu"


def test_more_processes_than_gpus_on_a_machine_are_refused_in_one_sentence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Seen on a 1-GPU machine: torchrun's second process died in set_device with "invalid
    # device ordinal"; now it is refused before touching the GPU or the process group.
    _fake_gpus(monkeypatch, 1)
    monkeypatch.delenv(distributed.DEVICE_VARIABLE, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: pytest.fail("GPU touched"))
    with pytest.raises(InputError, match=r"no GPU of its own \(1 visible\).*--nproc_per_node 1"):
        distributed._from_environment()
