"""How fast does the training loader get slices: from the slice cache, or by decoding scans?

Data: a pairs-layout dataset of ``--cases`` copies (symbolic links) of the real
TotalSegmentator example scan (``../shared/data/human/totalseg_example``: 122 x 101 x 112 at
3 mm, 7 core organs), on the 1.5 mm model grid of the human model, 256 x 256 tiles, no
augmentation (the data path alone). Four figures, all on this machine's CPU:

* ``decode_per_case_s``: reading, reorienting and resampling one case (what every training
  start pays per case and process without a cache);
* ``decode_loader``: slices/s of a loader that decodes the case of every sample, which is what
  training without a cache comes down to once the data no longer fit in memory (the full
  TotalSegmentator set: ~100 GB on the model grid);
* ``memory_loader``: slices/s of today's in-memory ``SliceDataset`` (after decoding every case);
* ``cache_loader``: slices/s of ``SliceDataset.from_cache`` (memory-mapped ``.npy``), with the
  time to open it.

Writes ``benchmarks/results/slice_cache.json``.

Usage::

    nice -n 19 python benchmarks/slice_cache.py --cases 6 --samples 2000   # ~1 min, 2 CPUs
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vetseg.config import PreprocessConfig
from vetseg.data.cache import CacheSettings, prepare_cache
from vetseg.data.datasets import load_case, open_dataset
from vetseg.data.slices import SliceDataset
from vetseg.fileutil import atomic_write_json
from vetseg.labels import CORE_ORGANS

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "slice_cache")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/slice_cache.json")
    parser.add_argument(
        "--scan", type=Path, default=REPO.parent / "shared/data/human/totalseg_example"
    )
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--decode-samples", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def make_dataset(scan: Path, root: Path, cases: int) -> Path:
    """``cases`` pairs-layout copies (links) of one labelled scan."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for i in range(cases):
        (root / f"case{i:03d}.nii.gz").symlink_to(scan / "ct.nii.gz")
        (root / f"case{i:03d}_seg.nii.gz").symlink_to(scan / "seg.nii.gz")
    shutil.copy(scan / "labels.json", root / "labels.json")
    return root


def loader_rate(dataset: Any, samples: int, batch_size: int) -> float:
    """Slices per second through a DataLoader with the trainer's weighted random sampler."""
    weights = torch.as_tensor(dataset.slice_weights(0.5), dtype=torch.double)
    generator = torch.Generator().manual_seed(0)
    sampler = torch.utils.data.WeightedRandomSampler(weights, samples, generator=generator)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler)
    started = time.perf_counter()
    seen = sum(images.shape[0] for images, _ in loader)
    return seen / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    data = make_dataset(args.scan, args.work / "data", args.cases)
    pre = PreprocessConfig(size=256, spacing=1.5)
    settings = CacheSettings.of(pre, CORE_ORGANS, None)
    dataset = open_dataset(data, organs=CORE_ORGANS)

    started = time.perf_counter()
    loaded = [load_case(dataset, case, pre.orientation) for case in dataset.cases]
    decode_s = time.perf_counter() - started
    pre = dataclasses.replace(pre, intensity=(50.0, 150.0))  # any statistics: same work
    started = time.perf_counter()
    memory = SliceDataset(loaded, CORE_ORGANS, pre)
    grid_s = time.perf_counter() - started
    per_case = (decode_s + grid_s) / len(loaded)

    shutil.rmtree(args.work / "cache", ignore_errors=True)
    started = time.perf_counter()
    cache = prepare_cache(data, args.work / "cache", settings)
    prepare_s = time.perf_counter() - started
    started = time.perf_counter()
    cached = SliceDataset.from_cache(cache, list(cache.cases), CORE_ORGANS, pre)
    open_s = time.perf_counter() - started

    # Decoding per sample: every sample reads its case again (a data set beyond memory).
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for _ in range(args.decode_samples):
        case = dataset.cases[int(rng.integers(len(dataset.cases)))]
        one = SliceDataset([load_case(dataset, case, pre.orientation)], CORE_ORGANS, pre)
        one[int(rng.integers(len(one)))]
    decode_rate = args.decode_samples / (time.perf_counter() - started)

    memory_rate = loader_rate(memory, args.samples, args.batch_size)
    cache_rate = loader_rate(cached, args.samples, args.batch_size)
    shape = cache.cases[next(iter(cache.cases))]
    result = {
        "what": "training loader slices/s: slice cache (memory-mapped .npy) vs decoding NIfTI;"
        " real CT (TotalSegmentator example, linked as several cases), CPU, no augmentation",
        "command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "case": {"slices": shape.slices, "model_grid": list(shape.shape), "spacing_mm": 1.5},
        "torch_threads": args.threads,
        "decode_per_case_s": round(per_case, 3),
        "prepare_per_case_s": round(prepare_s / len(loaded), 3),
        "cache_open_s": round(open_s, 4),
        "slices_per_s": {
            "decode_loader": round(decode_rate, 2),
            "memory_loader": round(memory_rate, 1),
            "cache_loader": round(cache_rate, 1),
        },
        "ratio_cache_vs_decode": round(cache_rate / decode_rate, 1),
        "ratio_cache_vs_memory": round(cache_rate / memory_rate, 2),
        "start_s": {
            "decode_all": round(decode_s + grid_s, 3),
            "cache_open": round(open_s, 4),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, result)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
