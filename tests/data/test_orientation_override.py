"""A dataset-level ``--orientation`` (train-human, transfer, evaluate): every case is turned."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.workflow.helpers import phantom, tiny_model
from vetseg.cli import app
from vetseg.data.datasets import load_case, open_dataset
from vetseg.io.image import ImageMeta, write_image

#: The scanner's truth: the body's long axis stored along array x.
TRUE = ImageMeta(
    spacing=(2.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=(0, 0, 1, 0, 1, 0, -1, 0, 0)
)
LOST = ImageMeta(spacing=TRUE.spacing, origin=(0.0, 0.0, 0.0))  # a header that lost it


def write_pairs(folder: Path, meta: ImageMeta, cases: int = 2) -> Path:
    folder.mkdir(parents=True)
    for k in range(cases):
        image, labels = phantom(k, shape=(30, 24, 24))
        image = np.ascontiguousarray(np.transpose(image, (2, 1, 0))[:, :, ::-1])
        labels = np.ascontiguousarray(np.transpose(labels, (2, 1, 0))[:, :, ::-1])
        write_image(image, meta, folder / f"c{k}.nii.gz")
        write_image(labels, meta, folder / f"c{k}_seg.nii.gz")
    (folder / "labels.json").write_text(json.dumps({"1": "liver", "2": "spleen"}))
    return folder


def test_dataset_orientation_turns_every_case_like_the_true_header(tmp_path: Path) -> None:
    organs = ("liver", "spleen")
    true = open_dataset(write_pairs(tmp_path / "true", TRUE), organs)
    lost_root = write_pairs(tmp_path / "lost", LOST)
    plain = open_dataset(lost_root, organs)
    posed = open_dataset(lost_root, organs, orientation="ipl")
    assert posed.orientation == "IPL" and plain.orientation is None
    for case_id in true.case_ids:
        want = load_case(true, true.case(case_id))
        got = load_case(posed, posed.case(case_id))
        np.testing.assert_array_equal(got.image, want.image)  # the slices the model sees
        np.testing.assert_array_equal(got.labels, want.labels)
        assert got.canonical_meta.spacing == want.canonical_meta.spacing
        assert load_case(plain, plain.case(case_id)).image.shape != want.image.shape


def test_cli_evaluate_takes_a_dataset_orientation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vetseg.data.datasets as datasets

    tiny_model(tmp_path / "model")
    data = write_pairs(tmp_path / "lost", LOST)
    opened: list[str | None] = []
    real_open = datasets.open_dataset

    def recording_open(*args: Any, **kwargs: Any) -> Any:
        dataset = real_open(*args, **kwargs)
        opened.append(dataset.orientation)
        return dataset

    monkeypatch.setattr(datasets, "open_dataset", recording_open)
    runner = CliRunner()
    args = ["evaluate", str(tmp_path / "model"), str(data), "--orientation", "ipl"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert opened == ["IPL"]  # every case of the dataset is loaded turned (test above)
    args = ["evaluate", str(tmp_path / "model"), str(data), "--orientation", "LPX"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "not an orientation code" in result.stderr
    for command in (
        ["train-human", str(data), "--out", str(tmp_path / "h")],
        ["transfer", str(tmp_path / "model"), str(data), "--out", str(tmp_path / "t")],
    ):
        result = runner.invoke(app, [*command, "--orientation", "QQQ"])
        assert result.exit_code == 2 and "not an orientation code" in result.stderr
        assert not Path(command[-1]).exists()  # refused before any work
