"""A workspace: one folder that holds a species' scans, labels, pre-labels, models and history.

Layout (DESIGN section 7)::

    DIR/
      vetseg.toml         species, organs, intensity window, seeds, refine settings
      vetseg.db           SQLite (WAL): cases, models, rounds, pre-labels, corrections, audit log
      data/<case>/        the registered scan (copied) and, for a labelled case, label.nii.gz
      review/<case>/      prelabel.nii.gz (the latest), prelabels/<model>.nii.gz (every one),
                          corrected_v001.nii.gz, corrected_v002.nii.gz, ... (never overwritten)
      models/<name>/      imported models and refine rounds (model.json + model.safetensors)

Every command that changes a workspace holds an exclusive lock on ``DIR/.vetseg.lock`` (the
kernel releases it when a process dies, even by ``kill -9``), writes files atomically first and
then records them in one SQLite transaction together with an audit row. A kill at any moment
therefore leaves either the old state or the new one; a re-run picks up where the last one
stopped. Leftover temporary files of a killed write are swept when the next command starts.

Case states: ``labelled`` (registered with the vet's label), ``unlabelled``, ``prelabelled``
(the current model drafted a label), ``corrected`` (the vet's corrected label was imported).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import os
import re
import shlex
import sqlite3
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vetseg.config import PreprocessConfig, StageConfig, from_dict
from vetseg.errors import InputError
from vetseg.fileutil import atomic_write_text
from vetseg.labels import SPECIES_ORGANS

try:  # Python 3.11+; vetseg.toml is only read here
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10 reads it with tomli, if installed
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ModuleNotFoundError:
        tomllib = None  # type: ignore[assignment]

try:
    import fcntl
except ModuleNotFoundError:  # pragma: no cover - Windows: no advisory lock
    fcntl = None  # type: ignore[assignment]

CONFIG_NAME = "vetseg.toml"
DB_NAME = "vetseg.db"
LOCK_NAME = ".vetseg.lock"
#: How long a command waits for another one that holds the workspace lock (short commands such
#: as two ``correct`` in a script then run one after the other; a long refine is reported).
LOCK_TIMEOUT_SECONDS = 5.0
#: 2: ``cases.orientation`` (issue 16); 3: ``files``, the checksum of every file the database
#: names (issue 15). Older databases are migrated when opened.
SCHEMA_VERSION = 3
STATES: tuple[str, ...] = ("labelled", "unlabelled", "prelabelled", "corrected")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cases (
    case_id TEXT PRIMARY KEY,
    image TEXT NOT NULL,
    source TEXT NOT NULL,
    content_sha256 TEXT NOT NULL,
    label TEXT,
    state TEXT NOT NULL
        CHECK (state IN ('labelled', 'unlabelled', 'prelabelled', 'corrected')),
    added TEXT NOT NULL,
    updated TEXT NOT NULL,
    orientation TEXT
);
CREATE TABLE IF NOT EXISTS models (
    model_id TEXT PRIMARY KEY,
    parent TEXT,
    stage TEXT NOT NULL,
    path TEXT NOT NULL,
    metrics TEXT NOT NULL,
    data TEXT NOT NULL,
    split TEXT NOT NULL,
    created TEXT NOT NULL,
    registered TEXT NOT NULL,
    promoted INTEGER NOT NULL,
    note TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS rounds (
    round INTEGER PRIMARY KEY,
    parent TEXT NOT NULL,
    out TEXT NOT NULL,
    cases TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'promoted', 'kept', 'abandoned')),
    model_id TEXT,
    val_cases TEXT,
    parent_val_dice REAL,
    new_val_dice REAL,
    started TEXT NOT NULL,
    finished TEXT
);
CREATE TABLE IF NOT EXISTS scores (
    case_id TEXT NOT NULL REFERENCES cases(case_id),
    model_id TEXT NOT NULL,
    uncertainty REAL NOT NULL,
    PRIMARY KEY (case_id, model_id)
);
CREATE TABLE IF NOT EXISTS prelabel_runs (
    run INTEGER PRIMARY KEY,
    model_id TEXT NOT NULL,
    strategy TEXT NOT NULL,
    selected TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running', 'done')),
    started TEXT NOT NULL,
    finished TEXT
);
CREATE TABLE IF NOT EXISTS prelabels (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    case_id TEXT NOT NULL REFERENCES cases(case_id),
    model_id TEXT NOT NULL,
    run INTEGER NOT NULL,
    queue_rank INTEGER NOT NULL,
    path TEXT NOT NULL,
    uncertainty REAL NOT NULL,
    strategy TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS corrections (
    case_id TEXT NOT NULL REFERENCES cases(case_id),
    version INTEGER NOT NULL,
    path TEXT NOT NULL,
    source TEXT NOT NULL,
    content_sha256 TEXT NOT NULL,
    prelabel_id INTEGER,
    changed_voxels INTEGER NOT NULL,
    drawn_voxels INTEGER NOT NULL,
    effort REAL NOT NULL,
    created TEXT NOT NULL,
    PRIMARY KEY (case_id, version)
);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    recorded TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    action TEXT NOT NULL,
    command TEXT NOT NULL,
    details TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_append_only_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_append_only_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS corrections_never_update BEFORE UPDATE ON corrections
BEGIN SELECT RAISE(ABORT, 'a correction is never overwritten'); END;
CREATE TRIGGER IF NOT EXISTS corrections_never_delete BEFORE DELETE ON corrections
BEGIN SELECT RAISE(ABORT, 'a correction is never deleted'); END;
"""


def now() -> str:
    """The current UTC time as an ISO string (seconds)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def command_line() -> str:
    """The command that is running, for the audit log."""
    argv = sys.argv[1:] if Path(sys.argv[0]).name in ("vetseg", "cli.py") else sys.argv
    return " ".join(shlex.quote(a) for a in ["vetseg", *argv] if a)


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class WorkspaceSettings:
    """What ``vetseg.toml`` holds.

    Attributes:
        species: the animal, e.g. ``"rabbit"`` or ``"mouse_head"``.
        organs: the organ vocabulary; a workspace label map uses id ``i + 1`` for ``organs[i]``.
        window: intensity window of the scans: HU for CT (default ``(-1000, 1000)``); scans
            stored as other units (e.g. micro-CT rescaled to 0-255) need their own window. It
            becomes ``PreprocessConfig.window`` of every model trained for this workspace.
        orientation: canonical orientation code (``PreprocessConfig.orientation``).
        spacing: the pixel spacing (mm) of this workspace's models (``PreprocessConfig.spacing``,
            e.g. the species spacing of :mod:`vetseg.species`); None: not fixed. A model of
            another spacing is refused by ``vetseg use``.
        synthetic: the scans are synthetic (phantoms); results must say so.
        seed: seed of random pre-label selection and of refine rounds.
        refine: ``StageConfig`` fields that override the refine-round defaults (DESIGN 4).
    """

    species: str
    organs: tuple[str, ...]
    window: tuple[float, float] = (-1000.0, 1000.0)
    orientation: str = "LPS"
    spacing: float | None = None
    synthetic: bool = False
    seed: int = 0
    refine: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.organs or len(set(self.organs)) != len(self.organs):
            raise InputError(f"organ list {list(self.organs)} must be non-empty without repeats.")
        bad = [o for o in self.organs if not re.fullmatch(r"[a-z][a-z0-9_]*", o)]
        if bad:
            raise InputError(f"organ name(s) {', '.join(bad)}: use lower case, digits and _.")
        PreprocessConfig(window=self.window, orientation=self.orientation, spacing=self.spacing)
        self.refine_config()  # validates the overrides

    def preprocess(self, size: int) -> PreprocessConfig:
        """The model input definition for a model trained for this workspace."""
        return PreprocessConfig(
            window=self.window, size=size, orientation=self.orientation, spacing=self.spacing
        )

    def refine_config(self, **overrides: Any) -> StageConfig:
        """Refine-round settings: DESIGN defaults, then ``[refine]`` of vetseg.toml, then these.

        When the epochs are changed but the frozen epochs are not, the frozen share stays the
        default's two thirds (30 epochs, 20 frozen), so ``--epochs 6`` freezes 4.
        """
        default = StageConfig.refine()
        changes = {**dict(self.refine), **{k: v for k, v in overrides.items() if v is not None}}
        if "epochs" in changes and "freeze_epochs" not in changes:
            share = default.freeze_epochs / default.epochs
            changes["freeze_epochs"] = round(int(changes["epochs"]) * share)
        changes.setdefault("seed", self.seed)
        return from_dict(StageConfig, {**dataclasses.asdict(default), **changes})

    def to_toml(self) -> str:
        """The settings as the text of ``vetseg.toml``."""
        lines = [
            "# vetseg workspace settings. Edit with care: the organ list fixes the label ids",
            "# (organs[i] has id i + 1) of every label file in this workspace.",
            f"species = {_toml_value(self.species)}",
            f"organs = {_toml_value(list(self.organs))}",
            f"synthetic = {_toml_value(self.synthetic)}",
            f"seed = {_toml_value(self.seed)}",
            "",
            "[preprocess]",
            "# Intensity window of the scans (HU for CT; e.g. [0, 255] for rescaled micro-CT).",
            f"window = {_toml_value([float(v) for v in self.window])}",
            f"orientation = {_toml_value(self.orientation)}",
            "# Pixel spacing (mm) of this workspace's models; absent: not fixed.",
            *([f"spacing = {_toml_value(float(self.spacing))}"] if self.spacing else []),
            "",
            "[refine]",
            "# StageConfig fields overriding the refine-round defaults, e.g. epochs = 30",
        ]
        lines += [f"{k} = {_toml_value(v)}" for k, v in dict(self.refine).items()]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_toml(cls, text: str, source: Path) -> WorkspaceSettings:
        """Parse ``vetseg.toml`` (a clear error for anything malformed)."""
        if tomllib is None:  # pragma: no cover
            raise InputError(f"{source}: reading vetseg.toml needs Python 3.11+ or tomli.")
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"{source}: not valid TOML ({exc}).") from exc
        pre = data.get("preprocess", {})
        try:
            return cls(
                species=str(data["species"]),
                organs=tuple(str(o) for o in data["organs"]),
                window=tuple(float(v) for v in pre.get("window", (-1000.0, 1000.0))),  # type: ignore[arg-type]
                orientation=str(pre.get("orientation", "LPS")),
                spacing=float(pre["spacing"]) if "spacing" in pre else None,
                synthetic=bool(data.get("synthetic", False)),
                seed=int(data.get("seed", 0)),
                refine=dict(data.get("refine", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{source}: incomplete workspace settings ({exc}).") from exc


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise InputError(f"setting value {value!r} cannot be written to vetseg.toml.")


# --------------------------------------------------------------------------- records
@dataclass(frozen=True)
class CaseRecord:
    """One registered case (paths relative to the workspace).

    ``orientation``: the ``--orientation`` code the case was added with (where its array axes
    point, overriding its header; see :mod:`vetseg.io.orientation`), or None: the header's.
    """

    case_id: str
    image: str
    source: str
    content_sha256: str
    label: str | None
    state: str
    added: str
    updated: str
    orientation: str | None = None


@dataclass(frozen=True)
class ModelRecord:
    """One model of the workspace; ``promoted`` says whether it ever became current."""

    model_id: str
    parent: str | None
    stage: str
    path: str
    metrics: dict[str, Any]
    data: dict[str, Any]
    split: dict[str, Any]
    created: str
    registered: str
    promoted: bool
    note: str


@dataclass(frozen=True)
class PrelabelRecord:
    """One pre-label of a case by one model."""

    id: int
    case_id: str
    model_id: str
    run: int
    queue_rank: int
    path: str
    uncertainty: float
    strategy: str
    created: str


@dataclass(frozen=True)
class CorrectionRecord:
    """One imported correction (version ``version`` of a case's corrected label)."""

    case_id: str
    version: int
    path: str
    source: str
    content_sha256: str
    prelabel_id: int | None
    changed_voxels: int
    drawn_voxels: int
    effort: float
    created: str


def _record(cls: type, row: sqlite3.Row, json_fields: Sequence[str] = ()) -> Any:
    values = dict(row)
    for name in json_fields:
        values[name] = json.loads(values[name])
    if cls is ModelRecord:
        values["promoted"] = bool(values["promoted"])
    return cls(**values)


# --------------------------------------------------------------------------- workspace
class Workspace:
    """An open workspace: settings, database and paths.

    Open one with :meth:`create` or :meth:`open`; use it as a context manager (closes the
    database). Changes go through :meth:`changing` (lock) and :meth:`transaction`.
    """

    def __init__(self, root: Path, settings: WorkspaceSettings) -> None:
        self.root = Path(root)
        self.settings = settings
        self.db = _connect(self.root / DB_NAME)
        self._lock_handle: Any = None
        #: Seconds a command waits for another one's lock before it gives up with a message.
        self.lock_timeout = LOCK_TIMEOUT_SECONDS

    # ------------------------------------------------------------------ open / create
    @classmethod
    def create(cls, root: Path, settings: WorkspaceSettings) -> Workspace:
        """Make a workspace folder (``vetseg init``); re-running with the same settings is fine.

        Raises:
            InputError: the folder is a workspace with other settings, or a non-empty folder
                that is not a workspace.
        """
        root = Path(root)
        config = root / CONFIG_NAME
        if config.is_file():
            existing = WorkspaceSettings.from_toml(config.read_text(), config)
            if existing != settings:
                raise InputError(
                    f"{root}: already a vetseg workspace with other settings (species "
                    f"{existing.species}, organs {', '.join(existing.organs)})."
                )
            return cls.open(root)
        if root.exists() and not root.is_dir():
            raise InputError(f"{root}: exists and is not a folder.")
        if root.is_dir() and not _interrupted_init(root):
            raise InputError(f"{root}: folder is not empty; choose a new folder for a workspace.")
        for sub in ("data", "review", "models"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        workspace = cls(root, settings)
        with workspace.changing(), workspace.transaction():
            workspace.db.execute(
                "INSERT OR REPLACE INTO info VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            workspace.audit(
                "init",
                {
                    "species": settings.species,
                    "organs": list(settings.organs),
                    "window": list(settings.window),
                },
            )
        # vetseg.toml last: its presence is what makes the folder a workspace.
        atomic_write_text(config, settings.to_toml())
        return workspace

    @classmethod
    def open(cls, root: Path) -> Workspace:
        """Open an existing workspace.

        Raises:
            InputError: ``root`` is not a vetseg workspace.
        """
        root = Path(root)
        config = root / CONFIG_NAME
        if not config.is_file():
            raise InputError(
                f"{root}: not a vetseg workspace (no {CONFIG_NAME}); make one with vetseg init."
            )
        settings = WorkspaceSettings.from_toml(config.read_text(), config)
        workspace = cls(root, settings)
        version = workspace.db.execute(
            "SELECT value FROM info WHERE key = 'schema_version'"
        ).fetchone()
        if version is not None and int(version[0]) in (1, 2):
            workspace._migrate(int(version[0]))
        elif version is None or int(version[0]) != SCHEMA_VERSION:
            workspace.close()
            raise InputError(f"{root / DB_NAME}: not a vetseg {SCHEMA_VERSION} workspace database.")
        return workspace

    def _migrate(self, old: int) -> None:
        """Bring a schema 1 or 2 database to :data:`SCHEMA_VERSION`.

        1 -> 2 adds ``cases.orientation`` (None for every case: the header's); 2 -> 3 records
        the checksum of every file the database names that exists now (what ``vetseg check``
        compares against from then on). One SQLite transaction (DDL included), so a kill leaves
        the old schema untouched and the next open migrates again; the version is re-read
        inside it, so two commands opening the workspace at once migrate it once. Older vetseg
        refuses a newer database rather than ignoring what it cannot read.
        """
        with self.transaction():
            version = self.db.execute(
                "SELECT value FROM info WHERE key = 'schema_version'"
            ).fetchone()
            if int(version[0]) != old:
                return
            columns = {row["name"] for row in self.db.execute("PRAGMA table_info(cases)")}
            if "orientation" not in columns:
                self.db.execute("ALTER TABLE cases ADD COLUMN orientation TEXT")
            recorded = self.record_files(*(p for p in self.named_files() if self.path(p).is_file()))
            self.db.execute(
                "UPDATE info SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
            )
            self.audit(
                "migrate", {"schema_version": [old, SCHEMA_VERSION], "checksums_recorded": recorded}
            )

    def close(self) -> None:
        """Close the database (and release a lock still held)."""
        self._release_lock()
        self.db.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ changes
    @contextlib.contextmanager
    def changing(self) -> Iterator[None]:
        """Hold the workspace lock while changing it; sweep temp files a killed write left.

        A command that finds the lock held waits up to :attr:`lock_timeout` seconds for it.

        Raises:
            InputError: another vetseg command still holds the lock after the wait.
        """
        with self._locked(sweep=True):
            yield

    @contextlib.contextmanager
    def inspecting(self) -> Iterator[None]:
        """Hold the workspace lock to look at it whole (``vetseg check``); nothing is swept."""
        with self._locked(sweep=False):
            yield

    @contextlib.contextmanager
    def _locked(self, sweep: bool) -> Iterator[None]:
        if self._lock_handle is not None:  # re-entrant within one process
            yield
            return
        handle = open(self.root / LOCK_NAME, "a+")  # noqa: SIM115 - held across the block
        if fcntl is not None:
            deadline = time.monotonic() + self.lock_timeout
            while True:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        holder = _lock_holder(self.root / LOCK_NAME)
                        handle.close()
                        raise InputError(
                            f"{self.root}: another vetseg command{holder} is changing this "
                            "workspace; run this one again when it has finished."
                        ) from None
                    time.sleep(0.1)
            # Who holds it, for the message of a command that has to wait (pid, command).
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()} {now()} {command_line()}\n")
            handle.flush()
        self._lock_handle = handle
        try:
            if sweep:
                self._sweep_temporary_files()
            yield
        finally:
            self._release_lock()

    def _release_lock(self) -> None:
        if self._lock_handle is not None:
            self._lock_handle.close()  # closing the file releases the flock
            self._lock_handle = None

    def _sweep_temporary_files(self) -> None:
        # vetseg.fileutil.atomic_path names its temporaries ".<name>.tmp-*"; under the lock no
        # other vetseg process writes here, so any that exist belong to a killed command.
        for sub in ("data", "review", "models"):
            folder = self.root / sub
            if folder.is_dir():
                for stale in folder.rglob(".*.tmp-*"):
                    if stale.is_file():
                        stale.unlink(missing_ok=True)
        for stale in self.root.glob(f".{CONFIG_NAME.split('.')[0]}.tmp-*"):
            stale.unlink(missing_ok=True)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One SQLite write transaction (all or nothing, also under ``kill -9``)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def audit(self, action: str, details: Mapping[str, Any], command: str | None = None) -> None:
        """Append one row to the audit log (call inside the transaction of the change)."""
        self.db.execute(
            "INSERT INTO audit (at, action, command, details) VALUES (?, ?, ?, ?)",
            (now(), action, command or command_line(), json.dumps(details, default=str)),
        )

    def record_files(self, *paths: str | Path) -> int:
        """Record the SHA-256 of files the database names (call inside the change's transaction).

        Args:
            paths: files, absolute or relative to the workspace.

        Returns:
            How many were recorded. A path recorded before gets its new checksum (the latest
            ``review/<case>/prelabel.nii.gz`` is replaced by each pre-label).
        """
        for path in paths:
            given = Path(path)
            relative = self.relative(given) if given.is_absolute() else given.as_posix()
            digest, size = file_sha256(self.path(relative))
            self.db.execute(
                "INSERT OR REPLACE INTO files (path, sha256, size, recorded) VALUES (?, ?, ?, ?)",
                (relative, digest, size, now()),
            )
        return len(paths)

    def named_files(self) -> list[str]:
        """Every file the database names, relative to the workspace, sorted.

        Scans and labels of cases, pre-labels (and each case's latest ``prelabel.nii.gz``),
        corrected versions, and each model's ``model.json`` and ``model.safetensors``.
        """
        db = self.db
        names = {r[0] for r in db.execute("SELECT image FROM cases")}
        names |= {r[0] for r in db.execute("SELECT label FROM cases WHERE label IS NOT NULL")}
        names |= {r[0] for r in db.execute("SELECT path FROM prelabels")}
        names |= {
            f"review/{r[0]}/prelabel.nii.gz"
            for r in db.execute("SELECT DISTINCT case_id FROM prelabels")
        }
        names |= {r[0] for r in db.execute("SELECT path FROM corrections")}
        for (folder,) in db.execute("SELECT path FROM models"):
            names |= {f"{folder}/model.json", f"{folder}/model.safetensors"}
        return sorted(names)

    # ------------------------------------------------------------------ paths
    def path(self, relative: str | Path) -> Path:
        """A workspace-relative path as an absolute one."""
        return self.root / relative

    def relative(self, path: Path) -> str:
        """``path`` relative to the workspace (POSIX separators), as the database stores it."""
        return Path(path).resolve().relative_to(self.root.resolve()).as_posix()

    def review_dir(self, case_id: str) -> Path:
        return self.root / "review" / case_id

    # ------------------------------------------------------------------ queries
    def cases(self, state: str | None = None) -> list[CaseRecord]:
        """Registered cases, sorted by id (only those in ``state`` when given)."""
        if state is None:
            rows = self.db.execute("SELECT * FROM cases ORDER BY case_id")
        else:
            rows = self.db.execute("SELECT * FROM cases WHERE state = ? ORDER BY case_id", (state,))
        return [_record(CaseRecord, r) for r in rows]

    def case(self, case_id: str) -> CaseRecord:
        """One case.

        Raises:
            InputError: no case of that name.
        """
        row = self.db.execute("SELECT * FROM cases WHERE case_id = ?", (case_id,)).fetchone()
        if row is None:
            raise InputError(f"{self.root}: no case named {case_id!r} in this workspace.")
        return _record(CaseRecord, row)

    def models(self) -> list[ModelRecord]:
        """Every model, oldest first."""
        rows = self.db.execute("SELECT * FROM models ORDER BY registered, rowid")
        return [_record(ModelRecord, r, ("metrics", "data", "split")) for r in rows]

    def model(self, model_id: str) -> ModelRecord:
        row = self.db.execute("SELECT * FROM models WHERE model_id = ?", (model_id,)).fetchone()
        if row is None:
            raise InputError(f"{self.root}: no model {model_id!r} in this workspace.")
        return _record(ModelRecord, row, ("metrics", "data", "split"))

    def current_model(self) -> ModelRecord | None:
        """The model that pre-labels and that the next round starts from, if any."""
        row = self.db.execute("SELECT value FROM info WHERE key = 'current_model'").fetchone()
        return None if row is None else self.model(row[0])

    def require_current_model(self) -> ModelRecord:
        model = self.current_model()
        if model is None:
            raise InputError(
                f"{self.root}: no current model; import one with vetseg use {self.root} MODEL."
            )
        return model

    def prelabels(self, case_id: str | None = None) -> list[PrelabelRecord]:
        """Pre-labels, oldest first (of one case when given)."""
        if case_id is None:
            rows = self.db.execute("SELECT * FROM prelabels ORDER BY id")
        else:
            rows = self.db.execute(
                "SELECT * FROM prelabels WHERE case_id = ? ORDER BY id", (case_id,)
            )
        return [_record(PrelabelRecord, r) for r in rows]

    def latest_prelabel(self, case_id: str) -> PrelabelRecord | None:
        records = self.prelabels(case_id)
        return records[-1] if records else None

    def corrections(self, case_id: str | None = None) -> list[CorrectionRecord]:
        """Imported corrections, by case and version."""
        if case_id is None:
            rows = self.db.execute("SELECT * FROM corrections ORDER BY case_id, version")
        else:
            rows = self.db.execute(
                "SELECT * FROM corrections WHERE case_id = ? ORDER BY version", (case_id,)
            )
        return [_record(CorrectionRecord, r) for r in rows]

    def audit_log(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM audit ORDER BY id")
        return [{**dict(r), "details": json.loads(r["details"])} for r in rows]

    def training_labels(self) -> dict[str, str]:
        """Case id -> the label file a refine round trains on (labelled and corrected cases).

        A corrected case trains on its newest correction; a labelled case on its label.
        """
        out: dict[str, str] = {}
        for case in self.cases():
            if case.state == "labelled" and case.label:
                out[case.case_id] = case.label
            elif case.state == "corrected":
                versions = self.corrections(case.case_id)
                if versions:
                    out[case.case_id] = versions[-1].path
        return out

    def dataset(self, labels: Mapping[str, str], organs: Sequence[str]) -> Any:
        """A ``CaseDataset`` of the cases in ``labels`` (case id -> label file) for training.

        Args:
            labels: as :meth:`training_labels` returns (pinned for a round).
            organs: the model's organ order; workspace label ids are mapped to it by name.
        """
        from vetseg.data.datasets import Case, CaseDataset

        cases = tuple(
            Case(
                cid,
                self.path(self.case(cid).image),
                self.path(label),
                orientation=self.case(cid).orientation,
            )
            for cid, label in sorted(labels.items())
        )
        mapping: dict[int, str | None] = {i + 1: o for i, o in enumerate(self.settings.organs)}
        return CaseDataset(
            root=self.root,
            layout="workspace",
            cases=cases,
            organs=tuple(organs),
            mapping=mapping,
            synthetic=self.settings.synthetic,
            species=self.settings.species,
        )


def _lock_holder(lock: Path) -> str:
    """`` (pid 123: vetseg prelabel ws, since ...)`` from the lock file, or "" if unknown."""
    try:
        pid, since, command = lock.read_text().strip().split(" ", 2)
    except (OSError, ValueError):
        return ""
    return f" (pid {pid}: {command}, since {since})"


def file_sha256(path: Path) -> tuple[str, int]:
    """``(SHA-256 hex digest, size in bytes)`` of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _interrupted_init(root: Path) -> bool:
    """True for an empty folder or what a killed ``init`` leaves (database, empty sub-folders)."""
    for entry in root.iterdir():
        if entry.name in (DB_NAME, LOCK_NAME) or entry.name.startswith(f"{DB_NAME}-"):
            continue
        if entry.name in ("data", "review", "models") and entry.is_dir():
            if not any(entry.iterdir()):
                continue
        return False
    return True


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: no implicit transactions; :meth:`Workspace.transaction` opens them.
    db = sqlite3.connect(str(path), isolation_level=None, timeout=30.0)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode = WAL")
    # FULL: a committed transaction survives a power cut too, not only a killed process.
    db.execute("PRAGMA synchronous = FULL")
    db.execute("PRAGMA foreign_keys = ON")
    db.executescript(_SCHEMA)
    return db


def default_organs(species: str) -> tuple[str, ...]:
    """The organ set of a known species.

    Raises:
        InputError: an unknown species (then ``--organs`` is needed).
    """
    if species not in SPECIES_ORGANS:
        raise InputError(
            f"species {species!r} has no built-in organ list ({', '.join(SPECIES_ORGANS)}); "
            "give the organs with --organs."
        )
    return SPECIES_ORGANS[species]


__all__ = [
    "STATES",
    "CaseRecord",
    "CorrectionRecord",
    "ModelRecord",
    "PrelabelRecord",
    "Workspace",
    "WorkspaceSettings",
    "default_organs",
]
