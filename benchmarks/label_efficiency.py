"""Does transfer help, and when? Held-out Dice against k labelled animal cases (issue 12).

For k in {1, 3, 5, 10} labelled animal cases and 3 seeds, on one fixed held-out test set, with
the same step budget, tile and pixel spacing for every trained method:

- ``scratch``: vetseg's animal architecture from random weights;
- ``peer``: what a user would pick instead: a 2D U-Net planned as nnU-Net plans one (MONAI
  DynUNet: kernels, strides, filters, deep supervision; :mod:`vetseg.models.peer`) from random
  weights with nnU-Net's Dice + CE loss;
- ``zero-shot``: the human model with the organ mapping, the animal seen at human scale (no
  training; the organs it knows);
- ``naive``: naive fine-tuning: the human model's stem and body with a new head, all layers
  trained, no frozen epochs, no fusion, no scSE module;
- ``transfer``: vetseg transfer as it ships (body frozen first, then everything);
- ``transfer+round``: + one correction round run through a real workspace: the transfer model
  pre-labels unlabelled cases, the vet is played by the true labels (``vetseg correct``, which
  measures the correction effort), ``vetseg refine`` retrains with its promotion rule; the
  figure is the model the user then has (the new one if promoted, else the transfer model);
- ``transfer+round+rl``: + RL fine-tuning (``vetseg rl-tune WORKSPACE``, leave-one-out mean
  baseline), again the model the user then has (RL's child only if it beats its parent on
  validation).

The k labelled cases are drawn per (k, seed) from a pool of labelled cases; one of them
validates (epoch selection) when k >= 3, and with k = 1 the last epoch is kept. Every method of
a (k, seed) cell gets the same split. The correction round pre-labels ``per_round`` other pool
cases. The held-out test cases are never trained or selected on. To keep the sweep within its
time budget every case is thinned to about ``pool_slices`` (pool) or ``test_slices`` (test)
axial slices spread evenly over it (every s-th slice): the networks are 2D, so this samples
slices (neighbours 1.8 mm apart in a phantom, 0.27 mm in a mouse, are near copies) and changes
no prediction; post-processing still runs in 3D. Full volumes cost most where the workflow
runs inference on whole cases in PyTorch (pre-labels, the round's and RL's validation).
Evaluation: ``vetseg evaluate`` (post-processed, as ``segment`` writes) on ONNX Runtime fp32.

Settings: (a) ``rabbit``: vetseg's rabbit phantoms, 7 organs; (b) ``mouse``: mice synthesised
from the real Digimouse atlas (../shared/data/mouse/digimouse), every organ it labels that
vetseg names (10, with stomach, pancreas and bladder). Both are SYNTHETIC data: the figures
say when the method helps on these data, not on real animals.

Part 3 of the issue (remedies for negative transfer) is ``--remedies``: transfer variants
(freeze schedule, learning rate of the transferred parts, spacing, intensity normalisation)
trained on one cell's split and chosen on VALIDATION Dice; test Dice is reported beside,
never used to choose.

Usage::

    python benchmarks/label_efficiency.py --quick        # reduced sweep, a few minutes
    python benchmarks/label_efficiency.py                # the full sweep (budget: see --help)
    python benchmarks/label_efficiency.py --remedies --setting mouse --k 5

Writes ``benchmarks/results/label_efficiency{,_quick}.{json,md,png}``. Resumable: runs already
in the JSON are skipped and trained models in ``--work`` are reused.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DIGIMOUSE = ROOT.parent / "shared" / "data" / "mouse" / "digimouse" / "labels.nii.gz"
TRAINED = ("scratch", "peer", "naive", "transfer")
METHODS = ("zero-shot", *TRAINED, "transfer+round", "transfer+round+rl")
LABELS = {
    "zero-shot": "zero-shot human",
    "scratch": "scratch",
    "peer": "peer (nnU-Net-style DynUNet)",
    "naive": "naive fine-tune",
    "transfer": "vetseg transfer",
    "transfer+round": "+ 1 correction round",
    "transfer+round+rl": "+ RL (mean baseline)",
}


@dataclass(frozen=True)
class SweepConfig:
    """Sizes and budgets of the sweep (``full()``: the 90-minute sweep; ``quick()``).

    Attributes:
        settings: ``"rabbit"`` and/or ``"mouse"``.
        ks: labelled cases per run.
        seeds: one run per seed (split, sampling and initialisation).
        pool: labelled cases the k are drawn from (also the unlabelled pool of the round).
        held_out: held-out test cases per setting (fixed).
        pool_slices: the pool's cases are thinned to about this many axial slices (a rabbit
            phantom has 128 at 1.8 mm, a Digimouse mouse 177 at 0.27 mm).
        test_slices: the test cases likewise.
        tile: input size of every network (pixels).
        epochs, freeze_epochs, steps, batch, lr: the training budget of every trained method
            (``freeze_epochs`` applies to vetseg transfer only).
        val_slices: validation slices per epoch (selection).
        per_round: cases pre-labelled and corrected in the correction round.
        refine_epochs, refine_freeze, refine_steps: the round's retraining.
        rl_steps, rl_lr: the RL fine-tuning.
    """

    settings: tuple[str, ...] = ("rabbit", "mouse")
    ks: tuple[int, ...] = (1, 3, 5, 10)
    seeds: tuple[int, ...] = (0, 1, 2)
    pool: int = 13
    held_out: int = 3
    pool_slices: int = 36
    test_slices: int = 18
    tile: int = 96
    epochs: int = 3
    freeze_epochs: int = 1
    steps: int = 14
    batch: int = 8
    lr: float = 1e-3
    val_slices: int = 24
    per_round: int = 2
    refine_epochs: int = 2
    refine_freeze: int = 1
    refine_steps: int = 6
    rl_steps: int = 4
    rl_lr: float = 1e-5

    @classmethod
    def quick(cls) -> SweepConfig:
        """A reduced sweep for a few minutes: k 1 and 5, one seed, a tiny budget."""
        return cls(
            ks=(1, 5), seeds=(0,), pool=8, held_out=2, pool_slices=24, test_slices=12, tile=64,
            epochs=2,
            freeze_epochs=1, steps=4, batch=4, val_slices=8, per_round=2, refine_epochs=2,
            refine_freeze=1, refine_steps=2, rl_steps=2,
        )  # fmt: skip

    @property
    def train_steps(self) -> int:
        """Optimiser steps of every trained method."""
        return self.epochs * self.steps

    def stage(self) -> Any:
        """The training settings of the four trained methods."""
        from vetseg.config import PreprocessConfig, StageConfig

        return StageConfig.transfer(
            epochs=self.epochs, freeze_epochs=self.freeze_epochs, lr=self.lr,
            batch_size=self.batch, steps_per_epoch=self.steps, organ_balance=1.0, extend=0,
            val_slices=self.val_slices, preprocess=PreprocessConfig(size=self.tile),
        )  # fmt: skip


# --------------------------------------------------------------------------- data
@dataclass(frozen=True)
class SettingData:
    """One setting's data: the labelled pool, the held-out test set, species and organs."""

    name: str
    pool: Path
    test: Path
    species: str
    description: str


def _make(setting: str, out: Path, cases: int, seed: int) -> None:
    from vetseg.data.phantoms import write_phantom_dataset
    from vetseg.data.synth import synthesize_dataset
    from vetseg.labels import HUMAN_ORGANS

    if setting == "rabbit":
        write_phantom_dataset(out, "rabbit", cases, seed=seed)
    else:
        # Every organ the atlas labels that vetseg names (HUMAN_ORGANS covers them all).
        synthesize_dataset(DIGIMOUSE, out, cases, seed=seed, organs=HUMAN_ORGANS)


def thin_dataset(source: Path, out: Path, slices: int) -> None:
    """Copy a labelled dataset keeping every s-th axial slice (canonical orientation), s chosen
    per case to leave about ``slices`` slices: ``max(1, round(n / slices))``."""
    from vetseg.data.datasets import labelled_organs, load_case, open_dataset
    from vetseg.data.phantoms.dataset import write_msd_dataset

    organs = labelled_organs(source)
    dataset = open_dataset(source, organs=organs)

    strides: dict[str, int] = {}

    def cases() -> Any:
        for case in dataset.cases:
            loaded = load_case(dataset, case)
            stride = strides[case.case_id] = max(1, round(loaded.image.shape[0] / slices))
            meta = loaded.canonical_meta
            spacing = (*meta.spacing[:2], meta.spacing[2] * stride)
            thinned = dataclasses.replace(meta, spacing=spacing)
            yield case.case_id, loaded.image[::stride], loaded.labels[::stride], thinned

    info = {
        "species": dataset.species,
        "synthetic": True,
        "description": f"{source.name} thinned to about {slices} axial slices per case",
        "slice_strides": strides,  # filled while the cases are written
    }
    write_msd_dataset(out, cases(), organs, info)


def setting_data(setting: str, config: SweepConfig, work: Path) -> SettingData:
    """The setting's datasets, written once into ``work`` (seeded; the test set is fixed)."""
    if setting == "mouse" and not DIGIMOUSE.is_file():
        raise SystemExit(f"{DIGIMOUSE}: the Digimouse atlas is needed for the mouse setting.")
    pool = work / setting / f"pool_{config.pool}_{config.pool_slices}sl"
    test = work / setting / f"test_{config.held_out}_{config.test_slices}sl"
    for folder, cases, seed, slices in (
        (pool, config.pool, 1, config.pool_slices),
        (test, config.held_out, 1000, config.test_slices),
    ):
        if not (folder / "dataset.json").is_file():
            whole = work / setting / f"{folder.name.rsplit('_', 1)[0]}_whole"
            if not (whole / "dataset.json").is_file():
                _make(setting, whole, cases, seed=seed)
            thin_dataset(whole, folder, slices)
    species = "rabbit" if setting == "rabbit" else "mouse"
    description = (
        "vetseg rabbit phantoms (SYNTHETIC)"
        if setting == "rabbit"
        else "mice synthesised from the real Digimouse atlas (SYNTHETIC CT, real anatomy)"
    )
    return SettingData(setting, pool, test, species, description)


def case_ids(folder: Path) -> list[str]:
    """The labelled case ids of a dataset folder, sorted."""
    from vetseg.data.datasets import open_dataset

    return sorted(c.case_id for c in open_dataset(folder).cases if c.label is not None)


def cell_split(ids: Sequence[str], k: int, seed: int, per_round: int) -> dict[str, list[str]]:
    """The k labelled cases of a (k, seed) cell, their train/val split and the round's pool.

    One labelled case validates when k >= 3 (with k = 1 or 2 all train, no selection); the
    correction round's unlabelled cases are drawn from the rest of the pool.
    """
    if k + per_round > len(ids):
        raise ValueError(f"a pool of {len(ids)} cases cannot give k={k} + {per_round} more")
    rng = np.random.default_rng([seed, k])
    order = [ids[i] for i in rng.permutation(len(ids))]
    labelled, rest = order[:k], order[k:]
    val = labelled[-1:] if k >= 3 else []
    return {
        "train": sorted(labelled[: len(labelled) - len(val)]),
        "val": sorted(val),
        "unlabelled": sorted(rest[:per_round]),
    }


# --------------------------------------------------------------------------- running
class Sweep:
    """The results file (resumable store) and the work folder of one sweep."""

    def __init__(self, out: Path, work: Path, config: SweepConfig, human: Path, quick: bool):
        self.out, self.work, self.human, self.quick = out, work, human, quick
        self.report: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {}
        old = self.report.get("config")
        new = json.loads(json.dumps(dataclasses.asdict(config)))
        if old is not None:
            if {k: v for k, v in old.items() if k != "settings"} != {
                k: v for k, v in new.items() if k != "settings"
            }:
                raise SystemExit(
                    f"{out} holds a sweep with other sizes or budgets; use another --out or"
                    " delete it."
                )
            # Settings run one at a time add up.
            settings = list(old["settings"]) + [
                s for s in new["settings"] if s not in old["settings"]
            ]
            config = dataclasses.replace(config, settings=tuple(settings))
        self.config = config
        self.report.setdefault("runs", {})
        self.started = time.perf_counter()
        self.ran = 0

    @property
    def runs(self) -> dict[str, Any]:
        return self.report["runs"]

    def save(self) -> None:
        from vetseg.fileutil import atomic_write_text

        text = json.dumps(_json_safe(self.report), indent=1, allow_nan=False) + "\n"
        atomic_write_text(self.out, text)

    def record(self, key: str, value: dict[str, Any], todo: int) -> None:
        self.runs[key] = value
        self.ran += 1
        self.save()
        elapsed = time.perf_counter() - self.started
        mean = value.get("mean_dice")
        shown = f"{mean:.3f}" if isinstance(mean, float) else "-"
        left = todo - self.ran
        eta = f", about {elapsed / self.ran * left / 60:.0f} min left" if left > 0 else ""
        print(
            f"[{self.ran}/{todo}] {key}: mean Dice {shown} "
            f"(train {value.get('train_s', 0):.0f} s, eval {value.get('eval_s', 0):.0f} s); "
            f"{elapsed / 60:.1f} min so far{eta}",
            flush=True,
        )


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def calibrate() -> dict[str, float]:
    """Speed of this machine on a fixed workload, to compare timings across machines (taken at
    the start and the end of a session): PyTorch
    eval of the animal model (random weights) on 4 slices of 512 x 512, as
    ``benchmarks/speed.py`` measured it on a dedicated 2-core machine (0.91 slices/s,
    ``benchmarks/results/speed.json``, 2026-12-03)."""
    import torch

    from vetseg.models import AnimalOrganNet

    torch.manual_seed(0)
    model = AnimalOrganNet(7).eval()
    x = torch.randn(4, 1, 512, 512)
    with torch.no_grad():
        model(x[:1])
        t0 = time.perf_counter()
        model(x)
    seconds = time.perf_counter() - t0
    return {"animal_512_slices_per_s": round(4 / seconds, 3), "dedicated_reference": 0.91}


def evaluate_model(model: Path, test: Path, **kwargs: Any) -> dict[str, Any]:
    """Held-out Dice per organ and mean, with HD95 and status counts, on ONNX Runtime."""
    from vetseg.training.stages import evaluate

    t0 = time.perf_counter()
    result = evaluate(model, test, engine="onnx", **kwargs)
    return {
        "per_organ": result["per_organ"],
        "mean_dice": result["mean_dice"],
        "mean_hd95_mm": result["mean_hd95_mm"],
        "status": {o: {k: v for k, v in s.items() if k not in ("dice", "hd95_mm")}
                   for o, s in result["summary"].items()},
        "eval_s": round(time.perf_counter() - t0, 1),
    }  # fmt: skip


def write_split(folder: Path, split: dict[str, list[str]]) -> None:
    """Pin a model's split before training (``prepare_data`` reads an existing splits.json)."""
    from vetseg.data.datasets import write_splits

    path = folder / "train" / "splits.json"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_splits(path, {"train": split["train"], "val": split["val"], "test": []})


def train_method(
    sweep: Sweep, data: SettingData, method: str, folder: Path, split: dict[str, list[str]],
    **options: Any,
) -> dict[str, Any]:  # fmt: skip
    """Train (or reuse) one method's model for a cell and score it on the test set."""
    from vetseg.training.stages import transfer

    t0 = time.perf_counter()
    if not (folder / "model.json").is_file():
        write_split(folder, split)
        config = options.pop("config", None) or sweep.config.stage()
        transfer(
            sweep.human, data.pool, folder, config, method="vetseg" if method == "transfer"
            else method, species=data.species, size=sweep.config.tile, progress=False, **options,
        )  # fmt: skip
    train_s = round(time.perf_counter() - t0, 1)
    info = json.loads((folder / "model.json").read_text())
    result = evaluate_model(folder, data.test)
    epochs = info["training"]["config"]["epochs"]
    return {
        **result,
        "train_s": train_s,
        "steps": epochs * info["training"]["config"]["steps_per_epoch"],
        "val_mean_dice": info["metrics"].get("val_mean_dice"),
        "val_dice": info["metrics"].get("val_dice"),
        "best_epoch": info["metrics"].get("best_epoch"),
        "spacing_mm": info["preprocess"]["spacing"],
        "architecture": info["architecture"]["class"],
    }


def correction_round(
    sweep: Sweep, data: SettingData, cell: Path, split: dict[str, list[str]], seed: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One correction round, then RL, in a fresh workspace; returns the two runs' records."""
    from vetseg.config import RLConfig, StageConfig
    from vetseg.data.datasets import open_dataset
    from vetseg.io.image import read_label
    from vetseg.models.files import read_model_info
    from vetseg.workflow.correct import correct
    from vetseg.workflow.demo_rounds import label_dice
    from vetseg.workflow.prelabel import prelabel
    from vetseg.workflow.register import add_scans, use_model
    from vetseg.workflow.rl_round import rl_tune_workspace
    from vetseg.workflow.rounds import refine_round
    from vetseg.workflow.workspace import Workspace, WorkspaceSettings

    cfg = sweep.config
    transfer_dir = cell / "transfer"
    organs = read_model_info(transfer_dir).organs
    dataset = open_dataset(data.pool, organs=organs)
    if {k: v for k, v in dataset.mapping.items() if v} != dict(enumerate(organs, start=1)):
        raise SystemExit(f"{data.pool}: label ids are not the model's organ order")
    by_id = {c.case_id: c for c in dataset.cases}
    root = cell / "workspace"
    if root.exists():  # a round that did not finish: start it again from nothing
        shutil.rmtree(root)
    t0 = time.perf_counter()
    settings = WorkspaceSettings(species=data.species, organs=organs, synthetic=True, seed=seed)
    labelled = split["train"] + split["val"]
    with Workspace.create(root, settings) as ws, ws.changing():
        add_scans(ws, [by_id[c].image for c in labelled], [by_id[c].label for c in labelled],
                  case_ids=[f"lab_{c}" for c in labelled])  # fmt: skip
        add_scans(ws, [by_id[c].image for c in split["unlabelled"]],
                  case_ids=[f"pool_{c}" for c in split["unlabelled"]])  # fmt: skip
        use_model(ws, transfer_dir, note="label-efficiency benchmark: vetseg transfer")
    refine_config = StageConfig.refine(
        epochs=cfg.refine_epochs, freeze_epochs=cfg.refine_freeze, lr=cfg.lr / 2,
        batch_size=cfg.batch, steps_per_epoch=cfg.refine_steps, extend=0,
        val_slices=cfg.val_slices, seed=seed,
    )  # fmt: skip
    with Workspace.open(root) as ws:
        # Every pool case is drafted (no ranking to do: the pool is exactly per_round cases).
        prelabel(ws, cases=cfg.per_round, strategy="random")
        efforts, dice, changed, drawn = [], [], 0, 0
        for draft in [p for p in ws.prelabels()]:
            truth = by_id[draft.case_id.removeprefix("pool_")].label
            fix = correct(ws, draft.case_id, truth).record
            efforts.append(fix.effort)
            changed, drawn = changed + fix.changed_voxels, drawn + fix.drawn_voxels
            predicted, _ = read_label(ws.path(draft.path))
            true_labels, _ = read_label(truth)
            dice.append(label_dice(predicted, true_labels, len(organs)))
        outcome = refine_round(ws, refine_config, progress=False)
        round_dir = outcome.model_path
    round_s = round(time.perf_counter() - t0, 1)
    new_eval = evaluate_model(round_dir, data.test)
    current = new_eval if outcome.promoted else sweep.runs[_key(data.name, cell, "transfer")]
    round_record = {
        **{k: v for k, v in current.items() if k in ("per_organ", "mean_dice", "mean_hd95_mm")},
        "promoted": outcome.promoted,
        "new_model": {k: new_eval[k] for k in ("per_organ", "mean_dice", "mean_hd95_mm")},
        "val_dice_new_parent": [outcome.new_val_dice, outcome.parent_val_dice],
        "corrected": split["unlabelled"],
        "prelabel_dice": float(np.nanmean(dice)) if dice else None,
        "correction_effort": float(np.nanmean(efforts)) if efforts else None,
        "correction_effort_pooled": changed / drawn if drawn else None,
        "steps": cfg.refine_epochs * cfg.refine_steps,
        "train_s": round_s,
        "eval_s": new_eval["eval_s"],
    }
    t0 = time.perf_counter()
    rl_config = RLConfig(
        steps=cfg.rl_steps, lr=cfg.rl_lr, baseline="mean", samples_per_image=2, batch_size=4,
        sync_every=max(1, min(10, cfg.rl_steps // 2)), seed=seed,
    )  # fmt: skip
    info, promoted = rl_tune_workspace(root, rl_config, progress=False)
    rl_s = round(time.perf_counter() - t0, 1)
    rl_eval = evaluate_model(root / "models" / info.model_id, data.test)
    rl_current = rl_eval if promoted else round_record
    rl_record = {
        **{k: v for k, v in rl_current.items() if k in ("per_organ", "mean_dice", "mean_hd95_mm")},
        "promoted": promoted,
        "new_model": {k: rl_eval[k] for k in ("per_organ", "mean_dice", "mean_hd95_mm")},
        "val_dice_new_parent": [
            info.metrics.get("val_mean_dice"),
            info.metrics.get("parent_val_mean_dice"),
        ],
        "steps": cfg.rl_steps,
        "train_s": rl_s,
        "eval_s": rl_eval["eval_s"],
    }
    return round_record, rl_record


def _key(setting: str, cell: Path | str, method: str) -> str:
    """``setting/k5/seed0/method`` (``cell`` is the cell folder or ``k5/seed0``)."""
    name = cell if isinstance(cell, str) else f"{Path(cell).parent.name}/{Path(cell).name}"
    return f"{setting}/{name}/{method}"


def zero_shot(sweep: Sweep, data: SettingData) -> dict[str, Any]:
    """The human model on the test set, organs mapped, the animal seen at human scale."""
    from vetseg.labels import HUMAN_TO_ANIMAL
    from vetseg.species import linear_scale

    return {
        **evaluate_model(sweep.human, data.test, organ_map=HUMAN_TO_ANIMAL,
                         body_scale=1.0 / linear_scale(data.species)),
        "train_s": 0.0,
        "steps": 0,
    }  # fmt: skip


def run_sweep(sweep: Sweep, time_limit_min: float | None) -> None:
    """Every run not yet in the results file, cell by cell, saving after each."""
    cfg = sweep.config
    todo = sum(
        1
        for s in cfg.settings
        for key in [f"{s}/zero-shot"]
        + [
            _key(s, f"k{k}/seed{seed}", m)
            for k in cfg.ks
            for seed in cfg.seeds
            for m in METHODS[1:]
        ]  # fmt: skip
        if key not in sweep.runs
    )
    print(f"{todo} runs to do ({len(sweep.runs)} already in {sweep.out})", flush=True)
    found: dict[str, tuple[SettingData, list[str]]] = {}
    for setting in cfg.settings:
        data = setting_data(setting, cfg, sweep.work)
        found[setting] = data, case_ids(data.pool)
        sweep.report.setdefault("data", {})[setting] = {
            "description": data.description,
            "species": data.species,
            "pool": case_ids(data.pool),
            "test": case_ids(data.test),
            "pool_slice_strides": _strides(data.pool),
            "test_slice_strides": _strides(data.test),
        }
        if f"{setting}/zero-shot" not in sweep.runs:
            sweep.record(f"{setting}/zero-shot", zero_shot(sweep, data), todo)
    # Seed by seed: a sweep stopped by --time-limit holds whole seeds of every k and setting.
    for seed in cfg.seeds:
        for data, ids in found.values():
            for k in cfg.ks:
                if _out_of_time(sweep, time_limit_min):
                    return
                run_cell(sweep, data, ids, k, seed, todo)


def _strides(folder: Path) -> Any:
    return json.loads((folder / "dataset.json").read_text()).get("slice_strides")


def _out_of_time(sweep: Sweep, limit_min: float | None) -> bool:
    if limit_min is None or time.perf_counter() - sweep.started < limit_min * 60:
        return False
    print(f"time limit of {limit_min:g} min reached: run the same command again to go on.")
    return True


def run_cell(sweep: Sweep, data: SettingData, ids: list[str], k: int, seed: int, todo: int) -> None:
    """The six trained runs of one (setting, k, seed) cell."""
    cfg = sweep.config
    split = cell_split(ids, k, seed, cfg.per_round)
    cell = sweep.work / data.name / f"k{k}" / f"seed{seed}"
    stage = dataclasses.replace(cfg.stage(), seed=seed)
    for method in TRAINED:
        key = _key(data.name, cell, method)
        if key in sweep.runs:
            continue
        record = train_method(sweep, data, method, cell / method, split, config=stage)
        sweep.record(key, {**record, "split": split}, todo)
    keys = [_key(data.name, cell, m) for m in ("transfer+round", "transfer+round+rl")]
    if all(key in sweep.runs for key in keys):
        return
    round_record, rl_record = correction_round(sweep, data, cell, split, seed)
    sweep.record(keys[0], round_record, todo)
    sweep.record(keys[1], rl_record, todo)


# --------------------------------------------------------------------------- remedies
#: Transfer variants for part 3 (negative transfer): name -> (config changes, transfer options).
REMEDIES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "as shipped": ({}, {}),
    "no frozen epochs": ({"freeze_epochs": 0}, {}),
    "frozen all but the last epoch": ({"freeze_epochs": -1}, {}),
    "transferred parts at lr x 0.1": ({"transferred_lr_scale": 0.1}, {}),
    "native spacing": ({}, {"spacing": "native"}),
    "animal intensity statistics": ({}, {"intensity": "animal"}),
}


def remedy(name: str, base: Any) -> tuple[Any, dict[str, Any]]:
    """The training settings and ``transfer`` options of a remedy variant, from ``base``."""
    changes, options = REMEDIES[name]
    if changes.get("freeze_epochs") == -1:
        changes = {**changes, "freeze_epochs": base.epochs - 1}
    return dataclasses.replace(base, **changes), dict(options)


def run_remedies(
    sweep: Sweep, setting: str, k: int, seed: int, variants: Sequence[str]
) -> dict[str, Any]:
    """Train the transfer variants on one cell's split; choose on validation Dice only."""
    cfg = sweep.config
    if k < 3:
        raise SystemExit("--remedies chooses on validation Dice: it needs k >= 3.")
    data = setting_data(setting, cfg, sweep.work)
    split = cell_split(case_ids(data.pool), k, seed, cfg.per_round)
    base = dataclasses.replace(cfg.stage(), seed=seed)
    rows: dict[str, Any] = {}
    store = sweep.report.setdefault("remedies", {}).setdefault(f"{setting}/k{k}/seed{seed}", {})
    for name in variants:
        if name in store.get("variants", {}):
            rows[name] = store["variants"][name]
            continue
        config, options = remedy(name, base)
        folder = sweep.work / setting / "remedies" / f"k{k}_seed{seed}" / name.replace(" ", "_")
        rows[name] = {
            **train_method(sweep, data, "transfer", folder, split, config=config, **options),
            "changes": {
                **{k: getattr(config, k) for k in REMEDIES[name][0]},
                **options,
            },
        }
        store.setdefault("variants", {})[name] = rows[name]
        sweep.save()
        print(f"remedy {name!r}: val {rows[name]['val_mean_dice']}, test "
              f"{rows[name]['mean_dice']}", flush=True)  # fmt: skip
    chosen = max(rows, key=lambda n: rows[n]["val_mean_dice"] or -1.0)
    store.update(
        chosen_on_validation=chosen,
        note="chosen on validation Dice (one labelled case); test Dice is reported, not used",
        split=split,
    )
    sweep.save()
    return store


# --------------------------------------------------------------------------- summary
def _mean_sd(values: list[float]) -> tuple[float, float] | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarise(runs: dict[str, Any], config: SweepConfig) -> dict[str, Any]:
    """Per setting: mean +- sd over seeds of the mean and per-organ Dice for each method and
    k, the correction effort per k, organs where transfer trails scratch (negative transfer),
    and the issue's acceptance check at k = 5."""
    out: dict[str, Any] = {}
    for setting in config.settings:
        organs: list[str] = []  # the organs some run scored (not those the data do not label)
        table: dict[str, Any] = {}
        for method in METHODS:
            table[method] = {}
            for k in config.ks:
                found = (
                    [runs.get(f"{setting}/zero-shot")]
                    if method == "zero-shot"
                    else [runs.get(_key(setting, f"k{k}/seed{seed}", method))
                          for seed in config.seeds]
                )  # fmt: skip
                found = [f for f in found if f]
                if not found:
                    continue
                for f in found:
                    organs += [o for o, v in f["per_organ"].items() if v is not None
                               and o not in organs]  # fmt: skip
                entry: dict[str, Any] = {
                    "mean_dice": _mean_sd([f["mean_dice"] for f in found]),
                    "seeds": len(found),
                    "per_organ": {
                        o: _mean_sd([f["per_organ"].get(o) for f in found])
                        for o in found[0]["per_organ"]
                        if any(f["per_organ"].get(o) is not None for f in found)
                    },
                }
                if method.startswith("transfer+"):
                    entry["promoted"] = sum(bool(f.get("promoted")) for f in found)
                    entry["new_model_mean_dice"] = _mean_sd(
                        [f["new_model"]["mean_dice"] for f in found]
                    )
                if method == "transfer+round":
                    entry["correction_effort"] = _mean_sd([f["correction_effort"] for f in found])
                    entry["prelabel_dice"] = _mean_sd([f["prelabel_dice"] for f in found])
                table[method][str(k)] = entry
        negative = {}
        for k in config.ks:
            tr, sc = table["transfer"].get(str(k)), table["scratch"].get(str(k))
            if tr and sc:
                negative[str(k)] = {
                    o: round(tr["per_organ"][o][0] - sc["per_organ"][o][0], 3)
                    for o in tr["per_organ"]
                    if tr["per_organ"][o] and sc["per_organ"].get(o)
                    and tr["per_organ"][o][0] < sc["per_organ"][o][0] - 0.05
                }  # fmt: skip
        out[setting] = {
            "organs": organs,
            "methods": table,
            "transfer_below_scratch_by_over_0.05": negative,
            "acceptance_k5": _acceptance(table),
        }
    return out


def _acceptance(table: dict[str, Any]) -> dict[str, Any] | None:
    """Issue 12's bar at k = 5: transfer >= best of scratch, peer, naive + 0.05, and no organ
    more than 0.05 below scratch."""
    if "5" not in table["transfer"]:
        return None
    transfer = table["transfer"]["5"]
    others = {m: table[m]["5"]["mean_dice"][0] for m in ("scratch", "peer", "naive")
              if "5" in table[m] and table[m]["5"]["mean_dice"]}  # fmt: skip
    if not others or not transfer["mean_dice"]:
        return None
    best = max(others, key=others.get)
    margin = transfer["mean_dice"][0] - others[best]
    scratch = table["scratch"].get("5", {}).get("per_organ", {})
    worst = [o for o, v in transfer["per_organ"].items()
             if v and scratch.get(o) and v[0] < scratch[o][0] - 0.05]  # fmt: skip
    return {
        "margin_over_best_baseline": round(margin, 3),
        "best_baseline": best,
        "organs_over_0.05_below_scratch": worst,
        "met": margin >= 0.05 and not worst,
    }


def markdown(summary: dict[str, Any], report: dict[str, Any], quick: bool) -> str:
    """Tables: mean Dice per method and k, per organ at the largest k, correction effort."""
    lines = []
    if quick:
        lines += ["**QUICK RUN: a reduced sweep with a tiny budget, for checking the script; "
                  "its figures are not results.**", ""]  # fmt: skip
    lines += [f"Command: `{report['command']}`", ""]
    for setting, block in summary.items():
        data = report.get("data", {}).get(setting, {})
        ks = [k for k in map(str, report["config"]["ks"])]
        lines += [f"### {setting}: {data.get('description', '')}", ""]
        lines += ["held-out mean Dice over organs (mean ± sd over seeds; zero-shot needs no "
                  "labels: one figure)", ""]  # fmt: skip
        lines += ["| method | " + " | ".join(f"k = {k}" for k in ks) + " |",
                  "|---|" + "---|" * len(ks)]  # fmt: skip
        for method in METHODS:
            cells = []
            for k in ks:
                entry = block["methods"][method].get(k)
                value = entry["mean_dice"] if entry else None
                if not value:
                    cells.append("-")
                elif method == "zero-shot" or entry["seeds"] == 1:
                    cells.append(f"{value[0]:.3f}")
                else:
                    cells.append(f"{value[0]:.3f} ± {value[1]:.3f}")
            lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
        lines.append("")
        for method in ("transfer+round", "transfer+round+rl"):
            parts = []
            for k in ks:
                entry = block["methods"][method].get(k)
                if entry and entry["new_model_mean_dice"]:
                    parts.append(f"k={k}: promoted {entry['promoted']}/{entry['seeds']}, new "
                                 f"model {entry['new_model_mean_dice'][0]:.3f}")  # fmt: skip
            if parts:
                lines.append(f"- {LABELS[method]}: " + "; ".join(parts))
        effort = [
            f"k={k}: {e['correction_effort'][0]:.3f} (pre-label Dice {e['prelabel_dice'][0]:.3f})"
            for k in ks
            if (e := block["methods"]["transfer+round"].get(k)) and e["correction_effort"]
        ]
        if effort:
            lines.append("- correction effort of the transfer model's pre-labels (voxels "
                         "changed / voxels drawn from nothing): " + "; ".join(effort))  # fmt: skip
        neg = {k: v for k, v in block["transfer_below_scratch_by_over_0.05"].items() if v}
        if neg:
            lines.append("- transfer more than 0.05 below scratch: " + "; ".join(
                f"k={k}: " + ", ".join(f"{o} {d:+.3f}" for o, d in v.items())
                for k, v in neg.items()))  # fmt: skip
        acc = block["acceptance_k5"]
        if acc:
            lines.append(
                f"- k = 5: transfer {acc['margin_over_best_baseline']:+.3f} over the best of "
                f"scratch, peer and naive ({acc['best_baseline']}); organs > 0.05 below scratch:"
                f" {', '.join(acc['organs_over_0.05_below_scratch']) or 'none'}; issue bar "
                + ("met" if acc["met"] else "NOT met")
            )
        organs = block["organs"]
        for k in dict.fromkeys(x for x in ("5", ks[-1]) if x in ks):
            lines += ["", f"per organ, k = {k} (mean over seeds)", ""]
            lines += ["| method | " + " | ".join(organs) + " |", "|---|" + "---|" * len(organs)]
            for method in METHODS:
                entry = block["methods"][method].get(k)
                if not entry:
                    continue
                cells = [f"{v[0]:.3f}" if (v := entry["per_organ"].get(o)) else "-" for o in organs]
                lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += remedies_markdown(report.get("remedies", {}))
    return "\n".join(lines) + "\n"


def remedies_markdown(remedies: dict[str, Any]) -> list[str]:
    """One table per remedies cell: validation and test mean Dice and each organ's test Dice."""
    lines: list[str] = []
    for cell, store in remedies.items():
        variants = store.get("variants", {})
        if not variants:
            continue
        organs = list(next(iter(variants.values()))["per_organ"])
        lines += [f"### remedies for negative transfer, {cell} (chosen on validation: "
                  f"{store.get('chosen_on_validation', '-')})", "",
                  "| variant | val mean Dice | test mean Dice | " + " | ".join(organs) + " |",
                  "|---|---|---|" + "---|" * len(organs)]  # fmt: skip
        for name, row in variants.items():
            val, test = row.get("val_mean_dice"), row.get("mean_dice")
            cells = [f"{v:.3f}" if (v := row["per_organ"].get(o)) is not None else "-"
                     for o in organs]  # fmt: skip
            lines.append(
                f"| {name} | {'-' if val is None else f'{val:.3f}'} | "
                f"{'-' if test is None else f'{test:.3f}'} | " + " | ".join(cells) + " |"
            )
        lines.append("")
    return lines


def plot(summary: dict[str, Any], config: SweepConfig, out: Path, quick: bool) -> Path:
    """Mean Dice against k per method, then per organ, for each setting."""
    from pilplot import Panel, draw_panels

    ks = [str(k) for k in config.ks]
    panels = []
    for setting, block in summary.items():

        def series(pick: Callable[[dict[str, Any]], Any], block: dict = block) -> dict:
            return {
                LABELS[m]: [pick(block["methods"][m][k]) if k in block["methods"][m] else None
                            for k in ks]
                for m in METHODS
            }  # fmt: skip

        panels.append(Panel(f"{setting}: mean over organs", ks, series(lambda e: e["mean_dice"])))
        for organ in block["organs"]:
            panels.append(
                Panel(f"{setting}: {organ}", ks,
                      series(lambda e, o=organ: e["per_organ"].get(o)))
            )  # fmt: skip
    title = "Held-out Dice against labelled animal cases (SYNTHETIC data)"
    if quick:
        title = "QUICK RUN (tiny budget, not results): " + title
    return draw_panels(panels, out, title=title, columns=4)


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    full = SweepConfig()
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog=(
            f"Full sweep: k {full.ks}, seeds {full.seeds}, {full.held_out} held-out cases per "
            f"setting (about {full.test_slices} slices each), {full.tile} px tiles, "
            f"{full.train_steps} steps of {full.batch} slices per trained method, a round of "
            f"{full.refine_epochs * full.refine_steps} steps, {full.rl_steps} RL steps: 24 "
            "cells, 140 runs. Measured: 85 min of wall time on 2 CPU cores (2026-12-04, about 35 "
            "min of it beside other jobs). --time-limit 85 starts no cell after 85 min; the "
            "same command then resumes it."
        ),
    )
    parser.add_argument("--quick", action="store_true", help="reduced sweep (a few minutes)")
    parser.add_argument("--settings", nargs="+", choices=("rabbit", "mouse"), default=None)
    parser.add_argument("--ks", nargs="+", type=int, default=None, help="instead of the config's")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="likewise")
    parser.add_argument("--human-model", type=Path, default=None,
                        help="human model (default: the one vetseg ships)")  # fmt: skip
    parser.add_argument("--work", type=Path, default=None, help="data and models (cached)")
    parser.add_argument("--out", type=Path, default=None, help="results JSON")
    parser.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help="minutes: start no new cell after this (resume by re-running)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--remedies",
        action="store_true",
        help="part 3: transfer variants on one cell, chosen on validation",
    )
    parser.add_argument("--setting", choices=("rabbit", "mouse"), default="mouse")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", choices=tuple(REMEDIES), default=None)
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rebuild summary, table and plot from --out; run nothing",
    )
    parser.add_argument(
        "--add-remedies",
        type=Path,
        default=None,
        help="with --report-only: copy the remedies of another results JSON "
        "(a --remedies run given its own --out) into --out",
    )
    return parser.parse_args(argv)  # fmt: skip


def report_only(out: Path, quick: bool, remedies: Path | None) -> None:
    """Summary, Markdown and plot from a results JSON as it is (its sweep command is kept)."""
    from vetseg.fileutil import atomic_write_text

    report = json.loads(out.read_text())
    if remedies is not None:
        extra = json.loads(remedies.read_text())
        for cell, store in extra.get("remedies", {}).items():
            report.setdefault("remedies", {})[cell] = {**store, "command": extra.get("command")}
    config = SweepConfig(**{k: tuple(v) if isinstance(v, list) else v
                            for k, v in report["config"].items()})  # fmt: skip
    report["summary"] = summarise(report["runs"], config)
    atomic_write_text(out, json.dumps(_json_safe(report), indent=1, allow_nan=False) + "\n")
    md = out.with_suffix(".md")
    atomic_write_text(md, markdown(report["summary"], _json_safe(report), quick))
    png = plot(report["summary"], config, out.with_suffix(".png"), quick)
    print(f"wrote {out}, {md}, {png}")


def main(argv: list[str] | None = None) -> None:
    import torch

    from vetseg.demo import shipped_human_model
    from vetseg.fileutil import atomic_write_text
    from vetseg.models.files import read_model_info

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    config = SweepConfig.quick() if args.quick else SweepConfig()
    if args.settings:
        config = dataclasses.replace(config, settings=tuple(args.settings))
    if args.ks:
        config = dataclasses.replace(config, ks=tuple(args.ks))
    if args.seeds:
        config = dataclasses.replace(config, seeds=tuple(args.seeds))
    suffix = "_quick" if args.quick else ""
    out = args.out or RESULTS / f"label_efficiency{suffix}.json"
    if args.report_only:
        report_only(out, args.quick, args.add_remedies)
        return
    work = args.work or ROOT / "runs" / f"label_efficiency{suffix}"
    human = args.human_model or shipped_human_model()
    if human is None:
        raise SystemExit("no human model: give --human-model")
    sweep = Sweep(out, work, config, Path(human), args.quick)
    config = sweep.config
    human_info = read_model_info(Path(human))
    command = " ".join(
        shlex.quote(a)
        for a in [
            "python",
            "benchmarks/label_efficiency.py",
            *(sys.argv[1:] if argv is None else argv),
        ]
    )
    sweep.report.update(
        what="label efficiency: held-out Dice against k labelled animal cases, per method "
        "(issue 12); SYNTHETIC data (phantoms, atlas synthesis), not real animals",
        quick=args.quick,
        command=command,
        config=dataclasses.asdict(config),
        human_model={"path": str(human), "model_id": human_info.model_id,
                     "spacing_mm": human_info.preprocess.spacing,
                     "organs": list(human_info.organs)},
        machine={"python": platform.python_version(), "torch": torch.__version__,
                 "threads": args.threads, "cpu": platform.processor() or platform.machine()},
        methods=LABELS,
    )  # fmt: skip
    sweep.report.setdefault("calibration", []).append(calibrate())
    t0 = time.perf_counter()
    if args.remedies:
        variants = args.variants or list(REMEDIES)
        result = run_remedies(sweep, args.setting, args.k, args.seed, variants)
        print(f"chosen on validation: {result['chosen_on_validation']}")
        return
    run_sweep(sweep, args.time_limit)
    # Again at the end: on a shared machine the speed changes during a run.
    sweep.report["calibration"].append(calibrate())
    sweep.report.setdefault("timings", {})[f"session_{len(sweep.report['timings'])}_s"] = round(
        time.perf_counter() - t0, 1
    )
    summary = summarise(sweep.runs, config)
    sweep.report["summary"] = summary
    sweep.save()
    md = out.with_suffix(".md")
    atomic_write_text(md, markdown(summary, _json_safe(sweep.report), args.quick))
    png = plot(summary, config, out.with_suffix(".png"), args.quick)
    print(md.read_text())
    print(f"wrote {out}, {md}, {png}")


if __name__ == "__main__":
    main()
