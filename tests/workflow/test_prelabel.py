"""S102: pre-labels in the scan's geometry, uncertainty scores and queue order, strategies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.workflow.conftest import Setup, make_workspace
from tests.workflow.helpers import tiny_model, write_case
from vetseg.config import PreprocessConfig
from vetseg.errors import InputError
from vetseg.io.image import ImageMeta, read_image, read_label
from vetseg.workflow.prelabel import prelabel, review_queue, uncertainty_score
from vetseg.workflow.register import add_scans, use_model
from vetseg.workflow.workspace import Workspace


class ScaledInput(nn.Module):
    """Logits = scale * normalised input + bias, for every organ: a model of known certainty."""

    def __init__(self, scale: float, bias: float = 0.0, n_organs: int = 2) -> None:
        super().__init__()
        self.scale, self.bias, self.n_organs = scale, bias, n_organs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.scale * x + self.bias).repeat(1, self.n_organs, 1, 1)


def test_uncertainty_is_low_for_crisp_and_high_for_unsure_probabilities() -> None:
    pre = PreprocessConfig(size=32)
    rng = np.random.default_rng(0)
    blob = np.zeros((4, 32, 32), np.float32)
    blob[:, 8:20, 8:20] = 500.0  # two levels: normalised far from 0, the model is sure
    noise = rng.normal(0, 100, (4, 32, 32)).astype(np.float32)  # mostly near the mean
    crisp = uncertainty_score(ScaledInput(30.0), pre, blob)
    unsure = uncertainty_score(ScaledInput(30.0), pre, noise)
    assert crisp < 0.01 < unsure
    # The same scan under a less decided model is more uncertain.
    assert uncertainty_score(ScaledInput(0.5), pre, noise) > unsure
    # Only the body counts: at p = 0.5 everywhere, each of the 2 organs adds 1 bit per body
    # voxel, however much air surrounds the body; a scan of air alone scores 0.
    half_air = noise.copy()
    half_air[:, :, :16] = -1000.0
    assert uncertainty_score(ScaledInput(0.0), pre, half_air) == pytest.approx(2.0)
    assert uncertainty_score(ScaledInput(0.0), pre, np.full_like(noise, -1000.0)) == 0.0


def test_prelabel_writes_labels_in_the_scan_geometry_and_moves_states(setup: Setup) -> None:
    with Workspace.open(setup.root) as ws:
        result = prelabel(ws, cases=2, strategy="uncertainty")
        assert result.run == 1 and len(result.items) == 2
        for item in result.items:
            case = ws.case(item.case_id)
            assert case.state == "prelabelled"
            image, meta = read_image(ws.path(case.image))
            current = ws.review_dir(item.case_id) / "prelabel.nii.gz"
            labels, label_meta = read_label(current, reference=meta, reference_shape=image.shape)
            assert labels.shape == image.shape and label_meta == meta
            versioned = ws.path(item.path)
            assert versioned.read_bytes() == current.read_bytes()
            assert versioned.name == f"{result.model_id}.nii.gz"
        assert sorted(c.case_id for c in ws.cases("unlabelled")) == sorted(
            set(setup.truth) - {i.case_id for i in result.items}
        )
        assert [a["action"] for a in ws.audit_log()][-4:] == [
            "prelabel-run",
            "prelabel",
            "prelabel",
            "prelabel-done",
        ]


def test_uncertainty_strategy_takes_the_most_uncertain_and_queues_them_first(
    setup: Setup,
) -> None:
    with Workspace.open(setup.root) as ws:
        result = prelabel(ws, cases=2, strategy="uncertainty")
        scores = dict(
            ws.db.execute(
                "SELECT case_id, uncertainty FROM scores WHERE model_id = ?", (result.model_id,)
            ).fetchall()
        )
        assert set(scores) == set(setup.truth)  # every candidate was scored
        top_two = sorted(scores, key=lambda c: -scores[c])[:2]
        assert [i.case_id for i in result.items] == top_two
        assert [q["case"] for q in review_queue(ws)] == top_two
        uncertainties = [q["uncertainty"] for q in review_queue(ws)]
        assert uncertainties == sorted(uncertainties, reverse=True)
        # The next run takes the rest, still most uncertain first, queued after the first run.
        prelabel(ws, strategy="uncertainty")
        queue = [q["case"] for q in review_queue(ws)]
        rest = sorted(set(scores) - set(top_two), key=lambda c: -scores[c])
        assert queue == top_two + rest
        assert prelabel(ws).run is None  # nothing left


def test_random_strategy_is_reproducible_and_draws_anew_each_run(tmp_path) -> None:
    picks = []
    for attempt in range(2):
        setup = make_workspace(tmp_path / str(attempt), labelled=0, unlabelled=4)
        with Workspace.open(setup.root) as ws:
            first = [i.case_id for i in prelabel(ws, cases=2, strategy="random").items]
            second = [i.case_id for i in prelabel(ws, cases=2, strategy="random").items]
        assert not set(first) & set(second)
        picks.append((first, second))
    assert picks[0] == picks[1]


def test_refresh_redrafts_with_a_newer_model_and_keeps_the_old_draft(
    setup: Setup, tmp_path
) -> None:
    with Workspace.open(setup.root) as ws:
        old = prelabel(ws, cases=1)
        case_id = old.items[0].case_id
        newer = tiny_model(tmp_path / "newer", seed=3)
        use_model(ws, tmp_path / "newer")
        again = prelabel(ws, refresh=True)
        assert case_id in [i.case_id for i in again.items]
        drafts = ws.prelabels(case_id)
        assert [d.model_id for d in drafts] == [old.model_id, newer.model_id]
        assert all(ws.path(d.path).is_file() for d in drafts)


def test_prelabel_maps_model_organ_order_to_workspace_ids(tmp_path) -> None:
    # A model listing the organs the other way round: its id 1 is the workspace's id 2.
    setup = make_workspace(tmp_path, labelled=0, unlabelled=1, with_model=False)
    tiny_model(tmp_path / "swapped", organs=("spleen", "liver"), head_bias=(5.0, -5.0))
    with Workspace.open(setup.root) as ws:
        use_model(ws, tmp_path / "swapped")
        item = prelabel(ws).items[0]
        labels, _ = read_label(ws.path(item.path))
    assert set(np.unique(labels)) == {2}  # "spleen" everywhere


def test_prelabel_needs_a_current_model_and_a_known_strategy(tmp_path) -> None:
    setup = make_workspace(tmp_path, labelled=0, unlabelled=1, with_model=False)
    with Workspace.open(setup.root) as ws:
        with pytest.raises(InputError, match="no current model"):
            prelabel(ws)
        with pytest.raises(InputError, match="strategy"):
            prelabel(ws, strategy="greedy")


def test_oblique_scan_gets_its_prelabel_on_its_own_grid(setup: Setup, tmp_path) -> None:
    direction = (0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0)  # long axis stored elsewhere
    meta = ImageMeta(spacing=(2.0, 1.0, 1.0), origin=(3.0, 4.0, 5.0), direction=direction)
    image, _ = write_case(tmp_path / "odd", "oblique", seed=7, meta=meta)
    with Workspace.open(setup.root) as ws:
        add_scans(ws, [image])
        prelabel(ws)
        labels, label_meta = read_label(ws.review_dir("oblique") / "prelabel.nii.gz")
    assert label_meta == meta and labels.shape == read_image(image)[0].shape


def test_prelabel_in_a_workspace_opened_by_a_relative_path(tmp_path, monkeypatch) -> None:
    """`vetseg demo --out demo_out` opens demo_out/workspace: the pre-label's checksum must be
    recorded under its workspace path, not under the workspace folder twice."""
    from vetseg.workflow.check import check_workspace

    make_workspace(tmp_path, labelled=0, unlabelled=2)  # the workspace is tmp_path/ws
    monkeypatch.chdir(tmp_path)
    with Workspace.open("ws") as ws:
        (item,) = prelabel(ws, cases=1, strategy="random").items
        assert (tmp_path / "ws" / "review" / item.case_id / "prelabel.nii.gz").is_file()
        assert f"review/{item.case_id}/prelabel.nii.gz" in ws.named_files()
        assert check_workspace(ws).problems == []


def test_a_scan_without_air_gets_no_draft_and_is_named(tmp_path) -> None:
    """A scan stored as raw scanner values (HU + 1024: no air) in a HU workspace: `add`
    warned; pre-labelling it would draft nonsense, so it is skipped, named, and stays
    unlabelled, while the other cases get their drafts."""
    from tests.workflow.helpers import META, phantom
    from vetseg.io.image import write_image

    setup = make_workspace(tmp_path, labelled=0, unlabelled=2)
    image, _ = phantom(seed=7)
    raw = write_image(image.astype(np.int32) + 1024, META, tmp_path / "raw0.nii.gz")
    with Workspace.open(setup.root) as ws:
        assert add_scans(ws, [raw]).warnings  # told when it was added
        result = prelabel(ws)
        assert sorted(i.case_id for i in result.items) == ["new0", "new1"]
        assert [case for case, _ in result.skipped] == ["raw0"]
        assert "its lowest value is" in result.skipped[0][1] and "-1024" in result.skipped[0][1]
        assert ws.case("raw0").state == "unlabelled"
        assert not (ws.review_dir("raw0") / "prelabel.nii.gz").exists()
        assert ws.audit_log()[-1]["action"] == "prelabel-done"


def test_prelabel_command_names_the_skipped_scan(tmp_path) -> None:
    from typer.testing import CliRunner

    from tests.workflow.helpers import META, phantom
    from vetseg.cli import app
    from vetseg.io.image import write_image

    setup = make_workspace(tmp_path, labelled=0, unlabelled=1)
    image, _ = phantom(seed=7)
    raw = write_image(image.astype(np.int32) + 1024, META, tmp_path / "raw0.nii.gz")
    with Workspace.open(setup.root) as ws:
        add_scans(ws, [raw])
    result = CliRunner().invoke(app, ["prelabel", str(setup.root)])
    assert result.exit_code == 0, result.output
    assert "pre-labelled 1 case(s)" in result.stdout
    assert "skipped raw0 (no draft written): its lowest value is" in result.stderr


def test_a_scan_cut_by_the_field_of_view_gets_its_draft_and_a_warning(tmp_path) -> None:
    """The trunk cut at both sides on every slice: the draft is written (the vet corrects it)
    and the case, the command's stderr and the audit say that the field cuts the body."""
    from typer.testing import CliRunner

    from tests.workflow.helpers import META, phantom
    from vetseg.cli import app
    from vetseg.io.image import write_image

    setup = make_workspace(tmp_path, labelled=0, unlabelled=1)
    image, _ = phantom(seed=7)
    width = image.shape[2]
    cut = np.ascontiguousarray(image[:, :, width // 4 : 3 * width // 4])
    with Workspace.open(setup.root) as ws:
        add_scans(ws, [write_image(cut, META, tmp_path / "cut0.nii.gz")])
    result = CliRunner().invoke(app, ["prelabel", str(setup.root)])
    assert result.exit_code == 0, result.output
    assert "pre-labelled 2 case(s)" in result.stdout
    message = "warning: cut0: the body reaches the edge of the scanner's field of view"
    assert message in result.stderr
    assert result.stderr.count("warning:") == 1  # the uncut case has none
    with Workspace.open(setup.root) as ws:
        assert (ws.review_dir("cut0") / "prelabel.nii.gz").is_file()
        records = {
            r["details"]["case"]: r["details"] for r in ws.audit_log() if r["action"] == "prelabel"
        }
        assert records["cut0"]["field_cut_slices"][0] == records["cut0"]["field_cut_slices"][1]
        assert "field_cut_slices" not in records["new0"]
