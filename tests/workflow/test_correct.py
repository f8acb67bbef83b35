"""vetseg correct: versions never overwritten, grid and id checks, correction effort."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from tests.workflow.conftest import Setup
from tests.workflow.helpers import META
from vetseg.errors import GridMismatchError, InputError, LabelMappingError
from vetseg.io.image import ImageMeta, read_label, write_image
from vetseg.workflow.correct import correct, correction_effort
from vetseg.workflow.prelabel import prelabel
from vetseg.workflow.status import print_status, status_report
from vetseg.workflow.workspace import Workspace


def test_correction_effort_counts_changed_voxels_against_drawing_from_nothing() -> None:
    corrected = np.zeros((2, 4, 4), np.uint8)
    corrected[0, :2, :2] = 1  # 4 organ voxels
    corrected[1, 0, :] = 2  # 4 more
    draft = corrected.copy()
    assert correction_effort(draft, corrected) == (0, 8, 0.0)  # accepted as drafted
    draft[0, 0, 0] = 0  # one missed voxel
    draft[1, 3, 3] = 1  # one false voxel
    draft[1, 0, 0] = 1  # one voxel of the wrong organ
    assert correction_effort(draft, corrected) == (3, 8, 3 / 8)
    assert correction_effort(None, corrected) == (8, 8, 1.0)  # drawn from nothing


def _prelabelled(setup: Setup, ws: Workspace) -> str:
    return prelabel(ws, cases=1).items[0].case_id


def test_each_import_is_a_new_version_and_nothing_is_overwritten(setup: Setup) -> None:
    with Workspace.open(setup.root) as ws:
        case_id = _prelabelled(setup, ws)
        truth = setup.truth[case_id]
        first = correct(ws, case_id, truth).record
        v1 = ws.path(first.path)
        v1_bytes = v1.read_bytes()
        # The vet edits again: one more slice of liver.
        labels, meta = read_label(truth)
        labels[0] = np.where(labels[0] == 0, 1, labels[0])
        edited = write_image(labels, meta, setup.inputs / "edited.nii.gz")
        second = correct(ws, case_id, edited).record
        assert (first.version, second.version) == (1, 2)
        assert v1.read_bytes() == v1_bytes
        assert [v.version for v in ws.corrections(case_id)] == [1, 2]
        assert ws.case(case_id).state == "corrected"
        assert ws.training_labels()[case_id] == second.path  # training uses the newest
        # Importing the same file again records nothing new.
        again = correct(ws, case_id, edited)
        assert not again.new and again.record.version == 2
        with pytest.raises(sqlite3.DatabaseError, match="never"):
            ws.db.execute("UPDATE corrections SET path = 'x'")
        with pytest.raises(sqlite3.DatabaseError, match="never"):
            ws.db.execute("DELETE FROM corrections")


def test_effort_is_measured_against_the_prelabel(setup: Setup) -> None:
    with Workspace.open(setup.root) as ws:
        case_id = _prelabelled(setup, ws)
        draft, _ = read_label(ws.review_dir(case_id) / "prelabel.nii.gz")
        truth, _ = read_label(setup.truth[case_id])
        record = correct(ws, case_id, setup.truth[case_id]).record
        assert record.changed_voxels == int(np.count_nonzero(draft != truth))
        assert record.drawn_voxels == int(np.count_nonzero(truth))
        assert record.effort == pytest.approx(record.changed_voxels / record.drawn_voxels)
        report = status_report(ws)
        entry = next(c for c in report["cases"] if c["case"] == case_id)
        assert entry["effort"] == pytest.approx(record.effort)
        assert entry["versions"][0]["version"] == 1
        print_status(report)  # renders without error


def test_unlabelled_case_corrected_counts_as_drawn_from_nothing(setup: Setup) -> None:
    with Workspace.open(setup.root) as ws:
        record = correct(ws, "new3", setup.truth["new3"]).record
    assert record.effort == 1.0 and record.prelabel_id is None


def test_wrong_grid_wrong_ids_labelled_case_and_empty_file_are_refused(
    setup: Setup, tmp_path: Path
) -> None:
    labels, _ = read_label(setup.truth["new0"])
    shifted = write_image(
        labels, ImageMeta(META.spacing, origin=(9.0, 0.0, 0.0)), tmp_path / "shifted.nii.gz"
    )
    unknown = write_image(np.where(labels == 2, 5, labels), META, tmp_path / "ids.nii.gz")
    empty = write_image(np.zeros_like(labels), META, tmp_path / "empty.nii.gz")
    with Workspace.open(setup.root) as ws:
        with pytest.raises(GridMismatchError):
            correct(ws, "new0", shifted)
        with pytest.raises(LabelMappingError, match="5"):
            correct(ws, "new0", unknown)
        with pytest.raises(InputError, match="no organ voxels"):
            correct(ws, "new0", empty)
        with pytest.raises(InputError, match="registered with its label"):
            correct(ws, "lab0", setup.truth["new0"])
        with pytest.raises(InputError, match="no case named"):
            correct(ws, "nobody", setup.truth["new0"])
        assert ws.corrections() == []
        assert ws.case("new0").state == "unlabelled"
    assert not list((setup.root / "review").rglob("corrected_*"))


def test_slicer_segment_names_win_over_renumbered_ids(setup: Setup, tmp_path: Path) -> None:
    labels, _ = read_label(setup.truth["new1"])
    renumbered = np.select([labels == 1, labels == 2], [2, 1], 0).astype(np.uint8)
    seg = write_image(
        renumbered, META, tmp_path / "vet.seg.nrrd", segment_names={1: "Spleen", 2: "Liver"}
    )
    with Workspace.open(setup.root) as ws:
        record = correct(ws, "new1", seg).record
        stored, _ = read_label(ws.path(record.path))
    np.testing.assert_array_equal(stored, labels)


def test_an_orphan_version_file_is_adopted_or_skipped_never_replaced(setup: Setup) -> None:
    """What a kill between writing the file and committing its row leaves behind."""
    folder = setup.root / "review" / "new2"
    truth, meta = read_label(setup.truth["new2"])
    write_image(truth, meta, folder / "corrected_v001.nii.gz")  # same label: adopted
    with Workspace.open(setup.root) as ws:
        assert correct(ws, "new2", setup.truth["new2"]).record.version == 1
    other = np.zeros_like(truth)
    other[2, 5:9, 5:9] = 1
    write_image(other, meta, folder / "corrected_v002.nii.gz")  # another label: kept as is
    orphan_bytes = (folder / "corrected_v002.nii.gz").read_bytes()
    edited = truth.copy()
    edited[0] = 1
    edited_file = write_image(edited, meta, setup.inputs / "new2_edit.nii.gz")
    with Workspace.open(setup.root) as ws:
        record = correct(ws, "new2", edited_file).record
    assert record.version == 3
    assert (folder / "corrected_v002.nii.gz").read_bytes() == orphan_bytes
