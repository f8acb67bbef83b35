"""`vetseg review`: prints a link with a token, serves the workspace, refuses a non-workspace."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tests.workflow.conftest import Setup
from tests.workflow.helpers import REPO, child_env


def test_review_prints_a_tokened_link_on_localhost(workspace: Setup) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "vetseg.cli", "review", str(workspace.root), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=child_env(),
        cwd=REPO,
        text=True,
    )
    try:
        line = process.stdout.readline() if process.stdout else ""
        match = re.search(r"open (http://127\.0\.0\.1:(\d+)/)\?token=([\w-]{20,})", line)
        assert match, f"no link in {line!r}"
        base, token = match.group(1), match.group(3)
        with urllib.request.urlopen(f"{base}api/cases?token={token}", timeout=10) as answer:
            cases = json.load(answer)["cases"]
        assert {c["case"] for c in cases} == {"lab0", "lab1", "new0", "new1", "new2"}
        try:
            urllib.request.urlopen(f"{base}api/cases", timeout=10)
            raise AssertionError("the API answered without the token")
        except urllib.error.HTTPError as refused:
            assert refused.code == 401
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_review_of_a_folder_that_is_no_workspace_is_one_sentence(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vetseg.cli", "review", str(tmp_path)],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "not a vetseg workspace" in result.stderr
    assert "Traceback" not in result.stderr
