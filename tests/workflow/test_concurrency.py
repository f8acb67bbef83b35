"""Two commands on one workspace, and a full disk: one waits or is refused, nothing is lost."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import vetseg.fileutil
import vetseg.workflow.workspace as workspace_module
from tests.test_malformed_corpus import snapshot
from tests.workflow.conftest import Setup
from tests.workflow.helpers import REPO, child_env
from vetseg.cli import app
from vetseg.workflow.check import temporary_leftovers
from vetseg.workflow.workspace import Workspace


def _cli(*args: str | Path) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


def _check_passes(root: Path) -> None:
    result = _cli("check", root)
    assert result.exit_code == 0, result.stderr


def _hold_lock(root: Path, seconds: float, started: threading.Event) -> None:
    with Workspace.open(root) as ws, ws.changing():
        started.set()
        time.sleep(seconds)


def test_a_command_waits_for_a_short_one(setup: Setup) -> None:
    started = threading.Event()
    holder = threading.Thread(target=_hold_lock, args=(setup.root, 1.0, started))
    holder.start()
    started.wait(10)
    began = time.monotonic()
    result = _cli("correct", setup.root, "new0", setup.truth["new0"])
    waited = time.monotonic() - began
    holder.join()
    assert result.exit_code == 0, result.stderr
    assert waited >= 0.8  # it waited for the lock rather than failing or running alongside
    _check_passes(setup.root)


def test_a_command_behind_a_long_one_is_refused_clearly(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workspace_module, "LOCK_TIMEOUT_SECONDS", 0.3)
    started = threading.Event()
    holder = threading.Thread(target=_hold_lock, args=(setup.root, 2.0, started))
    holder.start()
    started.wait(10)
    before = snapshot(setup.root)
    result = _cli("prelabel", setup.root)
    holder.join()
    assert result.exit_code == 2
    assert f"pid {os.getpid()}" in result.stderr  # names who holds the workspace
    assert "another vetseg command" in result.stderr and "run this one again" in result.stderr
    assert snapshot(setup.root) == before


def _start(*args: str | Path) -> subprocess.Popen[str]:
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO)])
    return subprocess.Popen(
        [sys.executable, "-m", "vetseg.cli", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )


def _refused_or_done(process: subprocess.Popen[str]) -> str:
    out, err = process.communicate(timeout=300)
    assert process.returncode in (0, 2), err
    if process.returncode == 2:
        assert "another vetseg command" in err.splitlines()[-1]
    return out


@pytest.mark.slow
def test_two_prelabels_at_once_leave_one_consistent_workspace(setup: Setup) -> None:
    first, second = _start("prelabel", setup.root), _start("prelabel", setup.root)
    outputs = [_refused_or_done(first), _refused_or_done(second)]
    assert any("pre-labelled 4 case(s)" in out for out in outputs)
    _check_passes(setup.root)
    with Workspace.open(setup.root) as ws:
        drafts = [(p.case_id, p.model_id) for p in ws.prelabels()]
        assert sorted(drafts) == sorted(set(drafts)) and len(drafts) == 4  # none twice


@pytest.mark.slow
def test_a_correction_during_a_refine_round_waits_or_is_refused(setup: Setup) -> None:
    refine = _start("refine", setup.root, "--epochs", "2", "--steps-per-epoch", "2", "--no-augment")
    lock = setup.root / workspace_module.LOCK_NAME
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and "refine" not in (
        lock.read_text() if lock.exists() else ""
    ):
        time.sleep(0.05)
    result = _cli("correct", setup.root, "new1", setup.truth["new1"])
    _refused_or_done(refine)
    assert result.exit_code in (0, 2), result.stderr
    if result.exit_code == 2:
        assert "another vetseg command" in result.stderr
    _check_passes(setup.root)
    with Workspace.open(setup.root) as ws:
        assert len(ws.corrections("new1")) == (1 if result.exit_code == 0 else 0)


# --------------------------------------------------------------------------- full disk
class _FullDisk:
    """``os`` for vetseg.fileutil, except that moving a finished file into place finds no space."""

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    @staticmethod
    def replace(source: Any, target: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(target))


@pytest.mark.parametrize("command", ["add", "correct", "prelabel"])
def test_a_full_disk_leaves_the_previous_state(
    command: str, setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = {
        "add": ("add", setup.root, setup.truth["new0"].parent / "lab0.nii.gz"),
        "correct": ("correct", setup.root, "new0", setup.truth["new0"]),
        "prelabel": ("prelabel", setup.root, "--cases", "1"),
    }[command]
    if command == "add":  # a scan the workspace does not have yet
        extra = tmp_path / "extra.nii.gz"
        extra.write_bytes(args[2].read_bytes())
        args = ("add", setup.root, extra)
    before = snapshot(setup.root)
    monkeypatch.setattr(vetseg.fileutil, "os", _FullDisk())
    result = _cli(*args)
    monkeypatch.undo()
    assert result.exit_code == 2, result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: ")
    assert "space" in result.stderr.lower() and "Traceback" not in result.stderr
    assert temporary_leftovers(setup.root) == []
    if command == "prelabel":
        # The run was recorded as started before its first draft could be written: the
        # workspace is whole, and with space again the same command finishes the run.
        _check_passes(setup.root)
        again = _cli(*args)
        assert again.exit_code == 0 and "finished interrupted pre-label run" in again.stdout
    else:
        assert snapshot(setup.root) == before
    _check_passes(setup.root)
