"""benchmarks/cuda_check.py (the GPU check) still runs its CPU leg, and its summary rule."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import cuda_check  # noqa: E402


def test_cpu_leg_trains_through_the_trainer_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    command = [sys.executable, str(BENCHMARKS / "cuda_check.py"), "--out", str(out)]
    options = ["--devices", "cpu", "--size", "32", "--batch", "2", "--steps", "1", "--epochs", "2"]
    subprocess.run([*command, *options, "--cpu-threads", "1"], check=True, capture_output=True)
    report = json.loads(out.read_text())
    (run,) = report["runs"]
    assert run["device"] == "cpu" and run["parameters_on"] == "cpu"
    assert len(run["seconds_per_epoch"]) == 2 and len(run["val_mean_dice_per_epoch"]) == 2
    assert run["seconds_per_step_steady"] == round(run["seconds_per_epoch"][1], 4)
    assert "cpu_over_cuda_step_time" not in report


def test_summary_takes_the_fastest_epoch_after_the_first() -> None:
    report = {
        "runs": [
            {"device": "cuda", "seconds_per_epoch": [20.0, 13.0, 1.0], "steps_per_epoch": 10},
            {"device": "cpu", "seconds_per_epoch": [30.0, 40.0, 35.0], "steps_per_epoch": 10},
        ]
    }
    cuda_check.summarise(report)
    assert report["runs"][0]["seconds_per_step_steady"] == 0.1
    assert report["runs"][1]["seconds_per_step_steady"] == 3.5
    assert report["cpu_over_cuda_step_time"] == 35.0
