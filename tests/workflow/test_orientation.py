"""``vetseg add --orientation``: recorded per case, used by pre-labels and rounds; schema 2."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.workflow.conftest import Setup
from tests.workflow.helpers import phantom
from vetseg.cli import app
from vetseg.errors import InputError
from vetseg.io.image import ImageMeta, read_label, write_image
from vetseg.io.orientation import apply_orientation_override
from vetseg.workflow.prelabel import prelabel
from vetseg.workflow.register import add_scans
from vetseg.workflow.workspace import SCHEMA_VERSION, Workspace

#: The scanner's truth: the phantom's long axis is stored along array x (code SPL: x to S...).
TRUE = ImageMeta(
    spacing=(2.0, 1.0, 1.0), origin=(3.0, 4.0, 5.0), direction=(0, 0, 1, 0, 1, 0, -1, 0, 0)
)


def lost_header(shape: tuple[int, ...]) -> ImageMeta:
    """An identity header whose override by ``TRUE``'s code gives ``TRUE`` exactly."""
    centre = (np.asarray(shape[::-1], dtype=float) - 1) / 2
    origin = TRUE.index_to_physical(centre[::-1]) - centre * np.asarray(TRUE.spacing)
    return ImageMeta(spacing=TRUE.spacing, origin=tuple(origin))


def test_prelabel_of_a_lost_header_with_the_override_equals_the_true_header(
    setup: Setup, tmp_path: Path
) -> None:
    image, _ = phantom(7, shape=(30, 24, 24))  # 60 mm along the body, 24 mm across
    stored = np.ascontiguousarray(np.transpose(image, (2, 1, 0))[:, :, ::-1])  # body along x
    code = TRUE.orientation
    assert code == "IPL"
    lost = lost_header(stored.shape)
    posed = apply_orientation_override(lost, code, stored.shape)
    np.testing.assert_allclose(posed.origin, TRUE.origin, atol=1e-9)
    np.testing.assert_allclose(posed.direction, TRUE.direction)
    folder = tmp_path / "scans"
    true_scan = write_image(stored, TRUE, folder / "true.nii.gz")
    lost_scan = write_image(stored, lost, folder / "lost.nii.gz")
    plain_scan = write_image(
        stored,
        lost,
        folder / "plain.nii.gz",
    )

    with Workspace.open(setup.root) as ws:
        add_scans(ws, [true_scan])
        result = add_scans(ws, [lost_scan], orientation=code.lower())
        assert result.warnings == []  # posed right: the body runs across the slices
        plain = add_scans(ws, [plain_scan])
        assert any("--orientation" in w for w in plain.warnings)  # posed wrong: said so
        assert ws.case("lost").orientation == "IPL" and ws.case("true").orientation is None
        prelabel(ws, cases=100)
        drafts = {
            name: read_label(ws.review_dir(name) / "prelabel.nii.gz")
            for name in ("true", "lost", "plain")
        }
        # The untrained model's uncertainty is a fingerprint of the slices it was shown.
        score = {name: ws.latest_prelabel(name).uncertainty for name in drafts}  # type: ignore[union-attr]
    assert drafts["lost"][1] == lost  # written on the case's own header grid
    np.testing.assert_array_equal(drafts["lost"][0], drafts["true"][0])
    # Same slices, same computation: equal to the last bit; other slices: another score.
    assert score["lost"] == score["true"] != score["plain"]


def test_add_again_with_another_code_replaces_it_and_says_so(setup: Setup) -> None:
    scan = setup.inputs / "new0.nii.gz"
    with Workspace.open(setup.root) as ws:
        assert ws.case("new0").orientation is None
        result = add_scans(ws, [scan], orientation="RAS")
        assert result.already == ["new0"] and ws.case("new0").orientation == "RAS"
        assert any("now uses --orientation RAS" in w for w in result.warnings)
        assert ws.audit_log()[-1]["details"]["orientation_changed"] == ["new0"]
        with pytest.raises(InputError, match="not an orientation code"):
            add_scans(ws, [scan], orientation="RAP")
        assert ws.case("new0").orientation == "RAS"


def test_cli_add_orientation(setup: Setup, tmp_path: Path) -> None:
    image, _ = phantom(3)
    scan = write_image(image, TRUE, tmp_path / "cli.nii.gz")
    runner = CliRunner()
    result = runner.invoke(app, ["add", str(setup.root), str(scan), "--orientation", "up"])
    assert result.exit_code == 2 and "not an orientation code" in result.stderr
    result = runner.invoke(app, ["add", str(setup.root), str(scan), "--orientation", "lps"])
    assert result.exit_code == 0, result.output
    with Workspace.open(setup.root) as ws:
        assert ws.case("cli").orientation == "LPS"


def _as_schema_1(root: Path) -> None:
    """What vetseg wrote before issue 16: no cases.orientation, schema_version 1."""
    db = sqlite3.connect(str(root / "vetseg.db"))
    db.execute("ALTER TABLE cases DROP COLUMN orientation")
    db.execute("UPDATE info SET value = '1' WHERE key = 'schema_version'")
    db.commit()
    db.close()


def test_a_schema_1_workspace_is_migrated_once_and_keeps_its_cases(setup: Setup) -> None:
    with Workspace.open(setup.root) as ws:
        before = [(c.case_id, c.state, c.content_sha256) for c in ws.cases()]
    _as_schema_1(setup.root)
    with Workspace.open(setup.root) as ws:
        assert [(c.case_id, c.state, c.content_sha256) for c in ws.cases()] == before
        assert all(c.orientation is None for c in ws.cases())
        version = ws.db.execute("SELECT value FROM info WHERE key = 'schema_version'")
        assert int(version.fetchone()[0]) == SCHEMA_VERSION == 3
        assert [e["action"] for e in ws.audit_log()].count("migrate") == 1
        add_scans(ws, [setup.inputs / "new1.nii.gz"], orientation="LPI")  # the column works
    with Workspace.open(setup.root) as ws:  # opening again does not migrate again
        assert [e["action"] for e in ws.audit_log()].count("migrate") == 1
        assert ws.case("new1").orientation == "LPI"


def test_a_newer_schema_is_refused(setup: Setup) -> None:
    db = sqlite3.connect(str(setup.root / "vetseg.db"))
    db.execute("UPDATE info SET value = '4' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(InputError, match="not a vetseg 3 workspace"):
        Workspace.open(setup.root)
