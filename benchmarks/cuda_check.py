"""Does vetseg's training loop run on a CUDA GPU, and how fast against the CPU? (device check)

vetseg is built and tested on CPUs; the trainer's CUDA path (bfloat16 autocast, channels-last
tensors, chosen by :func:`vetseg.training.distributed.current` when a GPU is visible) is only
exercised where a GPU is lent. This script trains the animal model (stem + EfficientNet-b1
body transferred from a randomly initialised human model, fusion, MobileNetV3/scSE refine, new
head) for the same seeded toy task on every device given, through :class:`Trainer` exactly as
``vetseg transfer`` does (one frozen and one unfrozen epoch), and records seconds per step and
the validation Dice each reached. The toy task (bright squares and discs in noise) checks that
learning happens on the device; it says nothing about accuracy on CT.

    python benchmarks/cuda_check.py --out cuda_check.json [--size 256 --batch 16 --steps 20]
    python benchmarks/cuda_check.py --summarise cuda_check.json --out cuda_check.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from vetseg.config import StageConfig  # noqa: E402
from vetseg.models.animal import AnimalOrganNet  # noqa: E402
from vetseg.models.human import HumanOrganNet  # noqa: E402
from vetseg.training import distributed  # noqa: E402
from vetseg.training.trainer import Trainer, ValidationCase  # noqa: E402

N_ORGANS = 2


def sample(seed: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A bright square (organ 1) and a brighter disc (organ 2) in noise, seeded."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0, 0.3, (size, size)).astype(np.float32)
    target = np.zeros((N_ORGANS, size, size), np.float32)
    side = size // 4
    y, x = rng.integers(2, size - side - 2, size=2)
    image[y : y + side, x : x + side] += 2.0
    target[0, y : y + side, x : x + side] = 1
    yy, xx = np.mgrid[:size, :size]
    radius = size // 8
    cy, cx = rng.integers(radius + 1, size - radius - 1, size=2)
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2
    image[disc] = 4.0 + image[disc] * 0.5
    target[1][disc] = 1
    target[0][disc] = 0
    return torch.from_numpy(image)[None], torch.from_numpy(target)


class ToySlices(torch.utils.data.Dataset):
    """The trainer's dataset interface over seeded toy slices."""

    def __init__(self, n: int, size: int) -> None:
        self.items = [sample(i, size) for i in range(n)]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def slice_weights(self, balance: float = 0.5) -> np.ndarray:
        return np.ones(len(self.items))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, target = self.items[i]
        g = torch.Generator().manual_seed(self.epoch * 1000 + i)
        return image + 0.05 * torch.randn(image.shape, generator=g), target


def run(device: str, size: int, batch: int, steps: int, epochs: int) -> dict:
    torch.manual_seed(0)
    human = HumanOrganNet(n_organs=3)
    model = AnimalOrganNet.from_human(human, n_organs=N_ORGANS)
    images, labels = [], []
    for i in range(1000, 1016):
        image, target = sample(i, size)
        images.append(image)
        labels.append((target[0] + 2 * target[1]).long())
    val = [ValidationCase("val", torch.stack(images), torch.stack(labels))]
    config = StageConfig(
        epochs=epochs,
        freeze_epochs=1,
        lr=1e-3,
        batch_size=batch,
        steps_per_epoch=steps,
        extend=0,
        seed=3,
        tversky_alpha=0.3,
        tversky_beta=0.7,
    )
    context = distributed.Distributed(device=torch.device(device))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(
            model,
            ToySlices(64, size),
            val,
            ("a", "b"),
            config,
            Path(tmp),
            progress=False,
            context=context,
        )
        started = time.perf_counter()
        result = trainer.fit()
        total = time.perf_counter() - started
    history = trainer.history
    return {
        "device": device,
        "parameters_on": str(next(trainer.model.parameters()).device),
        "seconds_total": round(total, 2),
        "seconds_per_epoch": [r["seconds"] for r in history],
        "steps_per_epoch": steps,
        "val_mean_dice_per_epoch": [r["val_mean_dice"] for r in history],
        "best_epoch": trainer.best_epoch,
        "best_dice": trainer.best_dice,
        "result": {k: v for k, v in vars(result).items() if isinstance(v, (int, float, str))},
    }


def summarise(report: dict) -> dict:
    """Derived figures from the per-epoch seconds (also re-run on a saved report).

    An epoch's seconds include its validation. The first epoch of each phase carries start-up
    on CUDA (cuDNN autotuning of new shapes, the allocator; the unfrozen phase's first backward
    pass through the body), so the steady step time is the fastest epoch after the first.
    """
    for record in report["runs"]:
        epochs = record["seconds_per_epoch"]
        later = epochs[1:] or epochs
        record["seconds_per_step_steady"] = round(min(later) / record["steps_per_epoch"], 4)
    by = {r["device"]: r for r in report["runs"]}
    if "cuda" in by and "cpu" in by:
        report["cpu_over_cuda_step_time"] = round(
            by["cpu"]["seconds_per_step_steady"] / by["cuda"]["seconds_per_step_steady"], 1
        )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--devices", nargs="+", default=None, help="default: cuda (if any), cpu")
    parser.add_argument("--cpu-threads", type=int, default=None)
    parser.add_argument("--summarise", type=Path, default=None, help="recompute a saved report")
    args = parser.parse_args()
    if args.summarise:
        report = summarise(json.loads(args.summarise.read_text()))
        args.out.write_text(json.dumps(report, indent=2))
        print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=2))
        return
    if args.cpu_threads:
        torch.set_num_threads(args.cpu_threads)
    devices = args.devices or (["cuda", "cpu"] if torch.cuda.is_available() else ["cpu"])
    report = {
        "what": "vetseg's Trainer on a seeded toy task per device (a device check, not accuracy)",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": platform.platform(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_threads": torch.get_num_threads(),
        "settings": vars(args) | {"out": str(args.out)},
        "runs": [],
    }
    for device in devices:
        print(f"training on {device} ...", flush=True)
        record = run(device, args.size, args.batch, args.steps, args.epochs)
        print(json.dumps(record), flush=True)
        report["runs"].append(record)
        args.out.write_text(json.dumps(report, indent=2))
    summarise(report)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
