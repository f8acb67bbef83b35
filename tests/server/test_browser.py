"""The review page in a real browser: Debian's chromium, headless, driven by Playwright.

Skips (with the reason) where /usr/bin/chromium or the playwright package is missing; .ci/run
installs chromium, so CI runs it. Playwright's own browser download is never used.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.server.conftest import TOKEN, LiveServer
from tests.workflow.helpers import db_rows
from vetseg.io.image import read_label, write_image
from vetseg.workflow.correct import correct
from vetseg.workflow.workspace import Workspace

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("VETSEG_CHROMIUM", "/usr/bin/chromium")
#: Flags this machine's headless chromium needs (no sandbox as root, no GPU, no network calls
#: home at start-up).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture()
def page(live_server: LiveServer, tmp_path: Path) -> Iterator[Any]:
    """A fresh headless chromium page (its own profile folder)."""
    if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).is_file():
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as driver:
        context = driver.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1300, "height": 760},
        )
        errors: list[str] = []
        new_page = context.new_page()
        new_page.on("pageerror", lambda error: errors.append(str(error)))
        new_page.set_default_timeout(30_000)
        yield new_page
        context.close()
        assert errors == [], f"JavaScript errors on the page: {errors}"


def _open(page: Any, url: str, case_id: str | None = None) -> None:
    page.goto(url)
    expected = case_id or ""
    page.wait_for_function(
        "expected => document.body.dataset.loaded && (!expected || "
        "document.body.dataset.loaded === expected)",
        arg=expected,
    )


def _painted(page: Any) -> int:
    return page.evaluate("window.vetsegReview.nv.drawBitmap.reduce((n, v) => n + (v > 0), 0)")


def _stroke(page: Any) -> None:
    """A brush stroke across the middle of the axial view, as a vet's mouse would draw it."""
    page.click("#layouts button[data-layout=axial]")
    page.click("#tools button[data-tool=brush]")
    box = page.locator("#gl").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x - 60, y)
    page.mouse.down()
    for step in range(1, 13):
        page.mouse.move(x - 60 + 10 * step, y + 2 * step)
    page.mouse.up()


def test_open_paint_save_and_a_new_version_appears(live_server: LiveServer, page: Any) -> None:
    url = f"{live_server.url}/?token={TOKEN}"
    _open(page, url)
    rows = page.locator("#queue tbody tr")
    assert rows.count() == 5
    # Open the second case of the queue by clicking it.
    case_id = rows.nth(1).get_attribute("data-case")
    rows.nth(1).click()
    page.wait_for_function(f"document.body.dataset.loaded === '{case_id}'")
    assert page.inner_text("#case-title") == case_id

    before = _painted(page)
    _stroke(page)
    after = _painted(page)
    assert after > before, "the stroke painted no voxel"
    # Undo takes the stroke back, redo restores it.
    page.keyboard.press("Control+z")
    assert _painted(page) == before
    page.keyboard.press("Control+y")
    assert _painted(page) == after

    page.click("#save")
    page.wait_for_function(f"(document.body.dataset.saved || '').startsWith('{case_id}:')")
    assert page.evaluate("document.body.dataset.saved") == f"{case_id}:1"
    assert "saved as version 1" in page.inner_text("#message")
    # Stored through the correction code: a database row, an audit entry, a file on disk.
    rows_db = db_rows(live_server.root, "SELECT version, path, changed_voxels FROM corrections")
    assert [(r[0], r[1]) for r in rows_db] == [(1, f"review/{case_id}/corrected_v001.nii.gz")]
    stored = read_label(live_server.root / rows_db[0][1])[0]
    assert int(np.count_nonzero(stored)) == after  # every painted voxel, no more
    assert rows_db[0][2] == after - before
    with Workspace.open(live_server.root) as ws:
        assert ws.audit_log()[-1]["details"]["source"].startswith("vetseg review")
    # The page moved on to the next case and shows the saved one as corrected v1.
    assert page.evaluate("document.body.dataset.loaded") != case_id
    state = page.locator(f"#queue tbody tr[data-case='{case_id}'] td").nth(1).inner_text()
    assert state == "corrected v1"


def test_a_stale_save_is_refused_and_the_drawing_is_offered_again(
    live_server: LiveServer, page: Any, tmp_path: Path
) -> None:
    with Workspace.open(live_server.root) as ws:
        case_id = ws.cases("prelabelled")[0].case_id
        truth = ws.path(ws.latest_prelabel(case_id).path)
    url = f"{live_server.url}/?token={TOKEN}#case={case_id}"
    _open(page, url, case_id)
    _stroke(page)
    painted = _painted(page)
    # Meanwhile someone else imports version 1 (vetseg correct from a terminal).
    labels, meta = read_label(truth)
    labels[0, :4, :4] = 2
    other = write_image(labels, meta, tmp_path / "other.nii.gz")
    with Workspace.open(live_server.root) as ws:
        assert correct(ws, case_id, other).record.version == 1
    page.click("#save")
    page.wait_for_function("document.querySelector('#message').className === 'error'")
    assert "version 1 was saved" in page.inner_text("#message")
    assert db_rows(live_server.root, "SELECT count(*) FROM corrections") == [(1,)]
    # The tab is closed by mistake (here: navigated away); the refused drawing is offered again.
    page.goto("about:blank")
    _open(page, url, case_id)
    assert page.is_visible("#restore")
    assert "drawn on version 0; version 1 was saved since" in page.inner_text("#restore")
    page.click("#restore-yes")
    page.wait_for_selector("#restore", state="hidden")
    assert _painted(page) == painted
    page.click("#save")
    page.wait_for_function(f"document.body.dataset.saved === '{case_id}:2'")
    stored = read_label(live_server.root / "review" / case_id / "corrected_v002.nii.gz")[0]
    assert int(np.count_nonzero(stored)) == painted
    assert db_rows(live_server.root, "SELECT version FROM corrections ORDER BY version") == [
        (1,),
        (2,),
    ]
