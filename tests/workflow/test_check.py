"""``vetseg check``: a sound workspace passes; a deleted, changed or half-written file is named."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.workflow.conftest import Setup
from vetseg.cli import app
from vetseg.workflow.correct import correct
from vetseg.workflow.prelabel import prelabel
from vetseg.workflow.workspace import Workspace


@pytest.fixture()
def worked(setup: Setup) -> Setup:
    """The workspace after a pre-label of two cases and a correction of one."""
    with Workspace.open(setup.root) as ws:
        result = prelabel(ws, cases=2)
        case_id = result.items[0].case_id
        correct(ws, case_id, setup.truth[case_id])
    return setup


def run_check(root: Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["check", str(root)])
    return result.exit_code, result.stdout, result.stderr


def test_a_sound_workspace_passes(worked: Setup) -> None:
    code, out, err = run_check(worked.root)
    assert (code, err) == (0, ""), err
    # 7 scans, 3 labels, 2 pre-labels + 2 latest copies, 1 correction, 2 model files
    assert "sound: 17 files present, 17 checksums match" in out


def _corrected_file(root: Path) -> Path:
    with Workspace.open(root) as ws:
        return ws.path(ws.corrections()[0].path)


def test_a_deleted_corrected_version_is_found(worked: Setup) -> None:
    target = _corrected_file(worked.root)
    target.unlink()
    code, _, err = run_check(worked.root)
    assert code == 1
    assert f"{target.relative_to(worked.root).as_posix()}: missing" in err
    assert "1 problem(s)" in err


def test_a_modified_scan_is_found(worked: Setup) -> None:
    scan = worked.root / "data" / "new3" / "image.nii.gz"
    data = bytearray(scan.read_bytes())
    data[-10] ^= 0x01
    scan.write_bytes(bytes(data))
    code, _, err = run_check(worked.root)
    assert code == 1
    assert "data/new3/image.nii.gz: changed since it was written" in err


def test_modified_model_weights_are_found_twice(worked: Setup) -> None:
    with Workspace.open(worked.root) as ws:
        folder = ws.path(ws.require_current_model().path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    code, _, err = run_check(worked.root)
    assert code == 1
    assert "model.safetensors: changed since it was written" in err
    assert "does not match the checksum in its model.json" in err


def test_an_orphan_temporary_file_is_found_and_not_swept(worked: Setup) -> None:
    stale = _corrected_file(worked.root).parent / ".corrected_v002.tmp-x1y2.nii.gz"
    stale.write_bytes(b"half a label")
    code, _, err = run_check(worked.root)
    assert code == 1
    assert f"{stale.relative_to(worked.root).as_posix()}: temporary file" in err
    assert stale.exists()  # check reports; the next changing command sweeps


def test_a_corrected_case_without_its_version_row_is_found(worked: Setup) -> None:
    db = sqlite3.connect(worked.root / "vetseg.db")
    db.execute("UPDATE cases SET state = 'corrected' WHERE case_id = 'new3'")
    db.commit()
    db.close()
    code, _, err = run_check(worked.root)
    assert code == 1 and "case new3: state corrected but no corrected version" in err


def test_a_schema_2_workspace_gets_its_checksums_once(worked: Setup) -> None:
    db = sqlite3.connect(worked.root / "vetseg.db")
    db.execute("DROP TABLE files")
    db.execute("UPDATE info SET value = '2' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    code, out, err = run_check(worked.root)
    assert code == 0, err
    with Workspace.open(worked.root) as ws:
        migrations = [e for e in ws.audit_log() if e["action"] == "migrate"]
        assert [m["details"]["schema_version"] for m in migrations] == [[2, 3]]
        assert migrations[0]["details"]["checksums_recorded"] == 17


def test_check_changes_nothing_and_refuses_a_non_workspace(worked: Setup, tmp_path: Path) -> None:
    before = (worked.root / "vetseg.db").read_bytes()
    assert run_check(worked.root)[0] == 0
    assert (worked.root / "vetseg.db").read_bytes() == before
    code, _, err = run_check(tmp_path / "nothing")
    assert code == 2 and "not a vetseg workspace" in err
