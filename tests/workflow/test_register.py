"""vetseg add / use: checked registration, nothing registered on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.workflow.conftest import Setup, make_workspace
from tests.workflow.helpers import META, ORGANS, phantom, tiny_model, write_case
from vetseg.cli import app
from vetseg.errors import GridMismatchError, LabelMappingError, ModelFileError
from vetseg.io.image import ImageMeta, read_label, write_image
from vetseg.workflow.register import add_scans, case_id_for, use_model
from vetseg.workflow.workspace import Workspace


def test_add_registers_states_copies_scans_and_stores_workspace_ids(setup: Setup) -> None:
    with Workspace.open(setup.root) as ws:
        states = {c.case_id: c.state for c in ws.cases()}
        assert states == {
            **{f"lab{i}": "labelled" for i in range(3)},
            **{f"new{i}": "unlabelled" for i in range(4)},
        }
        case = ws.case("lab0")
        assert case.image == "data/lab0/image.nii.gz"
        assert ws.path(case.image).read_bytes() == (setup.inputs / "lab0.nii.gz").read_bytes()
        stored, _ = read_label(ws.path(case.label))
        original, _ = read_label(setup.inputs / "lab0_seg.nii.gz")
        np.testing.assert_array_equal(stored, original)


def test_labels_in_other_ids_are_mapped_by_a_names_file(tmp_path: Path) -> None:
    setup = make_workspace(tmp_path, labelled=0, unlabelled=0, with_model=False)
    image, label = write_case(tmp_path / "lab", "odd", seed=5, label_ids=(7, 3))
    names = tmp_path / "labels.json"
    names.write_text(json.dumps({"3": "spleen", "7": "liver"}))
    with Workspace.open(setup.root) as ws:
        add_scans(ws, [image], [label], mapping=str(names))
        stored, _ = read_label(ws.path(ws.case("odd").label))
    _, truth = phantom(5)
    np.testing.assert_array_equal(stored, truth)  # liver 1, spleen 2: the workspace's ids


def test_bad_grid_registers_nothing(tmp_path: Path) -> None:
    setup = make_workspace(tmp_path, labelled=0, unlabelled=0, with_model=False)
    good, good_label = write_case(tmp_path / "in", "good", seed=1)
    shifted = ImageMeta(spacing=META.spacing, origin=(5.0, 0.0, 0.0))
    bad, _ = write_case(tmp_path / "in", "bad", seed=2)
    _, bad_label = write_case(tmp_path / "other", "bad", seed=2, meta=shifted)
    with Workspace.open(setup.root) as ws:
        with pytest.raises(GridMismatchError):
            add_scans(ws, [good, bad], [good_label, bad_label])
        assert ws.cases() == []
        assert [a["action"] for a in ws.audit_log()] == ["init"]
    assert list((setup.root / "data").iterdir()) == []


def test_unknown_label_ids_register_nothing(tmp_path: Path) -> None:
    setup = make_workspace(tmp_path, labelled=0, unlabelled=0, with_model=False)
    image, label = write_case(tmp_path / "in", "c", seed=1, label_ids=(1, 9))
    with Workspace.open(setup.root) as ws:
        with pytest.raises(LabelMappingError, match="9"):
            add_scans(ws, [image], [label])
        assert ws.cases() == []


def test_add_again_is_idempotent_but_another_scan_under_the_same_id_is_refused(
    setup: Setup, tmp_path: Path
) -> None:
    with Workspace.open(setup.root) as ws:
        result = add_scans(ws, [setup.inputs / "new0.nii.gz"])
        assert (result.added, result.already) == ([], ["new0"])
        other, _ = write_case(tmp_path / "elsewhere", "new0", seed=999)
        with pytest.raises(Exception, match="already registered from another scan"):
            add_scans(ws, [other])


def test_case_ids_come_from_file_names() -> None:
    assert case_id_for(Path("/x/129S1_SVLMJ_.nii.gz")) == "129S1_SVLMJ_"
    assert case_id_for(Path("/x/rabbit 01.seg.nrrd")) == "rabbit_01"
    assert case_id_for(Path("/x/dicom_folder")) == "dicom_folder"


def test_8bit_scans_in_a_hu_workspace_get_a_window_warning(tmp_path: Path) -> None:
    setup = make_workspace(tmp_path, labelled=0, unlabelled=0, with_model=False)
    image = write_image(
        np.random.default_rng(0).integers(0, 255, (6, 20, 20)).astype(np.uint8),
        META,
        tmp_path / "head.nii.gz",
    )
    with Workspace.open(setup.root) as ws:
        result = add_scans(ws, [image])
    assert result.added == ["head"]
    assert "window" in result.warnings[0]


def test_raw_scanner_values_in_a_hu_workspace_get_a_units_warning(tmp_path: Path) -> None:
    """A scan stored without its rescale intercept (no air below -500) is added with a
    warning that names the fix; a scan in HU gets none."""
    setup = make_workspace(tmp_path, labelled=0, unlabelled=0, with_model=False)
    hu = np.full((6, 20, 20), 40, dtype=np.int16)
    hu[:, :3] = -1000  # air above the body
    raw = write_image((hu.astype(np.int32) + 1024).astype(np.uint16), META, tmp_path / "raw.nii.gz")
    fine = write_image(hu, META, tmp_path / "fine.nii.gz")
    with Workspace.open(setup.root) as ws:
        result = add_scans(ws, [raw, fine])
    assert sorted(result.added) == ["fine", "raw"]
    assert len(result.warnings) == 1
    assert "raw.nii.gz: no value below -500 (lowest 24)" in result.warnings[0]
    assert "-1024" in result.warnings[0] and "--skip-units-check" in result.warnings[0]


def test_use_imports_the_model_and_checks_organs_and_window(setup: Setup, tmp_path: Path) -> None:
    with Workspace.open(setup.root) as ws:
        current = ws.require_current_model()
        assert (ws.path(current.path) / "model.json").is_file()
        assert ws.path(current.path).parent == setup.root / "models"
        tiny_model(tmp_path / "other_organs", organs=("liver", "heart"))
        with pytest.raises(ModelFileError, match="segments liver, heart"):
            use_model(ws, tmp_path / "other_organs")
        tiny_model(tmp_path / "eight_bit", window=(0.0, 255.0))
        with pytest.raises(ModelFileError, match="window"):
            use_model(ws, tmp_path / "eight_bit")
        second = tiny_model(tmp_path / "second", seed=1)
        use_model(ws, tmp_path / "second")
        assert ws.require_current_model().model_id == second.model_id
        use_model(ws, current.model_id)  # back to the first, by id
        assert ws.require_current_model().model_id == current.model_id


def test_a_workspace_with_a_spacing_refuses_models_of_another_scale(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from vetseg.cli import app

    root = tmp_path / "ws"
    result = CliRunner().invoke(
        app,
        [
            "init",
            str(root),
            "--species",
            "rabbit",
            "--organs",
            "liver,spleen",
            "--spacing",
            "species",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "models at 0.525 mm per pixel" in result.output
    with Workspace.open(root) as ws:
        assert ws.settings.spacing == 0.525
        tiny_model(tmp_path / "legacy")
        with pytest.raises(ModelFileError, match="none \\(a legacy model\\)"):
            use_model(ws, tmp_path / "legacy")
        tiny_model(tmp_path / "coarse", spacing=1.05)
        with pytest.raises(ModelFileError, match="1.05 mm, this workspace's models at 0.525"):
            use_model(ws, tmp_path / "coarse")
        right = tiny_model(tmp_path / "right", spacing=0.525)
        assert use_model(ws, tmp_path / "right") == right.model_id


def test_cli_bad_input_is_one_sentence_and_exit_2(setup: Setup, tmp_path: Path) -> None:
    shifted = ImageMeta(spacing=META.spacing, origin=(5.0, 0.0, 0.0))
    _, bad_label = write_case(tmp_path / "other", "x", seed=2, meta=shifted)
    result = CliRunner().invoke(
        app, ["add", str(setup.root), str(setup.inputs / "new0.nii.gz"), "--labels", str(bad_label)]
    )
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    result = CliRunner().invoke(app, ["status", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "not a vetseg workspace" in result.output


def test_cli_init_add_use_status(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    runner = CliRunner()
    organs = ",".join(ORGANS)
    result = runner.invoke(app, ["init", str(root), "--species", "rabbit", "--organs", organs])
    assert result.exit_code == 0, result.output
    image, label = write_case(tmp_path / "in", "a", seed=1)
    result = runner.invoke(app, ["add", str(root), str(image), "--labels", str(label)])
    assert result.exit_code == 0, result.output
    tiny_model(tmp_path / "m")
    assert runner.invoke(app, ["use", str(root), str(tmp_path / "m")]).exit_code == 0
    result = runner.invoke(app, ["status", str(root), "--json", str(tmp_path / "s.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "s.json").read_text())
    assert report["counts"]["labelled"] == 1 and report["current_model"]


def test_an_msd_image_drops_its_channel_suffix_only_in_an_images_folder(tmp_path: Path) -> None:
    assert case_id_for(Path("/d/imagesTr/rabbit_007_0000.nii.gz")) == "rabbit_007"
    assert case_id_for(Path("/d/imagesTs/case_0000.nii.gz")) == "case"
    assert case_id_for(Path("/d/scans/case_0000.nii.gz")) == "case_0000"  # a lab's own number
    assert case_id_for(Path("/d/imagesTr/case_0001.nii.gz")) == "case_0001"  # another channel


def test_vetseg_add_names_an_msd_case_like_its_label(setup: Setup, tmp_path: Path) -> None:
    images = tmp_path / "msd" / "imagesTr"
    images.mkdir(parents=True)
    scan = images / "rabbit9_0000.nii.gz"
    scan.write_bytes((setup.inputs / "new3.nii.gz").read_bytes())
    result = CliRunner().invoke(app, ["add", str(setup.root), str(scan)])
    assert result.exit_code == 0, result.stderr
    assert "added 1 unlabelled case(s): rabbit9" in result.stdout
