"""What the small ONNX Runtime benchmarks share: the model they time and interleaved timing."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

from vetseg.config import PreprocessConfig
from vetseg.models.files import ModelInfo, new_model_id


def bench_model(size: int = 512, expand: int = 4, human: Any = None) -> tuple[Any, ModelInfo]:
    """The animal model (7 organs, random weights, eval mode) and a description to export it."""
    from vetseg.models import AnimalOrganNet, HumanOrganNet

    model = AnimalOrganNet.from_human(human or HumanOrganNet(7), 7, expand=expand).eval()
    info = ModelInfo(
        model_id=new_model_id("bench"),
        architecture=model.architecture(),
        organs=tuple("abcdefg"),
        preprocess=PreprocessConfig(size=size),
        stage="bench",
    )
    return model, info


def interleaved_medians(runs: Mapping[Any, Callable[[], Any]], repeats: int) -> dict[Any, float]:
    """Median seconds of each ``run()``, after one warm-up each, the runs taking turns."""
    times: dict[Any, list[float]] = {key: [] for key in runs}
    for run in runs.values():
        run()
    for _ in range(repeats):
        for key, run in runs.items():
            started = time.perf_counter()
            run()
            times[key].append(time.perf_counter() - started)
    return {key: statistics.median(t) for key, t in times.items()}
