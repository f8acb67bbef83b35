"""The page's files ship in the package, and NiiVue is the pinned version, unmodified."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import vetseg.server

SERVER = Path(vetseg.server.__file__).parent
STATIC = SERVER / "static"


def test_vendored_niivue_is_the_version_package_lock_pins() -> None:
    record = json.loads((STATIC / "vendor" / "niivue.json").read_text())
    lock = json.loads((SERVER / "web" / "package-lock.json").read_text())
    pinned = lock["packages"]["node_modules/@niivue/niivue"]["version"]
    manifest = json.loads((SERVER / "web" / "package.json").read_text())
    assert manifest["dependencies"]["@niivue/niivue"] == pinned == record["version"]
    digest = hashlib.sha256((STATIC / "vendor" / "niivue.js").read_bytes()).hexdigest()
    assert digest == record["sha256"]


def test_the_page_loads_nothing_from_another_site() -> None:
    for name in ("index.html", "review.js", "review.css"):
        text = (STATIC / name).read_text()
        assert not re.search(r"(src|href|from|import)\s*=?\s*[\"']?(https?:)?//", text), name
    assert 'from "/static/vendor/niivue.js"' in (STATIC / "review.js").read_text()
