"""ONNX Runtime's memory pattern on or off: speed of the same model in one process, interleaved.

Usage: python benchmarks/onnx_memory_pattern.py
The animal model (random weights, 512 x 512, batches of 4, 2 threads), exported once; two
sessions that differ only in ``enable_mem_pattern`` run the same batch in turn, 8 times each.
Prints the median seconds per batch of each and their ratio. vetseg turns the pattern off
(see :class:`vetseg.inference.engines.OnnxEngine`): it costs about 0.9 GB at this batch.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from benchcommon import bench_model, interleaved_medians

from vetseg.inference.engines import export_onnx_bytes


def main() -> None:
    blob = export_onnx_bytes(*bench_model())
    sessions = {}
    for pattern in (True, False):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        options.enable_mem_pattern = pattern
        sessions[pattern] = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
    feed = {"image": np.random.default_rng(0).standard_normal((4, 1, 512, 512), np.float32)}
    medians = interleaved_medians(
        {pattern: lambda s=session: s.run(None, feed) for pattern, session in sessions.items()}, 8
    )
    on, off = medians[True], medians[False]
    print(f"memory pattern on: {on:.3f} s per batch of 4; off: {off:.3f} s; off/on {off / on:.2f}")


if __name__ == "__main__":
    main()
