#!/usr/bin/env bash
# Trains the human phantom model that ships in src/vetseg/assets/human_phantom_model and that
# `vetseg demo` starts from (the demo's 10-minute budget on 2 CPU cores cannot also train it).
# Usage: bash benchmarks/make_human_phantom_model.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-runs/human_phantom}
vetseg=.venv/bin/vetseg
mkdir -p "$work"
[[ -f $work/human/dataset.json ]] || $vetseg phantoms "$work/human" --species human --cases 40 --seed 0
$vetseg train-human "$work/human" --out "$work/model" --size 96 --epochs 10 --lr 1e-3 \
    --batch-size 16 --steps-per-epoch 100 --extend 0 --seed 0 --resume 2>&1 | tee "$work/train.log"
# Ship it in half precision (safetensors + model.json, with the command and log beside it).
.venv/bin/python - "$work" <<'PY'
import shutil, sys
from pathlib import Path
from vetseg.models.files import load_model, save_model
work = Path(sys.argv[1])
model, info = load_model(work / "model")
dest = Path("src/vetseg/assets/human_phantom_model")
save_model(model, dest, info, half=True)
shutil.copy(work / "model" / "train" / "metrics.jsonl", dest / "metrics.jsonl")
(dest / "MADE_BY.txt").write_text(
    "Made by: bash benchmarks/make_human_phantom_model.sh\n"
    "Data: 40 synthetic human phantoms (vetseg phantoms --species human --cases 40 --seed 0).\n"
    "Per-epoch log: metrics.jsonl. Synthetic training data: says nothing about real CT.\n"
)
print("shipped", dest)
PY
