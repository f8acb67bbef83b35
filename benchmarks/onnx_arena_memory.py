"""ONNX Runtime's CPU memory arena: peak RSS and speed with and without it (issue 6 follow-up).

Usage: python benchmarks/onnx_arena_memory.py default|noarena
Runs the animal model (random weights, 512 x 512, batches of 4, 2 threads) and prints the median
time of 5 batches and the process's peak RSS. Run each mode in its own process.
"""

from __future__ import annotations

import resource
import sys
import time

import numpy as np
import onnxruntime as ort
from benchcommon import bench_model

from vetseg.inference.engines import export_onnx_bytes


def main(mode: str) -> None:
    model, info = bench_model()
    blob = export_onnx_bytes(model, info)
    del model
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    if mode == "noarena":
        options.enable_cpu_mem_arena = False
    session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.random.randn(4, 1, 512, 512).astype(np.float32)}
    session.run(None, feed)
    times = []
    for _ in range(5):
        started = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - started)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{mode}: median batch-4 time {sorted(times)[2]:.2f} s, peak RSS {peak_mb:.0f} MB")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "default")
