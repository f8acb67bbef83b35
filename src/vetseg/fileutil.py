"""Atomic file writes: a file is either the old one or the complete new one, never half.

Clinical data is precious: every file vetseg writes goes to a temporary name in the target's own
folder (same file system, so the final rename is atomic) and is renamed into place when complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it goes.

    Args:
        path: the final file.
        suffix: the temporary file's suffix (writers that pick a format by extension need the
            real one, e.g. ``.nii.gz``); default: everything after the first dot of the name.
    """
    path = Path(path)
    # Folders made for this file go again when the write fails (e.g. a full disk), so that a
    # failed command leaves no trace; the first missing ancestor is made last.
    made = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{path.name.split('.')[0]}.tmp-", suffix=suffix, dir=path.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600; give the file the permissions any new file would get.
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        for folder in made:  # deepest first
            with contextlib.suppress(OSError):  # not empty: another file went in meanwhile
                folder.rmdir()
        raise


def atomic_write_bytes(path: str | Path, payload: bytes) -> Path:
    """Write ``payload`` to ``path`` atomically (fsync before the rename)."""
    path = Path(path)
    with atomic_path(path, suffix=".tmp") as tmp:
        with open(tmp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 text atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """Write JSON (indented, trailing newline) atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2) + "\n")
