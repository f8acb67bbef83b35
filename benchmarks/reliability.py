"""Nothing lost, nothing crashes (issue 15), measured: random kills, concurrent commands, fuzzing.

    python benchmarks/reliability.py          # 200 kill trials, 3 rounds of pairs, 300 s fuzz
    python benchmarks/reliability.py --quick  # 10 kill trials, 1 round of pairs, 30 s fuzz
    python benchmarks/reliability.py --trials 50 --fuzz-seconds 0

Three parts, on a tiny workspace (the workspace tests' 10 x 40 x 40 phantoms, 3 labelled and 4
unlabelled cases, two corrected versions of one case, a tiny model trained once at set-up):

Kill anywhere
    ``add``, ``prelabel``, ``correct``, ``refine`` and ``segment`` are each started as a real
    ``python -m vetseg`` process on a fresh copy of the workspace and killed with SIGKILL after a
    random delay; the re-run (in this process, through the same CLI) must finish, ``vetseg check``
    must pass, every corrected version that existed before must be there unchanged, and the
    outcome must equal that of an uninterrupted run (see :func:`outcome` for what is compared and
    what is not). When to kill is drawn on the child's own progress, with lengths from an
    uninterrupted run: 20% of the kills aim at start-up (a delay up to the moment that run
    touched its files: interpreter and imports), 55% at its work (a delay after the child
    touched its files, up to the rest of that run's length), 25% at a write (up to 50 ms after a
    temporary file of an atomic write appeared). At the kill the child is stopped (SIGSTOP) and
    its phase read from ``/proc``: ``start-up`` (none of its files touched), ``reading`` (an
    input file open), ``writing`` (a temporary file open or present), ``computing`` (anything
    else), ``exiting`` (its files closed after it printed something).

Concurrency
    Pairs of commands on one workspace at once: each must succeed, or be refused with the lock
    message (after waiting up to 5 s); then ``vetseg check`` and SQLite's integrity check pass.

Fuzzing
    Valid small NIfTI, NRRD, MetaImage, DICOM files and label maps, mutated by hypothesis (bytes
    flipped, files cut, header fields set to odd values), go through the readers ``segment``,
    ``add`` and ``info`` use. Anything but vetseg's own :class:`vetseg.errors.VetsegError` (or a
    clean read) is a crash. It runs in child processes, so that a crash of native code is
    counted too.

Writes ``benchmarks/results/reliability.json`` and, for each failed trial or crash, a log under
``benchmarks/results/reliability_failures/``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import platform
import random
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO / "src", REPO):  # vetseg, and the workspace tests' tiny phantoms and models
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import numpy as np  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
COMMANDS = ("add", "prelabel", "correct", "refine", "segment")
LOCK_WORDS = "another vetseg command"
#: Settings of the refine round of the trials: 2 short epochs (a few seconds).
REFINE_ARGS = (
    "--epochs", "2", "--freeze-epochs", "1", "--steps-per-epoch", "2", "--batch-size", "4",
    "--extend", "0", "--no-augment", "--lr", "1e-3",
)  # fmt: skip


def child_env() -> dict[str, str]:
    """Environment of a child vetseg process: this checkout, one thread (a shared machine)."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]),
    )
    return env


# --------------------------------------------------------------------------- the kit
@dataclasses.dataclass
class Kit:
    """A template workspace and the inputs of the commands tried on copies of it."""

    base: Path
    template: Path  # the workspace every trial starts from (copied, never changed)
    inputs: Path  # scans and labels outside the workspace

    def args(self, command: str, ws: Path, out: Path) -> list[str]:
        """The command line of ``command`` on the workspace copy ``ws`` (outputs of segment in
        ``out``)."""
        if command == "add":
            extra = [self.inputs / f"extra{i}.nii.gz" for i in range(2)]
            labels = [self.inputs / f"extra{i}_seg.nii.gz" for i in range(2)]
            return ["add", str(ws), *map(str, extra)] + [
                a for label in labels for a in ("--labels", str(label))
            ]
        if command == "prelabel":
            return ["prelabel", str(ws)]
        if command == "correct":  # version 3 of a case that has two corrected versions
            return ["correct", str(ws), "new1", str(self.inputs / "new1_v3.nii.gz")]
        if command == "refine":
            return ["refine", str(ws), *REFINE_ARGS]
        if command == "refine-long":  # holds the workspace longer than the 5 s lock wait
            args = ["refine", str(ws), *REFINE_ARGS]
            args[args.index("--steps-per-epoch") + 1] = "12"
            return args
        if command == "segment":
            model = current_model_folder(ws)
            scan = self.inputs / "new2.nii.gz"
            return ["segment", str(model), str(scan), "--out", str(out / "seg.nii.gz")] + [
                "--report",
                str(out / "organs"),
            ]
        raise ValueError(f"unknown command {command}")


def current_model_folder(ws: Path) -> Path:
    db = sqlite3.connect(f"file:{ws / 'vetseg.db'}?mode=ro", uri=True)
    try:
        (path,) = db.execute(
            "SELECT m.path FROM models m JOIN info i ON i.value = m.model_id "
            "WHERE i.key = 'current_model'"
        ).fetchone()
    finally:
        db.close()
    return ws / path


def build_kit(base: Path, epochs: int = 6, steps: int = 6) -> Kit:
    """The template workspace: tiny cases, a model trained for a few steps, corrected versions.

    Takes ~10 s (the training: ``epochs`` of ``steps`` steps of 8 tiles) on one thread.
    """
    import torch
    from tests.workflow.conftest import make_workspace
    from tests.workflow.helpers import write_case

    from vetseg.config import AugmentConfig
    from vetseg.io.image import read_label, write_image
    from vetseg.workflow.correct import correct
    from vetseg.workflow.rounds import refine_round
    from vetseg.workflow.workspace import Workspace

    torch.set_num_threads(1)
    setup = make_workspace(base, labelled=3, unlabelled=4)
    with Workspace.open(setup.root) as ws:
        # A model that has learnt something, so that drafts and segmentations are not empty.
        config = ws.settings.refine_config(
            epochs=epochs,
            freeze_epochs=1,
            extend=0,
            lr=3e-3,
            batch_size=8,
            steps_per_epoch=steps,
            seed=0,
        )
        config = dataclasses.replace(config, augment=AugmentConfig(enabled=False))
        refine_round(ws, config, progress=False)
        truth, meta = read_label(setup.truth["new1"])
        correct(ws, "new1", setup.truth["new1"])
        changed = truth.copy()
        changed[:, 14:17, :] = 0  # the vet erased a strip across the organs: version 2
        correct(ws, "new1", write_image(changed, meta, setup.inputs / "new1_v2.nii.gz"))
        if len(ws.corrections("new1")) != 2:
            raise RuntimeError("the kit's second correction was not recorded as a new version")
    changed[:, 21:24, :] = 0  # and another one: the version 3 the trials import
    write_image(changed, meta, setup.inputs / "new1_v3.nii.gz")
    for i in range(2):
        write_case(setup.inputs, f"extra{i}", seed=300 + i)
    template = base / "template"
    setup.root.rename(template)
    return Kit(base=base, template=template, inputs=setup.inputs)


def fresh_copy(kit: Kit, where: Path) -> tuple[Path, Path]:
    """A fresh workspace copy (``where/ws``) and an empty output folder (``where/out``)."""
    if where.exists():
        shutil.rmtree(where)
    shutil.copytree(kit.template, where / "ws")
    (where / "out").mkdir()
    return where / "ws", where / "out"


# --------------------------------------------------------------------------- outcomes
def _array_digest(path: Path) -> str:
    from vetseg.io.image import read_image

    array, meta = read_image(path, expect_3d=False)
    digest = hashlib.sha256(str((array.dtype.str, array.shape)).encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(repr((meta.spacing, meta.origin, meta.direction)).encode())
    return digest.hexdigest()


def _weights_digest(path: Path) -> str:
    from safetensors.numpy import load_file

    tensors = load_file(str(path))
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(tensors[name]).tobytes())
    return digest.hexdigest()


def outcome(ws: Path, out: Path) -> dict[str, Any]:
    """What a command's run should leave, whether it ran once or was killed and re-run.

    Compared: every label map and scan under ``data/``, ``review/`` and the segment outputs,
    voxel by voxel with its geometry; the database's cases and their states, pre-label runs,
    pre-labels (queue, uncertainty), scores, corrected versions (number, content checksum,
    changed voxels), rounds (status, cases, validation Dice) and models (stage, promoted, the
    weights tensor by tensor); the organ volumes of segment's report.

    Not compared, because they are not meant to repeat: times (``added``, ``created``,
    ``started``...), model ids (a time and a random suffix: models are matched by their order),
    the audit log (times and process ids; it is append-only, so a killed run's entries stay),
    the bytes of compressed files (compression is not part of the promise: the voxels are),
    ``model.json`` beyond the weights (training time), and training metrics files.
    """
    state: dict[str, Any] = {}
    db = sqlite3.connect(f"file:{ws / 'vetseg.db'}?mode=ro", uri=True)
    try:
        model_ids = [m for (m,) in db.execute("SELECT model_id FROM models ORDER BY rowid")]
        alias = {m: f"model{i}" for i, m in enumerate(model_ids)}

        def rows(sql: str) -> list[list[Any]]:
            return [
                [alias.get(v, v) if isinstance(v, str) else v for v in row]
                for row in db.execute(sql)
            ]

        state["cases"] = rows(
            "SELECT case_id, image, label, content_sha256, state, orientation FROM cases "
            "ORDER BY case_id"
        )
        state["models"] = rows(
            "SELECT model_id, parent, stage, path, promoted FROM models ORDER BY rowid"
        )
        state["weights"] = [
            _weights_digest(ws / p / "model.safetensors")
            for (p,) in db.execute("SELECT path FROM models ORDER BY rowid")
        ]
        state["current"] = rows("SELECT value FROM info WHERE key = 'current_model'")
        state["rounds"] = rows(
            "SELECT round, parent, out, cases, status, model_id, val_cases, parent_val_dice, "
            "new_val_dice FROM rounds ORDER BY round"
        )
        state["prelabel_runs"] = rows(
            "SELECT run, model_id, strategy, selected, status FROM prelabel_runs ORDER BY run"
        )
        state["prelabels"] = rows(
            "SELECT case_id, model_id, run, queue_rank, path, uncertainty, strategy "
            "FROM prelabels ORDER BY run, queue_rank"
        )
        state["scores"] = rows("SELECT case_id, model_id, uncertainty FROM scores ORDER BY 1, 2")
        state["corrections"] = rows(
            "SELECT case_id, version, path, content_sha256, changed_voxels, drawn_voxels "
            "FROM corrections ORDER BY case_id, version"
        )
    finally:
        db.close()
    images = sorted(
        p
        for folder in (ws / "data", ws / "review", out)
        for p in folder.rglob("*")
        if p.is_file() and p.name.endswith((".nii.gz", ".nii", ".nrrd")) and ".tmp-" not in p.name
    )
    state["voxels"] = {p.relative_to(ws.parent).as_posix(): _array_digest(p) for p in images}
    report = out / "organs.json"
    if report.is_file():
        organs = json.loads(report.read_text()).get("organs", [])
        state["report"] = [{k: o.get(k) for k in ("organ", "volume_ml", "voxels")} for o in organs]
    return state


def corrected_versions(ws: Path) -> dict[str, str]:
    """Every corrected version file with its SHA-256 (none may be lost or changed)."""
    return {
        p.relative_to(ws).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((ws / "review").rglob("corrected_v*"))
        if ".tmp-" not in p.name
    }


def check(ws: Path) -> list[str]:
    """``vetseg check``'s problems (empty: sound), and SQLite's own integrity check."""
    from vetseg.workflow.check import check_workspace
    from vetseg.workflow.workspace import Workspace

    with Workspace.open(ws) as workspace, workspace.inspecting():
        problems = list(check_workspace(workspace).problems)
    db = sqlite3.connect(ws / "vetseg.db")
    try:
        integrity = [r[0] for r in db.execute("PRAGMA integrity_check")]
    finally:
        db.close()
    if integrity != ["ok"]:
        problems.append(f"PRAGMA integrity_check: {integrity}")
    return problems


def run_in_process(args: list[str]) -> tuple[int, str]:
    """The CLI in this process (the re-run after a kill): exit code and output."""
    from typer.testing import CliRunner

    from vetseg.cli import app

    result = CliRunner().invoke(app, args)
    text = result.output + (result.stderr if result.stderr_bytes else "")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        text += "".join(traceback.format_exception(result.exception))
    return result.exit_code, text


# --------------------------------------------------------------------------- phases
def _open_paths(pid: int) -> list[str]:
    paths = []
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                paths.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
            parts = line.split(maxsplit=5)
            if len(parts) == 6:
                paths.append(parts[5])
    return paths


def phase_of(pid: int, roots: tuple[Path, ...]) -> str:
    """What process ``pid`` is doing with the command's files (see the module docstring)."""
    mine = [p for p in _open_paths(pid) if any(p.startswith(str(r)) for r in roots)]
    temporaries = [p for r in roots if r.is_dir() for p in r.rglob(".*.tmp-*")]
    if temporaries or any(".tmp-" in p for p in mine):
        return "writing"
    if not mine:
        return "start-up"
    data = (".nii.gz", ".nii", ".nrrd", ".safetensors", ".json", ".dcm")
    if any(p.endswith(data) for p in mine):
        return "reading"
    return "computing"


@dataclasses.dataclass
class Timeline:
    """An uninterrupted child run: its length and when it first touched its files."""

    seconds: float
    touched: float
    output: str


def start(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "vetseg", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=child_env(),
        cwd=REPO,
    )


def timed_run(args: list[str], roots: tuple[Path, ...]) -> Timeline:
    """Run a child to its end, watching when it leaves start-up (every 20 ms)."""
    began = time.monotonic()
    process = start(args)
    touched = None
    while process.poll() is None:
        if touched is None and phase_of(process.pid, roots) != "start-up":
            touched = time.monotonic() - began
        time.sleep(0.02)
    seconds = time.monotonic() - began
    output = process.stdout.read().decode() if process.stdout else ""
    if process.returncode != 0:
        raise RuntimeError(f"uninterrupted {args[0]} failed ({process.returncode}):\n{output}")
    return Timeline(seconds, touched if touched is not None else seconds, output)


def _temporaries(roots: tuple[Path, ...]) -> bool:
    return any(True for r in roots if r.is_dir() for _ in r.rglob(".*.tmp-*"))


def kill_after(
    args: list[str], aim: str, extra: float, roots: tuple[Path, ...]
) -> tuple[float, str, str]:
    """Start a child and SIGKILL it: (seconds after its start, phase at the kill, its output).

    ``aim`` says when, measured on the child's own progress (so that a machine slower than at
    the reference run moves the kill with it): ``start-up``: ``extra`` s after the start;
    ``working``: ``extra`` s after it first touched its files; ``writing``: ``extra`` s after a
    temporary file of an atomic write appeared (polled every 2 ms; a write quicker than that
    can be missed, and the child may then finish before the kill).
    """
    process = start(args)
    began = time.monotonic()
    if aim == "working":
        while process.poll() is None and phase_of(process.pid, roots) == "start-up":
            time.sleep(0.01)
    elif aim == "writing":
        while process.poll() is None and not _temporaries(roots):
            time.sleep(0.002)
    deadline = time.monotonic() + extra
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(min(0.005, max(0.0, deadline - time.monotonic())))
    delay = time.monotonic() - began
    if process.poll() is None:
        os.kill(process.pid, signal.SIGSTOP)  # hold it still while we look
        phase = phase_of(process.pid, roots)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    else:
        phase = "finished before the kill"
    output = process.stdout.read().decode(errors="replace") if process.stdout else ""
    if phase == "start-up" and output.strip():
        phase = "exiting"  # no file of its own open, but it has already said something
    return delay, phase, output


# --------------------------------------------------------------------------- kill trials
@dataclasses.dataclass
class References:
    """Per command: the uninterrupted run's timeline and outcome."""

    timelines: dict[str, Timeline]
    outcomes: dict[str, dict[str, Any]]


def references(kit: Kit, work: Path, commands: tuple[str, ...] = COMMANDS) -> References:
    timelines, outcomes = {}, {}
    for command in commands:
        ws, out = fresh_copy(kit, work / f"reference-{command}")
        timelines[command] = timed_run(kit.args(command, ws, out), (ws, out))
        outcomes[command] = outcome(ws, out)
    return References(timelines, outcomes)


@dataclasses.dataclass
class Trial:
    number: int
    command: str
    aim: str
    delay_s: float
    phase: str
    survived: bool
    seconds: float
    problems: list[str]


def _diff(expected: dict[str, Any], found: dict[str, Any]) -> list[str]:
    keys = sorted(set(expected) | set(found))
    return [
        f"outcome differs from the uninterrupted run in {k}: expected {expected.get(k)!r}, "
        f"found {found.get(k)!r}"
        for k in keys
        if expected.get(k) != found.get(k)
    ]


def kill_trial(
    kit: Kit, refs: References, number: int, command: str, rng: random.Random, work: Path
) -> tuple[Trial, str]:
    """One trial: copy, start, kill, re-run, check. Returns the trial and its log."""
    began = time.monotonic()
    ws, out = fresh_copy(kit, work / "trial")
    args = kit.args(command, ws, out)
    line = refs.timelines[command]
    aim = rng.choices(("start-up", "working", "writing"), weights=(0.2, 0.55, 0.25))[0]
    if aim == "start-up":
        extra = rng.uniform(0.0, line.touched)
    elif aim == "working":
        extra = rng.uniform(0.0, line.seconds - line.touched)
    else:
        extra = rng.uniform(0.0, 0.05)
    before = corrected_versions(ws)
    delay, phase, child_output = kill_after(args, aim, extra, (ws, out))
    if command == "refine" and _round_recorded(ws, refs.outcomes[command]):
        # Killed while exiting, its round recorded: a re-run would train the next round, as
        # it should. The user has what an uninterrupted run leaves; compare that.
        phase, code, rerun_output = "exiting (round recorded)", 0, "(no re-run: round recorded)"
    else:
        code, rerun_output = run_in_process(args)
    problems = [] if code == 0 else [f"re-run exit code {code}"]
    problems += [f"check: {p}" for p in check(ws)]
    after = corrected_versions(ws)
    problems += [
        f"corrected version {k} lost or changed" for k in before if after.get(k) != before[k]
    ]
    try:
        problems += _diff(refs.outcomes[command], outcome(ws, out))
    except Exception as exc:  # noqa: BLE001 - an unreadable outcome is a failed trial
        problems.append(f"outcome unreadable: {type(exc).__name__}: {exc}")
    trial = Trial(
        number,
        command,
        aim,
        round(delay, 3),
        phase,
        not problems,
        round(time.monotonic() - began, 2),
        problems,
    )
    log = "\n".join(
        [
            f"trial {number}: {command}, aimed at {aim}, killed after {delay:.3f} s ({phase})",
            f"command: vetseg {shlex.join(args)}",
            "--- killed child's output",
            child_output,
            f"--- re-run (exit {code})",
            rerun_output,
            "--- problems",
            *problems,
        ]
    )
    return trial, log


def _round_recorded(ws: Path, reference: dict[str, Any]) -> bool:
    """Whether the last round of the uninterrupted run is recorded as finished in ``ws``."""
    last = reference["rounds"][-1][0]
    db = sqlite3.connect(f"file:{ws / 'vetseg.db'}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT status FROM rounds WHERE round = ?", (last,)).fetchone()
    finally:
        db.close()
    return row is not None and row[0] != "running"


def kill_trials(
    kit: Kit,
    refs: References,
    trials: int,
    seed: int,
    work: Path,
    failures: Path | None,
    commands: tuple[str, ...] = COMMANDS,
    minutes: float | None = None,
) -> list[Trial]:
    """``trials`` kill trials, the commands taking turns; failing ones' logs in ``failures``.

    With ``minutes``, no trial starts after that time (a shared machine can be slow).
    """
    rng = random.Random(seed)
    done: list[Trial] = []
    stop = time.monotonic() + minutes * 60 if minutes else float("inf")
    for number in range(trials):
        if time.monotonic() > stop:
            print(f"  stopped after {number} trials: --kill-minutes {minutes:g} spent", flush=True)
            break
        command = commands[number % len(commands)]
        trial, log = kill_trial(kit, refs, number, command, rng, work)
        done.append(trial)
        status = "ok" if trial.survived else "FAILED"
        print(
            f"  trial {number:>3} {command:<8} {trial.aim:<8} kill at {trial.delay_s:6.3f} s "
            f"{trial.phase:<24} {status} ({trial.seconds:.1f} s)",
            flush=True,
        )
        if not trial.survived and failures is not None:
            failures.mkdir(parents=True, exist_ok=True)
            (failures / f"kill-trial-{number:03d}-{command}.log").write_text(log)
    return done


# --------------------------------------------------------------------------- concurrency
PAIRS = (
    ("prelabel", "prelabel"),
    ("refine", "correct"),
    ("correct", "correct"),
    ("add", "prelabel"),
    ("refine", "prelabel"),
    ("refine-long", "correct"),
)


def concurrent_pair(
    kit: Kit, first: str, second: str, offset: float, work: Path
) -> tuple[str, list[str], str]:
    """Start two commands on one workspace ``offset`` s apart: (outcome, problems, log)."""
    ws, out = fresh_copy(kit, work / "pair")
    before = corrected_versions(ws)
    began = time.monotonic()
    one = start(kit.args(first, ws, out))
    time.sleep(offset)
    two = start(kit.args(second, ws, out / "second"))
    results, ended = [], []
    for process in (one, two):
        output, _ = process.communicate(timeout=600)
        ended.append(round(time.monotonic() - began, 2))
        results.append((process.returncode, output.decode(errors="replace")))
    problems = []
    refused = 0
    for name, (code, output) in zip((first, second), results, strict=True):
        last = output.strip().splitlines()[-1] if output.strip() else ""
        if code == 2 and LOCK_WORDS in last:
            refused += 1
        elif code != 0:
            problems.append(f"{name}: exit code {code}: {last}")
    problems += [f"check: {p}" for p in check(ws)]
    after = corrected_versions(ws)
    problems += [
        f"corrected version {k} lost or changed" for k in before if after.get(k) != before[k]
    ]
    db = sqlite3.connect(ws / "vetseg.db")
    try:
        drafts = db.execute(
            "SELECT case_id, model_id, COUNT(*) FROM prelabels GROUP BY 1, 2 HAVING COUNT(*) > 1"
        ).fetchall()
    finally:
        db.close()
    problems += [f"case {c} pre-labelled {n} times by one model" for c, _, n in drafts]
    result = "both succeeded" if refused == 0 else "one refused with the lock message"
    if refused == 2:
        result = "both refused"
        problems.append("both commands refused")
    log = "\n".join(
        [f"{first} + {second} (second {offset:.2f} s later): {result}"]
        + [f"--- {n} (exit {c})\n{o}" for n, (c, o) in zip((first, second), results, strict=True)]
        + ["--- problems", *problems]
    )
    return result, problems, log, ended


def concurrency(
    kit: Kit, repeats: int, seed: int, work: Path, failures: Path | None
) -> list[dict[str, Any]]:
    rng = random.Random(seed + 1)
    done = []
    for repeat in range(repeats):
        for first, second in PAIRS:
            offset = rng.uniform(0.0, 1.0)
            result, problems, log, ended = concurrent_pair(kit, first, second, offset, work)
            done.append(
                {
                    "pair": f"{first} + {second}",
                    "offset_s": round(offset, 3),
                    "ended_s": ended,
                    "outcome": result,
                    "sound": not problems,
                    "problems": problems,
                }
            )
            print(
                f"  pair {first} + {second} (+{offset:.2f} s): {result}"
                f"{'' if not problems else ' FAILED'}",
                flush=True,
            )
            if problems and failures is not None:
                failures.mkdir(parents=True, exist_ok=True)
                (failures / f"pair-{repeat}-{first}-{second}.log").write_text(log)
    return done


# --------------------------------------------------------------------------- fuzzing
def fuzz_seeds(folder: Path) -> dict[str, Path]:
    """Valid small inputs of every kind the readers take."""
    from tests import hostile as h

    from vetseg.io.image import write_image

    folder.mkdir(parents=True, exist_ok=True)
    scan = h.volume()
    labels = np.zeros(h.SHAPE, np.uint8)
    labels[1:5, 4:10, 4:10] = 1
    labels[2:4, 10:14, 2:6] = 2
    seeds = {
        "nifti": write_image(scan, h.META, folder / "scan.nii"),
        "nifti_gz": write_image(scan, h.META, folder / "scan.nii.gz"),
        "nrrd": write_image(scan, h.META, folder / "scan.nrrd"),
        "mha": write_image(scan, h.META, folder / "scan.mha"),
        "label_nifti": write_image(labels, h.META, folder / "label.nii"),
        "label_nrrd": write_image(labels, h.META, folder / "label.nrrd"),
    }
    dicom = folder / "dicom"
    h.dicom_series(dicom, shape=(4, 16, 16))
    seeds["dicom"] = dicom
    return seeds


#: NIfTI-1 header fields: (offset, struct format of one value, count).
NIFTI_FIELDS = {
    "sizeof_hdr": (0, "i", 1), "dim": (40, "h", 8), "datatype": (70, "h", 1),
    "bitpix": (72, "h", 1), "pixdim": (76, "f", 8), "vox_offset": (108, "f", 1),
    "scl_slope": (112, "f", 1), "scl_inter": (116, "f", 1), "qform_code": (252, "h", 1),
    "sform_code": (254, "h", 1), "quatern": (256, "f", 6), "srow": (280, "f", 12),
    "magic": (344, "i", 1),
}  # fmt: skip
NRRD_FIELDS = ("type", "dimension", "sizes", "space directions", "space origin", "encoding",
               "endian", "space", "kinds")  # fmt: skip
DICOM_TAGS = (
    "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
    "SamplesPerPixel", "PhotometricInterpretation", "ImagePositionPatient",
    "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "RescaleSlope",
    "RescaleIntercept", "NumberOfFrames", "Modality", "SeriesInstanceUID",
)  # fmt: skip
ODD_INTS = (0, 1, -1, 2, 3, 4, 7, 8, 16, 32, 64, 255, 256, 511, 1024, 32767, -32768, 65535,
            2**31 - 1, -(2**31))  # fmt: skip
ODD_FLOATS = (0.0, -0.0, 1.0, -1.0, 1e-30, 1e30, 3.4e38, float("nan"), float("inf"),
              float("-inf"), 0.5, 2.0, 1000.0)  # fmt: skip
ODD_TEXT = ("", "0", "-1", "1 1", "nan", "inf", "1e400", "99999999999", "16 16 0",
            "16 16 99999", "(1,0,0) (0,1,0)", "(nan,0,0) (0,nan,0) (0,0,nan)", "none",
            "gzip", "raw", "ascii", "bzip2", "big", "double", "int64", "block", "\x00",
            "16 16 6 3", "(0,0,0) (0,0,0) (0,0,0)")  # fmt: skip


def mutate(seed: Path, recipe: dict[str, Any], folder: Path) -> Path:
    """Apply one drawn recipe to a copy of ``seed`` in ``folder`` (a fresh folder)."""
    import gzip
    import struct

    if seed.is_dir():  # a DICOM series: change one slice
        target = folder / "series"
        shutil.copytree(seed, target)
        files = sorted(target.iterdir())
        victim = files[recipe["slice"] % len(files)]
        if recipe["kind"] == "field":
            import pydicom

            ds = pydicom.dcmread(victim, force=True)
            tag, value = recipe["field"], recipe["value"]
            with contextlib.suppress(Exception):  # an unsettable value: leave the file valid
                setattr(ds, DICOM_TAGS[tag % len(DICOM_TAGS)], value)
                ds.save_as(victim)
            return target
        victim.write_bytes(bytes(_byte_mutation(bytearray(victim.read_bytes()), recipe)))
        return target
    data = bytearray(seed.read_bytes())
    compressed = seed.name.endswith(".gz")
    if compressed:
        data = bytearray(gzip.decompress(bytes(data)))
    if recipe["kind"] == "field" and seed.suffix in (".nii", ".gz"):
        name = list(NIFTI_FIELDS)[recipe["field"] % len(NIFTI_FIELDS)]
        offset, fmt, count = NIFTI_FIELDS[name]
        index = recipe["index"] % count
        value = recipe["value"]
        if fmt in "hi":
            value = int(value) if isinstance(value, int) else ODD_INTS[recipe["index"] % 20]
            value = max(-(2 ** (8 * struct.calcsize(fmt) - 1)), value)
            value = min(2 ** (8 * struct.calcsize(fmt) - 1) - 1, value)
        else:
            value = float(value) if not isinstance(value, str) else 1.0
        struct.pack_into("<" + fmt, data, offset + index * struct.calcsize(fmt), value)
    elif recipe["kind"] == "field" and seed.suffix in (".nrrd", ".mha"):
        text_end = data.find(b"\n\n") if seed.suffix == ".nrrd" else data.find(b"ElementDataFile")
        header = data[: max(text_end, 0)].decode("latin-1").split("\n")
        key = NRRD_FIELDS[recipe["field"] % len(NRRD_FIELDS)]
        value = recipe["value"] if isinstance(recipe["value"], str) else str(recipe["value"])
        for i, line in enumerate(header):
            if line.lower().startswith(key) and (":" in line or "=" in line):
                sep = ":" if seed.suffix == ".nrrd" else "="
                header[i] = line.split(sep)[0] + sep + " " + value
                break
        data = bytearray("\n".join(header).encode("latin-1")) + data[max(text_end, 0) :]
    else:
        data = _byte_mutation(data, recipe)
    path = folder / seed.name
    path.write_bytes(gzip.compress(bytes(data)) if compressed and recipe["regzip"] else data)
    return path


def _byte_mutation(data: bytearray, recipe: dict[str, Any]) -> bytearray:
    if recipe["kind"] == "truncate":
        return data[: int(len(data) * recipe["fraction"])]
    for position, value in recipe["flips"]:
        # Most of these files' header lies in the first 400 bytes: aim half of the flips there.
        limit = len(data) if position < 0.5 else min(len(data), 400)
        if limit:
            data[int(abs(position) * (limit - 1)) % limit] = value
    return data


def read_through(path: Path, kind: str) -> str:
    """The readers of segment / add (scan and label), and info: 'ok' or 'refused'."""
    from vetseg.errors import VetsegError
    from vetseg.io.image import read_label, read_scan
    from vetseg.io.info import describe

    outcomes = []
    for reader in ("scan", "label", "info"):
        try:
            if reader == "scan":
                read_scan(path)
            elif reader == "label":
                from tests import hostile as h

                read_label(path, reference=h.META, reference_shape=h.SHAPE)
            else:
                describe(path)
            outcomes.append("ok")
        except VetsegError:
            outcomes.append("refused")
    del kind
    return "ok" if "ok" in outcomes else "refused"


def fuzz_worker(seconds: float, seed: int, work: Path, report: Path) -> None:
    """Child process: fuzz until ``seconds`` have passed; write counts and crashes to ``report``.

    Before each input it writes the input's recipe to ``report.current`` so that the parent can
    name the input that killed it.
    """
    import warnings

    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st

    warnings.simplefilter("ignore")  # pydicom and numpy complain about the mutants, as they may
    seeds = fuzz_seeds(work / "seeds")
    names = sorted(seeds)
    value = st.one_of(
        st.sampled_from(ODD_INTS),
        st.sampled_from(ODD_FLOATS),
        st.sampled_from(ODD_TEXT),
        st.integers(-(2**40), 2**40),
    )
    recipe_strategy = st.fixed_dictionaries(
        {
            "seed": st.sampled_from(names),
            "kind": st.sampled_from(("flip", "truncate", "field", "field")),
            "flips": st.lists(
                st.tuples(st.floats(-1.0, 1.0), st.integers(0, 255)), min_size=1, max_size=8
            ),
            "fraction": st.floats(0.0, 0.999),
            "field": st.integers(0, 100),
            "index": st.integers(0, 100),
            "value": value,
            "slice": st.integers(0, 10),
            "regzip": st.booleans(),
        }
    )
    counts: Counter[str] = Counter()
    crashes: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + seconds
    current = report.with_suffix(".current")

    def save() -> None:
        report.write_text(json.dumps({"counts": counts, "crashes": crashes}, indent=1))

    @hseed(seed)
    @settings(
        max_examples=10**9,
        deadline=None,
        database=None,
        phases=(Phase.generate,),
        suppress_health_check=list(HealthCheck),
    )
    @given(recipe=recipe_strategy)
    def one(recipe: dict[str, Any]) -> None:
        if time.monotonic() > deadline:
            raise _TimeUp
        folder = Path(tempfile.mkdtemp(dir=work))
        try:
            current.write_text(json.dumps(recipe, default=str))
            path = mutate(seeds[recipe["seed"]], recipe, folder)
            signal.alarm(20)  # a reader that hangs is a crash too
            try:
                counts[read_through(path, recipe["seed"])] += 1
            except Exception as exc:  # noqa: BLE001 - counting exactly these is the point
                counts["crash"] += 1
                frames = [
                    f for f in traceback.extract_tb(exc.__traceback__) if "vetseg" in f.filename
                ]
                where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
                key = f"{type(exc).__name__} at {where}"
                if key not in crashes:
                    keep = report.parent / f"crash-{len(crashes):02d}"
                    if keep.exists():
                        shutil.rmtree(keep)
                    shutil.copytree(folder, keep)
                    crashes[key] = {
                        "recipe": recipe,
                        "message": str(exc)[:300],
                        "traceback": traceback.format_exc()[-2000:],
                        "input": keep.as_posix(),
                    }
                    save()
            finally:
                signal.alarm(0)
            counts["inputs"] += 1
            if counts["inputs"] % 50 == 0:
                save()
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def alarm(*_: object) -> None:
        raise TimeoutError("a reader took more than 20 s")

    signal.signal(signal.SIGALRM, alarm)
    with contextlib.suppress(_TimeUp):
        one()
    save()
    current.unlink(missing_ok=True)


class _TimeUp(Exception):
    pass


def fuzz(seconds: float, seed: int, work: Path, failures: Path | None) -> dict[str, Any]:
    """Run fuzz workers in child processes until ``seconds`` have passed (restart after a
    native crash, which is counted with the input that caused it)."""
    deadline = time.monotonic() + seconds
    counts: Counter[str] = Counter()
    crashes: dict[str, Any] = {}
    worker = 0
    while time.monotonic() < deadline - 1:
        folder = work / f"fuzz-{worker}"
        folder.mkdir(parents=True, exist_ok=True)
        report = folder / "report.json"
        left = deadline - time.monotonic()
        code = subprocess.call(
            [sys.executable, __file__, "--fuzz-worker", str(folder), str(left), str(seed + worker)],
            env=child_env(),
            cwd=REPO,
        )
        if report.is_file():
            found = json.loads(report.read_text())
            counts.update(found["counts"])
            for key, crash in found["crashes"].items():
                crashes.setdefault(key, crash)
        current = report.with_suffix(".current")
        if code != 0:
            recipe = json.loads(current.read_text()) if current.is_file() else None
            crashes.setdefault(
                f"process died (exit {code})", {"recipe": recipe, "message": "native crash"}
            )
            counts["crash"] += 1
            counts["inputs"] += 1
        worker += 1
    if crashes and failures is not None:
        failures.mkdir(parents=True, exist_ok=True)
        (failures / "fuzz-crashes.json").write_text(json.dumps(crashes, indent=1, default=str))
    return {
        "seconds": seconds,
        "inputs_tried": counts["inputs"],
        "read_ok": counts["ok"],
        "refused_with_a_vetseg_error": counts["refused"],
        "crashes": counts["crash"],
        "distinct_crashes": sorted(crashes),
        "worker_processes": worker,
    }


# --------------------------------------------------------------------------- main
def summarise(trials: list[Trial]) -> dict[str, Any]:
    per_command: dict[str, dict[str, int]] = {}
    phases: Counter[str] = Counter()
    for t in trials:
        row = per_command.setdefault(t.command, {"run": 0, "survived": 0})
        row["run"] += 1
        row["survived"] += int(t.survived)
        phases[t.phase] += 1
    seconds = [t.seconds for t in trials]
    return {
        "run": len(trials),
        "survived": sum(t.survived for t in trials),
        "failed": [dataclasses.asdict(t) for t in trials if not t.survived],
        "per_command": per_command,
        "phases_at_kill": dict(phases),
        "phases_by_aim": {
            a: dict(Counter(t.phase for t in trials if t.aim == a))
            for a in ("start-up", "working", "writing")
        },
        "phases_by_command": {
            c: dict(Counter(t.phase for t in trials if t.command == c)) for c in per_command
        },
        "seconds_per_trial": {
            "mean": round(float(np.mean(seconds)), 2) if seconds else None,
            "max": round(float(np.max(seconds)), 2) if seconds else None,
        },
        "trials": [
            {k: v for k, v in dataclasses.asdict(t).items() if k != "problems"} for t in trials
        ],
    }


def corpus_size() -> dict[str, int]:
    """Inputs of the malformed corpus (tests/test_malformed_corpus.py), counted from its lists."""
    from tests import test_malformed_corpus as corpus

    return {
        "files": len(corpus.CORPUS),
        "review_uploads": len(corpus.UPLOADS),
        "well_formed_controls": len(corpus.CONTROLS),
    }


@contextlib.contextmanager
def _workdir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="vetseg-reliability-") as folder:
        yield Path(folder)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=200, help="Random kill trials.")
    parser.add_argument(
        "--kill-minutes", type=float, default=None, help="Start no kill trial after this."
    )
    parser.add_argument("--pair-repeats", type=int, default=3, help="Rounds of the pair list.")
    parser.add_argument("--fuzz-seconds", type=float, default=300.0)
    parser.add_argument("--quick", action="store_true", help="10 trials, 1 round, 30 s fuzz.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "reliability.json")
    parser.add_argument("--work", type=Path, default=None, help="Keep the work folder here.")
    parser.add_argument("--fuzz-worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.fuzz_worker:
        folder, seconds, seed = args.fuzz_worker
        fuzz_worker(float(seconds), int(seed), Path(folder), Path(folder) / "report.json")
        return {}
    if args.quick:
        args.trials, args.pair_repeats, args.fuzz_seconds = 10, 1, 30.0
    import torch

    torch.set_num_threads(1)
    failures = args.out.parent / "reliability_failures"
    started = time.monotonic()
    with _workdir(args.work) as work:
        t0 = time.monotonic()
        kit = build_kit(work / "kit")
        setup_s = time.monotonic() - t0
        print(f"kit built in {setup_s:.1f} s; uninterrupted reference runs:", flush=True)
        refs = references(kit, work)
        for command, line in refs.timelines.items():
            print(
                f"  {command:<8} {line.seconds:.2f} s (touches its files at {line.touched:.2f} s)"
            )
        print(f"{args.trials} kill trials:", flush=True)
        trials = kill_trials(
            kit, refs, args.trials, args.seed, work, failures, minutes=args.kill_minutes
        )
        print("concurrent pairs:", flush=True)
        pairs = concurrency(kit, args.pair_repeats, args.seed, work, failures)
        print(f"fuzzing for {args.fuzz_seconds:.0f} s:", flush=True)
        fuzzed = fuzz(args.fuzz_seconds, args.seed, work, failures) if args.fuzz_seconds > 0 else {}
        if fuzzed:
            print(
                f"  {fuzzed['inputs_tried']} inputs, {fuzzed['crashes']} crash(es): "
                f"{fuzzed['distinct_crashes']}"
            )
    result = {
        "command": "python benchmarks/reliability.py "
        + shlex.join(argv if argv is not None else sys.argv[1:]),
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores shared with other jobs, "
        f"Python {platform.python_version()}; children and re-runs on 1 thread, nice 19",
        "malformed_corpus_inputs": corpus_size(),
        "kit_setup_seconds": round(setup_s, 1),
        "uninterrupted_seconds": {
            c: {"total": round(t.seconds, 2), "touches_files_at": round(t.touched, 2)}
            for c, t in refs.timelines.items()
        },
        "kill_trials_asked": args.trials,
        "kill_trials": summarise(trials),
        "concurrent_pairs": {
            "run": len(pairs),
            "sound": sum(p["sound"] for p in pairs),
            "outcomes": dict(Counter(p["outcome"] for p in pairs)),
            "pairs": pairs,
        },
        "fuzzing": fuzzed,
        "total_seconds": round(time.monotonic() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    k = result["kill_trials"]
    print(
        f"kill trials: {k['survived']}/{k['run']} survived; pairs sound: "
        f"{result['concurrent_pairs']['sound']}/{len(pairs)}; wrote {args.out}"
    )
    return result


if __name__ == "__main__":
    main()
