"""benchmarks/label_efficiency.py: splits, summary, acceptance check, table and plot (no
training: the sweep itself is a benchmark, run by hand)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import label_efficiency as le  # noqa: E402


def test_cell_split_is_seeded_nested_and_leaves_a_round_pool() -> None:
    ids = [f"case_{i:02d}" for i in range(13)]
    one = le.cell_split(ids, 1, seed=0, per_round=3)
    assert len(one["train"]) == 1 and one["val"] == []  # k = 1: no validation case
    five = le.cell_split(ids, 5, seed=0, per_round=3)
    assert len(five["train"]) == 4 and len(five["val"]) == 1
    assert not set(five["unlabelled"]) & set(five["train"] + five["val"])
    assert len(five["unlabelled"]) == 3
    assert le.cell_split(ids, 5, seed=0, per_round=3) == five
    assert le.cell_split(ids, 5, seed=1, per_round=3) != five
    with pytest.raises(ValueError, match="pool of 13"):
        le.cell_split(ids, 11, seed=0, per_round=3)


def _run(mean: float, organs: dict[str, float], **extra: object) -> dict:
    return {"mean_dice": mean, "per_organ": organs, **extra}


def _runs() -> dict:
    runs = {"mouse/zero-shot": _run(0.3, {"liver": 0.5, "lungs": 0.1, "aorta": None})}
    for seed, shift in ((0, 0.0), (1, 0.02)):
        cell = f"mouse/k5/seed{seed}"
        runs[f"{cell}/scratch"] = _run(0.60 + shift, {"liver": 0.6, "lungs": 0.9})
        runs[f"{cell}/peer"] = _run(0.62 + shift, {"liver": 0.7, "lungs": 0.8})
        runs[f"{cell}/naive"] = _run(0.55 + shift, {"liver": 0.6, "lungs": 0.5})
        runs[f"{cell}/transfer"] = _run(0.70 + shift, {"liver": 0.9, "lungs": 0.6})
        new = {"mean_dice": 0.72, "per_organ": {}, "mean_hd95_mm": None}
        runs[f"{cell}/transfer+round"] = _run(
            0.72, {"liver": 0.9, "lungs": 0.7}, promoted=seed == 0, new_model=new,
            correction_effort=0.2, prelabel_dice=0.8,
        )  # fmt: skip
        runs[f"{cell}/transfer+round+rl"] = _run(
            0.72, {"liver": 0.9, "lungs": 0.7}, promoted=False, new_model=new
        )
    return runs


def test_summary_flags_negative_transfer_and_the_issue_bar() -> None:
    config = le.SweepConfig(settings=("mouse",), ks=(5,), seeds=(0, 1))
    summary = le.summarise(_runs(), config)["mouse"]
    assert summary["organs"] == ["liver", "lungs"]  # aorta: labelled by no dataset here
    transfer = summary["methods"]["transfer"]["5"]
    assert transfer["mean_dice"][0] == pytest.approx(0.71)
    assert transfer["mean_dice"][1] == pytest.approx(0.01414, abs=1e-4)
    assert summary["methods"]["transfer+round"]["5"]["promoted"] == 1
    assert summary["transfer_below_scratch_by_over_0.05"]["5"] == {"lungs": -0.3}
    acceptance = summary["acceptance_k5"]
    assert acceptance["best_baseline"] == "peer"
    assert acceptance["margin_over_best_baseline"] == pytest.approx(0.08)
    assert acceptance["organs_over_0.05_below_scratch"] == ["lungs"]
    assert acceptance["met"] is False  # the mean clears the bar, the lungs do not


def test_table_and_plot_are_written(tmp_path: Path) -> None:
    config = le.SweepConfig(settings=("mouse",), ks=(5,), seeds=(0, 1))
    summary = le.summarise(_runs(), config)
    report = {"command": "python benchmarks/label_efficiency.py", "config": {"ks": [5]}}
    text = le.markdown(summary, report, quick=True)
    assert text.startswith("**QUICK RUN")
    assert "| vetseg transfer | 0.710 ± 0.014 |" in text
    assert "lungs -0.300" in text and "issue bar NOT met" in text
    png = le.plot(summary, config, tmp_path / "plot.png", quick=True)
    from PIL import Image

    assert Image.open(png).size[0] > 1000


def test_remedy_variants_are_valid_settings() -> None:
    base = le.SweepConfig().stage()
    for name in le.REMEDIES:
        config, options = le.remedy(name, base)
        assert set(options) <= {"spacing", "intensity"}
        assert 0 <= config.freeze_epochs <= config.epochs
    assert le.remedy("frozen all but the last epoch", base)[0].freeze_epochs == base.epochs - 1
    assert le.remedy("transferred parts at lr x 0.1", base)[0].transferred_lr_scale == 0.1


def test_remedies_table_lists_each_variant_with_validation_and_test() -> None:
    remedies = {
        "mouse/k5/seed0": {
            "chosen_on_validation": "no frozen epochs",
            "variants": {
                "as shipped": {"val_mean_dice": 0.2, "mean_dice": 0.21,
                               "per_organ": {"liver": 0.8, "lungs": 0.07}},
                "no frozen epochs": {"val_mean_dice": 0.3, "mean_dice": 0.25,
                                     "per_organ": {"liver": 0.81, "lungs": None}},
            },
        }
    }  # fmt: skip
    lines = le.remedies_markdown(remedies)
    assert "chosen on validation: no frozen epochs" in lines[0]
    assert "| as shipped | 0.200 | 0.210 | 0.800 | 0.070 |" in lines
    assert "| no frozen epochs | 0.300 | 0.250 | 0.810 | - |" in lines
    assert le.remedies_markdown({}) == []


def test_report_only_rebuilds_the_outputs_and_imports_remedies(tmp_path: Path) -> None:
    import dataclasses
    import json

    config = le.SweepConfig(settings=("mouse",), ks=(5,), seeds=(0, 1))
    out = tmp_path / "sweep.json"
    out.write_text(json.dumps({
        "command": "python benchmarks/label_efficiency.py", "runs": _runs(),
        "config": json.loads(json.dumps(dataclasses.asdict(config))),
    }))  # fmt: skip
    extra = tmp_path / "remedies.json"
    extra.write_text(json.dumps({"command": "python benchmarks/label_efficiency.py --remedies",
        "remedies": {"mouse/k5/seed0": {"chosen_on_validation": "as shipped", "variants": {
            "as shipped": {"val_mean_dice": 0.2, "mean_dice": 0.21,
                           "per_organ": {"liver": 0.8}}}}}}))  # fmt: skip
    le.report_only(out, quick=False, remedies=extra)
    report = json.loads(out.read_text())
    assert report["summary"] == json.loads(json.dumps(le.summarise(_runs(), config)))
    assert report["remedies"]["mouse/k5/seed0"]["command"].endswith("--remedies")
    text = out.with_suffix(".md").read_text()
    assert text.startswith("Command: `python benchmarks/label_efficiency.py`")
    assert "| as shipped | 0.200 | 0.210 | 0.800 |" in text
    assert out.with_suffix(".png").stat().st_size > 1000
