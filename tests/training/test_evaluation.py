"""vetseg evaluate: statuses instead of NaN, HD95 beside Dice, segment's post-processing, JSON."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.workflow.helpers import tiny_model
from vetseg.cli import app
from vetseg.inference import engines as engines_module
from vetseg.inference import segmenter as segmenter_module
from vetseg.inference.postprocess import PostprocessConfig, postprocess_labels
from vetseg.io.image import ImageMeta, read_image, write_image
from vetseg.training.evaluation import evaluate, score_organ
from vetseg.training.metrics import hd95_mm

META = ImageMeta(spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0))
SHAPE = (6, 24, 24)


def _strict_json(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def _box(shape: tuple[int, ...], *slices: slice) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[slices] = True
    return mask


# --------------------------------------------------------------------------- one organ
def test_each_case_of_an_organ_gets_its_status() -> None:
    empty = np.zeros((4, 8, 8), bool)
    reference = _box(empty.shape, slice(1, 3), slice(2, 6), slice(2, 6))  # 32 voxels
    predicted = _box(empty.shape, slice(1, 3), slice(2, 6), slice(4, 8))  # 32, 16 shared
    spacing = (2.0, 1.0, 1.0)
    ok = score_organ(predicted, reference, spacing)
    assert (ok.status, ok.dice) == ("ok", pytest.approx(2 * 16 / 64))
    assert ok.hd95_mm == pytest.approx(2.0)  # the boxes lie 2 voxels apart along x
    assert score_organ(empty, reference, spacing).to_json() == {
        "status": "missed", "dice": 0.0, "hd95_mm": None,
    }  # fmt: skip
    assert score_organ(predicted, empty, spacing).to_json() == {
        "status": "false_positive", "dice": 0.0, "hd95_mm": None,
    }  # fmt: skip
    assert score_organ(empty, empty, spacing).to_json() == {
        "status": "absent_in_both", "dice": None, "hd95_mm": None,
    }  # fmt: skip
    not_annotated = score_organ(predicted, empty, spacing, annotated=False)
    assert (not_annotated.status, not_annotated.dice) == ("not_annotated", None)


def test_hd95_is_in_millimetres_along_each_axis() -> None:
    a = _box((10, 20, 20), slice(2, 8), slice(5, 15), slice(5, 10))
    b = _box((10, 20, 20), slice(2, 8), slice(5, 15), slice(7, 12))  # 2 voxels along x
    assert hd95_mm(a, b, (2.0, 1.0, 1.5)) == pytest.approx(3.0)  # 2 x 1.5 mm
    c = _box((10, 20, 20), slice(4, 10), slice(5, 15), slice(5, 10))  # 2 slices along z
    assert hd95_mm(a, c, (2.0, 1.0, 1.5)) == pytest.approx(4.0)  # 2 x 2 mm
    assert hd95_mm(a, a, (1.0, 1.0, 1.0)) == 0.0
    assert hd95_mm(a, np.zeros_like(a), (1.0, 1.0, 1.0)) is None


# --------------------------------------------------------------------------- a dataset
def _dataset(root: Path) -> dict[str, np.ndarray]:
    """Three cases of a dataset that labels liver (1) and spleen (2) but not the heart."""
    liver = _box(SHAPE, slice(1, 5), slice(4, 14), slice(4, 12))
    spleen = _box(SHAPE, slice(2, 5), slice(15, 20), slice(15, 20))
    labels = {
        "a": liver * 1 + spleen * 2,  # both organs
        "b": liver * 1,  # no spleen
        "c": np.zeros(SHAPE, int),  # nothing drawn
    }
    root.mkdir(parents=True)
    for name, label in labels.items():
        image = np.where(label > 0, 150, 0).astype(np.int16)
        write_image(image, META, root / f"{name}.nii.gz")
        write_image(label.astype(np.uint8), META, root / f"{name}_seg.nii.gz")
    (root / "labels.json").write_text(json.dumps({"liver": 1, "spleen": 2}))
    return labels


@pytest.fixture()
def liver_everywhere(tmp_path: Path) -> Path:
    """A model for liver, spleen and heart that calls every voxel liver (head bias)."""
    tiny_model(tmp_path / "model", organs=("liver", "spleen", "heart"), head_bias=(6, -6, -6))
    return tmp_path / "model"


def test_missed_absent_and_not_annotated_organs_are_told_apart(
    tmp_path: Path, liver_everywhere: Path
) -> None:
    labels = _dataset(tmp_path / "data")
    result = evaluate(liver_everywhere, tmp_path / "data")
    everywhere = np.ones(SHAPE, bool)
    per_case = result["per_case"]
    liver = {c: per_case[c]["liver"] for c in "abc"}
    assert [liver[c]["status"] for c in "abc"] == ["ok", "ok", "false_positive"]
    for case in "ab":
        assert liver[case]["dice"] == pytest.approx(_dice(everywhere, labels[case] == 1))
        assert liver[case]["hd95_mm"] > 0
    assert liver["c"]["dice"] == 0.0 and liver["c"]["hd95_mm"] is None
    assert [per_case[c]["spleen"]["status"] for c in "abc"] == [
        "missed", "absent_in_both", "absent_in_both",
    ]  # fmt: skip
    assert {per_case[c]["heart"]["status"] for c in "abc"} == {"not_annotated"}
    # Means over counted cases only; nothing where nothing can be said.
    liver_mean = np.mean([liver["a"]["dice"], liver["b"]["dice"], 0.0])
    assert result["per_organ"] == {
        "liver": pytest.approx(liver_mean), "spleen": 0.0, "heart": None,
    }  # fmt: skip
    assert result["mean_dice"] == pytest.approx(np.mean([liver_mean, 0.0]))
    hd95 = np.mean([liver["a"]["hd95_mm"], liver["b"]["hd95_mm"]])
    assert result["per_organ_hd95_mm"]["liver"] == pytest.approx(hd95)
    assert result["summary"]["spleen"]["missed"] == 1
    assert result["summary"]["spleen"]["absent_in_both"] == 2
    assert result["summary"]["heart"]["not_annotated"] == 3
    assert result["postprocess"] is True


def test_an_organ_the_dataset_does_not_label_is_no_miss_even_when_drawn(tmp_path: Path) -> None:
    _dataset(tmp_path / "data")
    tiny_model(tmp_path / "heart", organs=("liver", "spleen", "heart"), head_bias=(-6, -6, 6))
    result = evaluate(tmp_path / "heart", tmp_path / "data")  # heart everywhere, nothing else
    assert {result["per_case"][c]["heart"]["status"] for c in "abc"} == {"not_annotated"}
    assert result["per_organ"]["heart"] is None and result["summary"]["heart"]["cases"] == 0
    assert [result["per_case"][c]["liver"]["status"] for c in "abc"] == [
        "missed", "missed", "absent_in_both",
    ]  # fmt: skip
    assert result["mean_dice"] == 0.0  # liver and spleen missed; the heart is not held against it


def test_evaluate_json_is_strict_json_and_the_table_names_statuses(
    tmp_path: Path, liver_everywhere: Path
) -> None:
    _dataset(tmp_path / "data")
    out = tmp_path / "eval.json"
    run = CliRunner().invoke(
        app, ["evaluate", str(liver_everywhere), str(tmp_path / "data"), "--json", str(out)]
    )
    assert run.exit_code == 0, run.output
    result = _strict_json(out.read_text())
    assert result["per_organ"]["heart"] is None
    assert result["per_case"]["a"]["heart"] == {
        "status": "not_annotated", "dice": None, "hd95_mm": None,
    }  # fmt: skip
    assert "not annotated" in run.output and "HD95" in run.output
    # Paths relative to the JSON's folder, not this machine's absolute ones.
    assert result["data"] == "data"
    assert result["model"] == Path(os.path.relpath(liver_everywhere, tmp_path)).as_posix()


# --------------------------------------------------------------------------- post-processing
class _BrightIsLiver:
    """Stands in for the network: liver wherever the normalised slice is bright."""

    name = "bright-is-liver"

    def __init__(self, model: Any = None) -> None:
        del model

    def __call__(self, batch: np.ndarray, release: bool = False) -> np.ndarray:
        x = batch[:, 0]
        logits = np.full((x.shape[0], 3, *x.shape[1:]), -20.0, dtype=np.float32)
        logits[:, 0] = 20.0 * (x - 1.0)
        return logits


def test_evaluate_scores_what_segment_writes_and_raw_on_request(
    tmp_path: Path, liver_everywhere: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A liver and, far from it, a bright speck the model also calls liver: segment's default
    # rules keep the liver's largest part only, so the speck is a false positive of the raw map.
    root = tmp_path / "data"
    root.mkdir()
    liver = _box(SHAPE, slice(0, 6), slice(3, 15), slice(3, 15))
    image = np.where(liver, 300, 0).astype(np.int16)
    image[2:5, 18:22, 18:22] = 300
    write_image(image, META, root / "a.nii.gz")
    write_image(liver.astype(np.uint8), META, root / "a_seg.nii.gz")
    (root / "labels.json").write_text(json.dumps({"liver": 1}))
    monkeypatch.setattr(engines_module, "TorchEngine", _BrightIsLiver)

    scan = read_image(root / "a.nii.gz")
    raw_labels = segmenter_module.Segmenter.load(liver_everywhere).predict(*scan).labels
    cleaned = postprocess_labels(
        raw_labels.copy(), ("liver", "spleen", "heart"), META.spacing, PostprocessConfig()
    )
    raw_dice, clean_dice = _dice(raw_labels == 1, liver), _dice(cleaned == 1, liver)
    assert not math.isclose(raw_dice, clean_dice)  # the rules matter here
    segmented = evaluate(liver_everywhere, root)["per_case"]["a"]["liver"]["dice"]
    raw = evaluate(liver_everywhere, root, raw=True)["per_case"]["a"]["liver"]["dice"]
    assert segmented == pytest.approx(clean_dice) and raw == pytest.approx(raw_dice)
