"""Does bf16 label like float32? The accuracy check of ``--engine auto`` on the shipped models.

For each model, OpenVINO bf16 against ONNX Runtime fp32 (:func:`vetseg.inference.precision.
check_precision`) on

- ``phantoms``: what ``auto`` uses when the model's validation cases are not on disk (two
  seeded synthetic phantoms of the model's species, 48 slices);
- ``validation``: the model's own validation cases (model.json ``training.split.val``),
  redrawn here for a model trained on vetseg's phantoms (``vetseg phantoms --seed S``: case
  ``<species>_<k>`` is drawn from ``default_rng([S, k])``, so the same cases come back), every
  slice of them.

Writes ``benchmarks/results/precision_check.json`` with the per-organ Dice of both engines, the
change, the agreement between engines and the decision.

Usage::

    python benchmarks/precision_check.py                      # the shipped human phantom model
    python benchmarks/precision_check.py MODEL_DIR ... --seed 0
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from vetseg.fileutil import atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results"
SHIPPED = Path(__file__).resolve().parents[1] / "src" / "vetseg" / "assets" / "human_model"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="*", type=Path, default=[SHIPPED])
    parser.add_argument("--seed", type=int, default=0, help="phantom seed of the training data")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS / "precision_check.json")
    return parser.parse_args(argv)


def redraw_validation(info: Any, seed: int, folder: Path) -> bool:
    """Write the model's validation phantoms into ``folder`` (MSD layout); False if the model
    was not trained on vetseg phantoms (case ids ``<species>_<k>``)."""
    from vetseg.data.phantoms import SPECIES, make_phantom, phantom_meta, write_msd_dataset
    from vetseg.labels import CORE_ORGANS

    val = (info.training.get("split") or {}).get("val") or []
    pattern = re.compile(rf"^({'|'.join(SPECIES)})_(\d+)$")
    matches = [pattern.match(case) for case in val]
    if not val or not all(matches) or not info.synthetic_data:
        return False
    cases = []
    for match in matches:
        assert match is not None
        species, k = match.group(1), int(match.group(2))
        phantom = make_phantom(species, np.random.default_rng([seed, k]))
        cases.append((match.group(0), phantom.ct, phantom.labels, phantom_meta(phantom)))
    write_msd_dataset(folder, cases, CORE_ORGANS, {"species": info.species, "synthetic": True})
    return True


def check_model(model_dir: Path, seed: int, threads: int | None) -> dict[str, Any]:
    """The check of one model on phantoms and, where they can be redrawn, its validation cases."""
    from vetseg.inference import precision
    from vetseg.inference.engines import ModelSource, OnnxEngine
    from vetseg.inference.openvino_engine import open_openvino
    from vetseg.models.files import read_model_info

    info = read_model_info(model_dir)
    source = ModelSource(info, model_dir=model_dir)
    candidate = open_openvino(info, "bf16", onnx=source.onnx, threads=threads)
    reference = OnnxEngine(source.onnx(), threads=threads)
    out: dict[str, Any] = {"model": str(model_dir), "model_id": info.model_id}
    recorded = dict(info.training)
    info.training = {}  # phantoms: as where the validation cases are gone
    volumes, where = precision.check_volumes(info)
    report = precision.check_precision(info, candidate, reference, volumes, source=where)
    out["phantoms"] = report.to_json()
    print(report.summary(), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "validation"
        info.training = recorded
        if redraw_validation(info, seed, data):
            info.training = {**recorded, "data": str(data)}
            volumes, _ = precision.check_volumes(info, slices=10**6)  # every slice
            names = ", ".join(v.name for v in volumes)
            where = f"validation cases {names} (redrawn: vetseg phantoms --seed {seed})"
            report = precision.check_precision(info, candidate, reference, volumes, source=where)
            out["validation"] = report.to_json()
            print(report.summary(), flush=True)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from vetseg.inference.capabilities import cpu_name, onnxruntime_version, openvino_version

    args = parse_args(argv)
    result: dict[str, Any] = {
        "command": shlex.join(["python", "benchmarks/precision_check.py", *(argv or sys.argv[1:])]),
        "cpu": cpu_name(),
        "openvino": openvino_version(),
        "onnxruntime": onnxruntime_version(),
        "candidate": "OpenVINO bf16",
        "reference": "ONNX Runtime fp32",
        "models": [check_model(m, args.seed, args.threads) for m in args.models],
    }
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
