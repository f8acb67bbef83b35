"""The workspace itself: layout, settings, database, lock, audit log."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.workflow.conftest import Setup
from tests.workflow.helpers import ORGANS
from vetseg.errors import InputError
from vetseg.workflow.workspace import Workspace, WorkspaceSettings


def _settings(**changes: object) -> WorkspaceSettings:
    base = {"species": "rabbit", "organs": ORGANS}
    return WorkspaceSettings(**{**base, **changes})  # type: ignore[arg-type]


def test_init_makes_the_layout_and_a_wal_database(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    with Workspace.create(root, _settings(window=(0.0, 255.0))) as ws:
        assert ws.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert [a["action"] for a in ws.audit_log()] == ["init"]
    for name in ("vetseg.toml", "vetseg.db", "data", "review", "models"):
        assert (root / name).exists(), name
    with Workspace.open(root) as ws:
        assert ws.settings == _settings(window=(0.0, 255.0))
        assert ws.settings.preprocess(64).window == (0.0, 255.0)
        assert ws.current_model() is None


def test_init_again_is_harmless_but_other_settings_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    Workspace.create(root, _settings()).close()
    Workspace.create(root, _settings()).close()
    with pytest.raises(InputError, match="other settings"):
        Workspace.create(root, _settings(species="dog"))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        Workspace.create(busy, _settings())


def test_open_refuses_a_folder_that_is_not_a_workspace(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a vetseg workspace"):
        Workspace.open(tmp_path)


def test_settings_validate_organs_window_and_refine_overrides() -> None:
    with pytest.raises(InputError):
        _settings(organs=("liver", "liver"))
    with pytest.raises(InputError):
        _settings(window=(255.0, 0.0))
    with pytest.raises(InputError):
        _settings(refine={"epochs": 0})
    config = _settings(refine={"epochs": 4, "freeze_epochs": 2}).refine_config(lr=1e-3)
    assert (config.epochs, config.freeze_epochs, config.lr) == (4, 2, 1e-3)
    assert config.tversky_beta == 0.7  # refine-round default (DESIGN 4)


def test_settings_round_trip_through_toml(tmp_path: Path) -> None:
    settings = _settings(window=(0.0, 255.0), synthetic=True, seed=3, refine={"epochs": 5})
    text = settings.to_toml()
    assert WorkspaceSettings.from_toml(text, tmp_path / "vetseg.toml") == settings
    scaled = _settings(spacing=0.525)
    back = WorkspaceSettings.from_toml(scaled.to_toml(), tmp_path / "vetseg.toml")
    assert back.spacing == 0.525 and back.preprocess(64).spacing == 0.525
    assert "\nspacing =" not in _settings().to_toml()  # TOML has no null: absent when unset
    with pytest.raises(InputError, match="spacing"):
        _settings(spacing=-1.0)


def test_audit_log_is_append_only(setup: Setup) -> None:
    with Workspace.open(setup.root) as ws:
        actions = [a["action"] for a in ws.audit_log()]
        assert actions == ["init", "add", "add", "use"]
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            ws.db.execute("UPDATE audit SET action = 'x'")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            ws.db.execute("DELETE FROM audit")


def test_one_command_at_a_time(setup: Setup) -> None:
    with Workspace.open(setup.root) as first, Workspace.open(setup.root) as second:
        second.lock_timeout = 0.0
        with first.changing():
            with pytest.raises(InputError, match="another vetseg command"):
                with second.changing():
                    pass
        with second.changing():  # released when the first is done
            pass


def test_a_killed_writes_temporary_file_is_swept(setup: Setup) -> None:
    stale = setup.root / "review" / "new0" / ".prelabel.tmp-abc.nii.gz"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half")
    with Workspace.open(setup.root) as ws, ws.changing():
        pass
    assert not stale.exists()
