"""A few of benchmarks/reliability.py's random kill trials and one concurrent pair, in CI.

The benchmark runs 200 trials by hand; here the same code runs one trial per command of four
(``refine``'s kill and resume is tested in test_interrupt.py) and two pre-labels at once.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import reliability as rb  # noqa: E402

pytestmark = pytest.mark.slow

COMMANDS = ("prelabel", "correct", "segment", "add")


@pytest.fixture(scope="module")
def kit_and_refs(tmp_path_factory: pytest.TempPathFactory) -> tuple[rb.Kit, rb.References]:
    base = tmp_path_factory.mktemp("reliability")
    kit = rb.build_kit(base / "kit", epochs=2, steps=2)
    return kit, rb.references(kit, base, COMMANDS)


def test_reference_outcomes_hold_what_the_commands_made(
    kit_and_refs: tuple[rb.Kit, rb.References],
) -> None:
    """The comparison has teeth: each reference differs from the untouched template."""
    kit, refs = kit_and_refs
    ws, out = rb.fresh_copy(kit, kit.base.parent / "untouched")
    untouched = rb.outcome(ws, out)
    for command in COMMANDS:
        assert refs.outcomes[command] != untouched, command
    assert len(refs.outcomes["prelabel"]["prelabels"]) == 3  # new0, new2, new3 (new1 corrected)
    assert [v[1] for v in refs.outcomes["correct"]["corrections"]] == [1, 2, 3]


def test_killed_commands_rerun_to_the_uninterrupted_outcome(
    kit_and_refs: tuple[rb.Kit, rb.References], tmp_path: Path
) -> None:
    kit, refs = kit_and_refs
    failures = tmp_path / "failures"
    trials = rb.kill_trials(kit, refs, len(COMMANDS), 0, tmp_path, failures, COMMANDS)
    assert [t.command for t in trials] == list(COMMANDS)
    logs = sorted(failures.glob("*.log")) if failures.is_dir() else []
    assert all(t.survived for t in trials), "\n\n".join(p.read_text() for p in logs)


def test_a_trial_that_loses_data_fails(
    kit_and_refs: tuple[rb.Kit, rb.References], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A re-run that damaged a corrected version would be caught (the harness can fail)."""
    kit, refs = kit_and_refs
    rerun = rb.run_in_process

    def damaging(args: list[str]) -> tuple[int, str]:
        code, output = rerun(args)
        victim = next(Path(args[1]).glob("review/new1/corrected_v001.nii.gz"))
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))
        return code, output

    monkeypatch.setattr(rb, "run_in_process", damaging)
    trial, log = rb.kill_trial(kit, refs, 0, "correct", random.Random(0), tmp_path)
    assert not trial.survived
    assert any("corrected_v001" in p for p in trial.problems), log


def test_two_prelabels_at_once_leave_a_sound_workspace(
    kit_and_refs: tuple[rb.Kit, rb.References], tmp_path: Path
) -> None:
    kit, _ = kit_and_refs
    result, problems, log, _ = rb.concurrent_pair(kit, "prelabel", "prelabel", 0.2, tmp_path)
    assert not problems, log
    assert result in ("both succeeded", "one refused with the lock message")
