"""S103: refine rounds, their record, and the promotion rule."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.workflow.conftest import Setup, make_workspace
from tests.workflow.helpers import ORGANS, tiny_model
from vetseg.config import AugmentConfig
from vetseg.data.identity import KnownCases
from vetseg.errors import InputError
from vetseg.models.files import ModelInfo, load_model, new_model_id, save_model
from vetseg.training.stages import prepare_data
from vetseg.workflow import rounds as rounds_module
from vetseg.workflow.correct import correct
from vetseg.workflow.register import set_current, use_model
from vetseg.workflow.rounds import promote, refine_round
from vetseg.workflow.workspace import Workspace


def _fake_training(head_bias: tuple[float, float]) -> Any:
    """Stand-in for training: the parent's weights with a fixed head, the real split."""

    def train(
        parent_path: Path,
        dataset: Any,
        out: Path,
        config: Any,
        progress: bool,
        keep_in_train: Any = (),
        check_units: bool = True,
    ) -> None:
        model, parent = load_model(parent_path)
        with torch.no_grad():
            model.head.weight.zero_()
            model.head.bias.copy_(torch.tensor(head_bias))
        prepared = prepare_data(
            dataset, parent.organs, config.seed, out / "train" / "splits.json",
            keep_in_train=keep_in_train,
        )  # fmt: skip
        info = ModelInfo(
            model_id=new_model_id("refine"),
            architecture=parent.architecture,
            organs=parent.organs,
            preprocess=config.preprocess,
            stage="refine",
            parent=parent.model_id,
            training={"split": prepared.recorded_split()},
        )
        save_model(model, out, info)

    return train


def _workspace_with_model(tmp_path: Path, head_bias: tuple[float, float]) -> Setup:
    setup = make_workspace(tmp_path, labelled=4, unlabelled=1, with_model=False)
    tiny_model(tmp_path / "parent", head_bias=head_bias)
    with Workspace.open(setup.root) as ws:
        use_model(ws, tmp_path / "parent")
    return setup


def test_promotion_rule_is_at_least_as_good() -> None:
    assert promote(0.80, 0.80) and promote(0.81, 0.80) and not promote(0.79, 0.80)


@pytest.mark.parametrize(
    ("parent_bias", "new_bias", "promoted"),
    [
        ((5.0, -5.0), (5.0, -5.0), True),  # as good on the same cases: promoted
        ((-5.0, -5.0), (5.0, -5.0), True),  # finds the liver where the parent found nothing
        ((5.0, -5.0), (-5.0, -5.0), False),  # finds nothing: kept, not promoted
    ],
)
def test_new_model_becomes_current_only_if_not_worse_on_the_same_cases(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    parent_bias: tuple[float, float],
    new_bias: tuple[float, float],
    promoted: bool,
) -> None:
    setup = _workspace_with_model(tmp_path, parent_bias)
    monkeypatch.setattr(rounds_module, "_train", _fake_training(new_bias))
    with Workspace.open(setup.root) as ws:
        parent = ws.require_current_model()
        result = refine_round(ws)
        assert result.promoted is promoted
        assert (result.new_val_dice >= result.parent_val_dice) is promoted
        current = ws.require_current_model().model_id
        assert current == (result.model_id if promoted else parent.model_id)
        new = ws.model(result.model_id)  # registered either way
        assert new.parent == parent.model_id and new.promoted is promoted
        assert ("NOT promoted" in result.message) is not promoted
        if not promoted:
            assert "stays current" in result.message and "not promoted" in new.note
        (row,) = ws.db.execute("SELECT status, val_cases FROM rounds").fetchall()
        assert row[0] == ("promoted" if promoted else "kept")
        assert json.loads(row[1]) == result.val_cases and len(result.val_cases) == 1


def test_validation_cases_are_new_to_the_parent_and_its_ancestors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = make_workspace(tmp_path, labelled=4, unlabelled=4, with_model=False)
    info = tiny_model(tmp_path / "parent")
    info.training = {"split": {"train": ["lab0", "lab1"], "val": ["lab2"], "test": ["lab3"]}}
    (tmp_path / "parent" / "model.json").write_text(json.dumps(info.to_json()))
    monkeypatch.setattr(rounds_module, "_train", _fake_training((5.0, -5.0)))
    with Workspace.open(setup.root) as ws:
        use_model(ws, tmp_path / "parent")
        for case_id in ("new0", "new1"):
            correct(ws, case_id, setup.truth[case_id])
        first = refine_round(ws)
        # A split recorded without digests (an older model file): known by name.
        old_style = KnownCases(names=frozenset({"lab0", "lab1", "lab2"}))
        assert rounds_module.seen_cases(ws, first.parent_id) == old_style
        split = ws.model(first.model_id).split
        assert {"lab0", "lab1", "lab2"} <= set(split["train"])
        assert not {"lab0", "lab1", "lab2"} & set(split["val"] + split["test"])
        assert "too few new cases" not in ws.model(first.model_id).note
        # The next round: what the first round's model and its parent saw stays in train.
        for case_id in ("new2", "new3"):
            correct(ws, case_id, setup.truth[case_id])
        set_current(ws, first.model_id)  # whether or not the rule promoted it
        second = refine_round(ws)
        known = rounds_module.seen_cases(ws, first.model_id)
        first_seen = split["train"] + split["val"]
        assert known.hashes == {split["hashes"][c] for c in first_seen}  # by content
        assert known.names == old_style.names
        seen = {"lab0", "lab1", "lab2", *first_seen}
        new_split = ws.model(second.model_id).split
        assert not seen & set(new_split["val"] + new_split["test"])
        assert second.val_seen_by_parent == []


def test_refine_needs_three_training_cases(tmp_path: Path) -> None:
    setup = make_workspace(tmp_path, labelled=2, unlabelled=1)
    with Workspace.open(setup.root) as ws, pytest.raises(InputError, match="at least 3"):
        refine_round(ws)


@pytest.mark.slow
def test_a_real_round_trains_from_the_parent_on_labelled_and_corrected_cases(
    tmp_path: Path,
) -> None:
    setup = make_workspace(tmp_path, labelled=3, unlabelled=3)
    with Workspace.open(setup.root) as ws:
        for case_id in ("new0", "new1"):
            correct(ws, case_id, setup.truth[case_id])
        parent = ws.require_current_model()
        config = ws.settings.refine_config(
            epochs=2, steps_per_epoch=2, batch_size=4, extend=0, lr=1e-3
        )
        config = dataclasses.replace(config, augment=AugmentConfig(enabled=False))
        result = refine_round(ws, config, progress=False)
        model = ws.model(result.model_id)
        assert model.parent == parent.model_id and model.stage == "refine"
        assert sorted(result.cases) == ["lab0", "lab1", "lab2", "new0", "new1"]
        split = model.split
        assert sorted(split["train"] + split["val"] + split["test"]) == sorted(result.cases)
        assert (len(split["train"]), len(split["val"]), len(split["test"])) == (3, 1, 1)
        assert result.val_cases == split["val"]
        assert "val_mean_dice" in model.metrics
        assert result.promoted == (result.new_val_dice >= result.parent_val_dice)
        info = json.loads((result.model_path / "model.json").read_text())
        assert info["parent"] == parent.model_id
        assert (
            info["preprocess"]
            == json.loads((ws.path(parent.path) / "model.json").read_text())["preprocess"]
        )
        lines = (result.model_path / "train" / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(x)["epoch"] for x in lines] == [1, 2]
        actions = [a["action"] for a in ws.audit_log()]
        assert actions[-2:] == ["refine-start", "refine"]


def test_a_round_interrupted_before_another_model_was_made_current_is_abandoned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = _workspace_with_model(tmp_path, (5.0, -5.0))
    monkeypatch.setattr(rounds_module, "_train", _fake_training((5.0, -5.0)))
    with Workspace.open(setup.root) as ws:
        old_parent = ws.require_current_model().model_id
        with ws.transaction():  # what a round killed during training leaves
            ws.db.execute(
                "INSERT INTO rounds (round, parent, out, cases, status, started)"
                " VALUES (1, ?, 'models/round-001', '{}', 'running', 'then')",
                (old_parent,),
            )
        tiny_model(tmp_path / "other", head_bias=(5.0, -5.0), seed=2)
        use_model(ws, tmp_path / "other")
        result = refine_round(ws)
        assert result.round == 2 and not result.resumed
        statuses = ws.db.execute("SELECT round, status FROM rounds ORDER BY round").fetchall()
        assert [tuple(r) for r in statuses] == [(1, "abandoned"), (2, "promoted")]


def test_refine_refuses_a_human_model_before_starting_a_round(tmp_path: Path) -> None:
    from vetseg.config import PreprocessConfig
    from vetseg.models.human import HumanOrganNet

    setup = make_workspace(tmp_path, labelled=3, unlabelled=0, with_model=False)
    human = HumanOrganNet(2, decoder_channels=(32, 24, 16, 16))
    info = ModelInfo(
        new_model_id("human"), human.architecture(), ("liver", "spleen"),
        PreprocessConfig(size=32), "human",
    )  # fmt: skip
    save_model(human, tmp_path / "human", info)
    with Workspace.open(setup.root) as ws:
        use_model(ws, tmp_path / "human")
        with pytest.raises(InputError, match="HumanOrganNet"):
            refine_round(ws)
        assert ws.db.execute("SELECT COUNT(*) FROM rounds").fetchone()[0] == 0


def _parent_trained_elsewhere(tmp_path: Path, setup: Setup, n: int) -> tuple[ModelInfo, list[str]]:
    """A parent whose split was made on another folder holding the workspace's labelled scans
    under other names (``lab<i>`` is ``rabbit_<i>`` there); returns it and the ``lab`` names of
    the cases it trained or selected on."""
    import shutil

    elsewhere = tmp_path / "parent_data"
    elsewhere.mkdir()
    for i in range(n):
        for ending in (".nii.gz", "_seg.nii.gz"):
            shutil.copy(setup.inputs / f"lab{i}{ending}", elsewhere / f"rabbit_{i}{ending}")
    ratios = (2, 1, 1) if n > 3 else (2, 1, 0)
    prepared = prepare_data(elsewhere, ORGANS, 0, tmp_path / "splits.json", ratios=ratios)
    seen = prepared.splits["train"] + prepared.splits["val"]
    info = tiny_model(tmp_path / "parent", head_bias=(5.0, -5.0))
    info.training = {"data": str(elsewhere), "split": prepared.recorded_split()}
    (tmp_path / "parent" / "model.json").write_text(json.dumps(info.to_json()))
    return info, sorted(c.replace("rabbit_", "lab") for c in seen)


def test_a_parent_case_under_another_name_is_seen_by_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's leak: the parent validated on ``rabbit_2``, the workspace holds the same scan
    as ``lab2``; a round must neither validate on it nor score the parent there."""
    setup = make_workspace(tmp_path, labelled=4, unlabelled=3, with_model=False)
    info, parent_seen = _parent_trained_elsewhere(tmp_path, setup, 4)
    monkeypatch.setattr(rounds_module, "_train", _fake_training((5.0, -5.0)))
    with Workspace.open(setup.root) as ws:
        use_model(ws, tmp_path / "parent")
        for case_id in ("new0", "new1", "new2"):
            correct(ws, case_id, setup.truth[case_id])
        known = rounds_module.seen_cases(ws, info.model_id)
        assert not known.names  # nothing is matched by name
        dataset = ws.dataset(ws.training_labels(), ORGANS)
        candidates = ["lab3", "new0", *parent_seen]
        assert rounds_module.seen_among(dataset, candidates, known) == parent_seen
        result = refine_round(ws)
        split = ws.model(result.model_id).split
        assert set(parent_seen) <= set(split["train"])
        assert not set(parent_seen) & set(split["val"] + split["test"])
        assert result.val_seen_by_parent == []
        logged = [a["details"] for a in ws.audit_log() if a["action"] == "refine"]
        assert logged[-1]["val_seen_by_parent"] == []


def test_a_round_with_too_few_new_cases_records_which_the_parent_saw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = make_workspace(tmp_path, labelled=3, unlabelled=0, with_model=False)
    _, parent_seen = _parent_trained_elsewhere(tmp_path, setup, 3)
    assert parent_seen == ["lab0", "lab1", "lab2"]  # 2 train + 1 val: every case
    monkeypatch.setattr(rounds_module, "_train", _fake_training((5.0, -5.0)))
    with Workspace.open(setup.root) as ws:
        use_model(ws, tmp_path / "parent")
        result = refine_round(ws)
        assert result.val_seen_by_parent == result.val_cases and len(result.val_cases) == 1
        assert "the parent saw 1 of the 1 validation case(s)" in ws.model(result.model_id).note
