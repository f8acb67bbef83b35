"""Would int8 get vetseg's model to the 15 s goal? ONNX Runtime static quantisation, measured.

Usage: python benchmarks/onnx_int8.py
The animal model (random weights, 512 x 512, batches of 4, 2 threads) is exported, quantised
statically (QDQ, uint8 activations, int8 per-channel weights, calibrated on 4 random slices)
and both files run in one process, interleaved, 6 times each. Prints the median slices/s of
each and their ratio. Not shipped: with random weights and random calibration slices this says
nothing about accuracy, which would need a trained model and real calibration scans.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
from benchcommon import bench_model, interleaved_medians
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from vetseg.inference.engines import export_onnx

BATCH, SIZE = 4, 512


class RandomSlices(CalibrationDataReader):
    def __init__(self, n: int = 4) -> None:
        rng = np.random.default_rng(1)
        self.feeds = iter(
            {"image": rng.standard_normal((1, 1, SIZE, SIZE), np.float32)} for _ in range(n)
        )

    def get_next(self) -> dict | None:
        return next(self.feeds, None)


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.enable_mem_pattern = False
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    model, info = bench_model(SIZE)
    work = Path(tempfile.mkdtemp(prefix="vetseg-int8-"))
    os.chdir(work)  # the quantiser leaves temporary files in the working folder
    fp32 = export_onnx(model, info, work / "fp32.onnx")
    quant_pre_process(str(fp32), str(work / "pre.onnx"), skip_symbolic_shape=True)
    int8 = work / "int8.onnx"
    quantize_static(
        str(work / "pre.onnx"),
        str(int8),
        RandomSlices(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )
    sessions = {"fp32": session(fp32), "int8": session(int8)}
    feed = {"image": np.random.default_rng(0).standard_normal((BATCH, 1, SIZE, SIZE), np.float32)}
    medians = interleaved_medians(
        {name: lambda s=session: s.run(None, feed) for name, session in sessions.items()}, 6
    )
    rate = {name: BATCH / seconds for name, seconds in medians.items()}
    print(
        f"fp32 {rate['fp32']:.2f} slices/s, int8 {rate['int8']:.2f} slices/s, "
        f"int8/fp32 {rate['int8'] / rate['fp32']:.2f}"
    )


if __name__ == "__main__":
    main()
