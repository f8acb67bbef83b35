"""kill -9 during prelabel, correct and refine, then re-run: no half file, a consistent database,
training resumed. Each test kills a real child process (``python -m vetseg.cli ...``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.workflow.conftest import make_workspace
from tests.workflow.helpers import db_rows, kill_when, temp_leftovers
from vetseg.cli import app
from vetseg.io.image import read_label
from vetseg.workflow.workspace import Workspace

pytestmark = pytest.mark.slow


def rerun(*args: str | Path) -> str:
    """The re-run after the kill, in this process (the CLI, without a second start-up)."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def _check_consistent(root: Path) -> None:
    """Every recorded file exists and reads; states agree with the records; no temp file."""
    with Workspace.open(root) as ws:
        for record in ws.prelabels():
            read_label(ws.path(record.path))
        for record in ws.corrections():
            read_label(ws.path(record.path))
        for case in ws.cases():
            if case.state == "prelabelled":
                assert ws.latest_prelabel(case.case_id) is not None
            if case.state == "corrected":
                assert ws.corrections(case.case_id)
    assert temp_leftovers(root) == []


def test_prelabel_killed_mid_run_then_rerun_finishes_the_same_run(tmp_path: Path) -> None:
    setup = make_workspace(tmp_path, labelled=0, unlabelled=10)
    review = setup.root / "review"

    def started() -> bool:  # at least one case done, likely the next one half written
        return bool(db_rows(setup.root, "SELECT 1 FROM prelabels")) and (
            any(review.rglob(".*.tmp-*")) or len(db_rows(setup.root, "SELECT 1 FROM prelabels")) > 1
        )

    killed, output = kill_when(["prelabel", setup.root, "--strategy", "random"], started)
    assert killed, f"the child finished before it could be killed:\n{output}"
    (status, selected), *_ = db_rows(setup.root, "SELECT status, selected FROM prelabel_runs")
    done_before = len(db_rows(setup.root, "SELECT 1 FROM prelabels"))
    assert status == "running" and 1 <= done_before < 10

    result = rerun("prelabel", setup.root, "--strategy", "random")
    assert "finished interrupted pre-label run 1" in result
    runs = db_rows(setup.root, "SELECT run, status, selected FROM prelabel_runs")
    assert runs == [(1, "done", selected)]  # no second run: the interrupted one was finished
    prelabelled = db_rows(setup.root, "SELECT case_id FROM prelabels ORDER BY queue_rank")
    assert [c for (c,) in prelabelled] == json.loads(selected)
    _check_consistent(setup.root)


@pytest.mark.parametrize("moment", ["starting to write", "after the file, before the row"])
def test_correct_killed_then_rerun_records_one_version(tmp_path: Path, moment: str) -> None:
    setup = make_workspace(tmp_path, labelled=0, unlabelled=1)
    folder = setup.root / "review" / "new0"

    def ready() -> bool:
        if moment == "starting to write":
            return folder.is_dir()  # made just before the temporary file
        return (folder / "corrected_v001.nii.gz").exists()

    truth = setup.truth["new0"]
    killed, output = kill_when(["correct", setup.root, "new0", truth], ready)
    if not killed:  # the write and the commit were too quick to catch in between
        pytest.skip(f"child finished before the kill ({moment})")
    rerun("correct", setup.root, "new0", truth)
    versions = db_rows(setup.root, "SELECT version, path FROM corrections")
    assert [v for v, _ in versions] == [1]
    stored, _ = read_label(setup.root / versions[0][1])
    np.testing.assert_array_equal(stored, read_label(truth)[0])
    assert db_rows(setup.root, "SELECT state FROM cases") == [("corrected",)]
    _check_consistent(setup.root)


def test_refine_killed_after_an_epoch_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    setup = make_workspace(tmp_path, labelled=5, unlabelled=0)
    out = setup.root / "models" / "round-001"
    args = [
        "refine", setup.root, "--epochs", "3", "--freeze-epochs", "1", "--steps-per-epoch", "2",
        "--batch-size", "4", "--extend", "0", "--no-augment", "--lr", "1e-3",
    ]  # fmt: skip
    checkpoint = out / "train" / "checkpoint.safetensors"
    killed, output = kill_when(args, checkpoint.exists)
    assert killed, f"the child finished before it could be killed:\n{output}"
    assert db_rows(setup.root, "SELECT round, status FROM rounds") == [(1, "running")]
    assert db_rows(setup.root, "SELECT COUNT(*) FROM models") == [(1,)]  # only the parent
    epochs_before = len((out / "train" / "metrics.jsonl").read_text().splitlines())
    assert 1 <= epochs_before < 3

    assert "finished interrupted round 1" in rerun(*args)
    lines = (out / "train" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]  # each epoch once
    (status,) = db_rows(setup.root, "SELECT status FROM rounds")[0]
    assert status in ("promoted", "kept")
    assert db_rows(setup.root, "SELECT COUNT(*) FROM models") == [(2,)]
    assert (out / "model.json").is_file()
    _check_consistent(setup.root)
    assert [p for p in out.rglob(".*.tmp-*")] == []
