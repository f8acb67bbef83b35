"""The malformed-input corpus: hostile files against every command that reads files.

Each case writes one bad input (generators in :mod:`tests.hostile`) into a fresh copy of a small
kit (a workspace, a model, a human model, a labelled dataset, a scan) and runs one command on it.
It must end in one sentence on stderr and exit code 2 (review uploads: a 4xx answer with the
sentence), and leave every file of the kit and every row of the workspace database as it was.
A few well-formed controls run through the same harness and must succeed, so that the harness
cannot pass by refusing everything.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests import hostile as h
from tests.workflow.conftest import make_workspace
from tests.workflow.helpers import META as CASE_META
from tests.workflow.helpers import SHAPE as CASE_SHAPE
from vetseg.cli import app
from vetseg.config import PreprocessConfig
from vetseg.io.image import ImageMeta, write_image
from vetseg.models.files import ModelInfo, new_model_id, save_model
from vetseg.models.human import HumanOrganNet

#: Files that opening a workspace may create or touch without changing what it holds.
_VOLATILE = {".vetseg.lock", "vetseg.db", "vetseg.db-wal", "vetseg.db-shm"}


@pytest.fixture(scope="module", autouse=True)
def _single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def kit_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ws/ (2 labelled cases, 1 unlabelled), model/, human/, inputs/ (a pairs dataset)."""
    base = tmp_path_factory.mktemp("kit")
    make_workspace(base, labelled=2, unlabelled=1)
    torch.manual_seed(0)
    human = HumanOrganNet(2, decoder_channels=(32, 24, 16, 16)).eval()
    info = ModelInfo(
        model_id=new_model_id("human"),
        architecture=human.architecture(),
        organs=("liver", "spleen"),
        preprocess=PreprocessConfig(size=32),
        stage="human",
    )
    save_model(human, base / "human", info)
    return base


@dataclass
class Kit:
    """A private copy of the kit for one case, and where its parts are."""

    root: Path

    @property
    def ws(self) -> Path:
        return self.root / "ws"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def human(self) -> Path:
        return self.root / "human"

    @property
    def data(self) -> Path:
        return self.root / "inputs"

    @property
    def scan(self) -> Path:
        return self.root / "inputs" / "new0.nii.gz"

    @property
    def bad(self) -> Path:
        return self.root / "bad"

    def dataset_with(self, replace: str, make: Callable[[Path, str], Path]) -> Path:
        """A copy of the labelled dataset whose file ``replace`` is made by ``make``."""
        folder = self.bad / "data"
        shutil.copytree(self.data, folder)
        (folder / replace).unlink()
        make(folder, replace)
        return folder


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its digest, and every workspace database as SQL text."""
    state: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            state[rel] = f"link -> {path.readlink()}"
        elif path.is_dir():
            state[rel] = "folder"
        elif path.name not in _VOLATILE:
            state[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    for db in sorted(root.rglob("vetseg.db")):
        connection = sqlite3.connect(db)
        try:
            state[db.relative_to(root).as_posix()] = "\n".join(connection.iterdump())
        finally:
            connection.close()
    return state


# --------------------------------------------------------------------------- the corpus
Make = Callable[[Kit], list[str]]


@dataclass(frozen=True)
class Hostile:
    """One malformed input: the command line that meets it and words its sentence must hold."""

    name: str
    make: Make
    words: str


def _seg(path: Callable[[Kit], Path]) -> Make:
    return lambda k: ["segment", str(k.model), str(path(k)), "--out", str(k.root / "out.nii.gz")]


def _seg_model(model: Callable[[Kit], Path]) -> Make:
    return lambda k: ["segment", str(model(k)), str(k.scan), "--out", str(k.root / "out.nii.gz")]


def _add(path: Callable[[Kit], Path]) -> Make:
    return lambda k: ["add", str(k.ws), str(path(k))]


def _add_labelled(label: Callable[[Kit], Path]) -> Make:
    return lambda k: ["add", str(k.ws), str(k.scan), "--labels", str(label(k))]


def _correct(label: Callable[[Kit], Path]) -> Make:
    return lambda k: ["correct", str(k.ws), "new0", str(label(k))]


def _use(model: Callable[[Kit], Path]) -> Make:
    return lambda k: ["use", str(k.ws), str(model(k))]


def _info(path: Callable[[Kit], Path]) -> Make:
    return lambda k: ["info", str(path(k))]


def _transfer(model: Callable[[Kit], Path], data: Callable[[Kit], Path] | None = None) -> Make:
    def args(k: Kit) -> list[str]:
        folder = data(k) if data else k.data
        out = k.root / "animal"
        return ["transfer", str(model(k)), str(folder), "--out", str(out)] + [
            "--epochs",
            "1",
            "--freeze-epochs",
            "0",
        ]

    return args


def _evaluate(model: Callable[[Kit], Path], data: Callable[[Kit], Path] | None = None) -> Make:
    return lambda k: ["evaluate", str(model(k)), str(data(k) if data else k.data)]


def _ws_model(k: Kit) -> Path:
    return next((k.ws / "models").iterdir())


def _damage_ws_model(k: Kit) -> list[str]:
    weights = _ws_model(k) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    return ["prelabel", str(k.ws)]


def _truncate_ws_scan(k: Kit) -> list[str]:
    scan = k.ws / "data" / "new0" / "image.nii.gz"
    data = scan.read_bytes()
    scan.write_bytes(data[: len(data) // 2])
    return ["prelabel", str(k.ws)]


def _link_ws_model(k: Kit) -> list[str]:
    weights = _ws_model(k) / "model.safetensors"
    outside = k.root / "elsewhere.safetensors"
    weights.rename(outside)
    weights.symlink_to(outside)
    return ["prelabel", str(k.ws)]


def _nan(k: Kit) -> Path:
    return h.float_volume(k.bad, "nan.nii.gz", float("nan"))


def _inf(k: Kit) -> Path:
    return h.float_volume(k.bad, "inf.nii.gz", float("inf"))


def _case_label(k: Kit, name: str, values: dict[int, float], **geometry: object) -> Path:
    meta = ImageMeta(**{"spacing": CASE_META.spacing, "origin": CASE_META.origin, **geometry})
    shape = geometry.pop("shape", CASE_SHAPE) if "shape" in geometry else CASE_SHAPE
    return h.label_map(k.bad, name, meta, shape, values)  # type: ignore[arg-type]


def _other_shape(k: Kit) -> Path:
    return h.label_map(k.bad, "small.nii.gz", CASE_META, (10, 30, 40), {1: 1})


def _set_organs(info: dict) -> None:
    info["organs"] = ["liver", "spleen", "kidney_left"]


def _set_channels(info: dict) -> None:
    info["architecture"]["decoder_channels"] = [48, 24, 16, 16]


def _unknown_class(info: dict) -> None:
    info["architecture"]["class"] = "os.system"


def _not_json(k: Kit) -> Path:
    folder = k.bad / "m"
    shutil.copytree(k.model, folder)
    (folder / "model.json").write_text("{'format': 'vetseg-model',")
    return folder


def _dataset_json_garbage(k: Kit) -> Path:
    folder = k.bad / "data"
    shutil.copytree(k.data, folder)
    (folder / "dataset.json").write_text("[1, 2,")
    return folder


def _float_label_data(k: Kit) -> Path:
    def make(folder: Path, name: str) -> Path:
        return h.label_map(folder, name, CASE_META, CASE_SHAPE, {1: 0.5})

    return k.dataset_with("lab1_seg.nii.gz", make)


def _truncated_data(k: Kit) -> Path:
    return k.dataset_with("lab0.nii.gz", h.truncated_gzip)


def _shifted_label_data(k: Kit) -> Path:
    def make(folder: Path, name: str) -> Path:
        meta = ImageMeta(CASE_META.spacing, (30.0, 0.0, 0.0))
        return h.label_map(folder, name, meta, CASE_SHAPE, {1: 1})

    return k.dataset_with("new0_seg.nii.gz", make)


CORPUS: tuple[Hostile, ...] = (
    # ---- scans: files that are not what they say
    Hostile("truncated_gzip", _seg(lambda k: h.truncated_gzip(k.bad)), "truncated"),
    Hostile("truncated_gzip_add", _add(lambda k: h.truncated_gzip(k.bad)), "truncated"),
    Hostile("wrong_magic", _seg(lambda k: h.wrong_magic(k.bad)), "not a valid NIfTI"),
    Hostile("wrong_magic_add", _add(lambda k: h.wrong_magic(k.bad)), "not a valid NIfTI"),
    Hostile("gzip_of_garbage", _seg(lambda k: h.gzip_of_garbage(k.bad)), "not a valid NIfTI"),
    Hostile("empty_file", _add(lambda k: h.empty_file(k.bad)), "empty"),
    Hostile("folder_named_nifti", _add(lambda k: h.empty_folder(k.bad / "x.nii.gz")), "no DICOM"),
    Hostile("corrupt_nrrd", _info(lambda k: h.corrupt_nrrd(k.bad)), "corrupt"),
    Hostile("mhd_without_raw", _seg(lambda k: h.mhd_missing_raw(k.bad)), "corrupt"),
    # ---- scans: voxels and dimensions
    Hostile("nan_voxels", _seg(_nan), "NaN"),
    Hostile("nan_voxels_add", _add(_nan), "NaN"),
    Hostile("inf_voxels", _seg(_inf), "infinite"),
    Hostile("inf_voxels_info", _info(_inf), "infinite"),
    Hostile("complex_voxels", _seg(lambda k: h.complex_voxels(k.bad)), "complex"),
    Hostile("rgb_nifti", _seg(lambda k: h.rgb_nifti(k.bad)), "values per voxel"),
    Hostile(
        "zero_length_axis", _seg(lambda k: h.header_dims(k.bad, "z0.nii", (3, 16, 16, 0))), "0"
    ),
    Hostile(
        "zero_length_axis_add",
        _add(lambda k: h.header_dims(k.bad, "z0.nii.gz", (3, 16, 0, 6))),
        "0",
    ),
    Hostile("single_slice", _add(lambda k: h.flat_image(k.bad)), "2D image"),
    Hostile("four_d", _seg(lambda k: h.four_d(k.bad)), "4D image"),
    Hostile(
        "terabyte_nifti",
        _seg(lambda k: h.header_dims(k.bad, "huge.nii", (3, 30000, 30000, 30000))),
        "would need",
    ),
    Hostile(
        "terabyte_nifti_gz",
        _add(lambda k: h.header_dims(k.bad, "huge.nii.gz", (3, 30000, 30000, 30000))),
        "would need",
    ),
    Hostile("terabyte_nrrd", _add(lambda k: h.terabyte_nrrd(k.bad)), "would need"),
    Hostile("terabyte_mha", _seg(lambda k: h.terabyte_mha(k.bad)), "would need"),
    Hostile(
        "metaimage_flipped_header",
        _seg(lambda k: h.metaimage_flipped_header(k.bad)),
        "MetaImage header is corrupt",
    ),
    Hostile(
        "metaimage_flipped_header_info",
        _info(lambda k: h.metaimage_flipped_header(k.bad)),
        "MetaImage header is corrupt",
    ),
    Hostile("terabyte_mha_info", _info(lambda k: h.terabyte_mha(k.bad)), "would need"),
    Hostile(
        "zero_spacing", _seg(lambda k: h.nifti_spacing(k.bad, "z.nii.gz", (1, 0, 2))), "spacing"
    ),
    Hostile(
        "nan_spacing",
        _add(lambda k: h.nifti_spacing(k.bad, "n.nii.gz", (1, float("nan"), 2))),
        "spacing",
    ),
    # ---- scans: geometry
    Hostile("qform_sform_disagree", _seg(lambda k: h.qform_sform_disagree(k.bad)), "disagree"),
    Hostile("qform_sform_disagree_add", _add(lambda k: h.qform_sform_disagree(k.bad)), "disagree"),
    Hostile("non_orthogonal_nifti", _seg(lambda k: h.sheared_sform(k.bad)), "orthogonal"),
    Hostile("non_orthogonal_nrrd", _add(lambda k: h.sheared_nrrd(k.bad)), "orthogonal"),
    # ---- DICOM series
    Hostile("dicom_missing_slice", _seg(lambda k: h.dicom_missing_slice(k.bad / "d")), "missing"),
    Hostile(
        "dicom_missing_slice_add", _add(lambda k: h.dicom_missing_slice(k.bad / "d")), "missing"
    ),
    Hostile("dicom_mixed_series", _seg(lambda k: h.dicom_mixed_series(k.bad / "d")), "mixes"),
    Hostile(
        "dicom_doubled_slice", _add(lambda k: h.dicom_duplicate_positions(k.bad / "d")), "mixes"
    ),
    Hostile("dicom_gantry_tilt", _seg(lambda k: h.dicom_gantry_tilt(k.bad / "d")), "tilt"),
    Hostile("dicom_gantry_tilt_add", _add(lambda k: h.dicom_gantry_tilt(k.bad / "d")), "tilt"),
    Hostile("dicom_mr", _seg(lambda k: h.dicom_modality(k.bad / "d", "MR")), "MR"),
    Hostile("dicom_pet_add", _add(lambda k: h.dicom_modality(k.bad / "d", "PT")), "PT"),
    Hostile(
        "dicom_rgb_secondary_capture",
        _seg(lambda k: h.dicom_rgb_secondary_capture(k.bad / "d")),
        "values per voxel",
    ),
    Hostile(
        "dicom_rgb_secondary_capture_add",
        _add(lambda k: h.dicom_rgb_secondary_capture(k.bad / "d")),
        "values per voxel",
    ),
    Hostile(
        "dicom_truncated_pixels", _seg(lambda k: h.dicom_truncated_pixels(k.bad / "d")), "DICOM"
    ),
    Hostile(
        "dicom_samples_per_pixel",
        _seg(lambda k: h.dicom_samples_per_pixel(k.bad / "d")),
        "GDCM cannot make sense of",
    ),
    Hostile(
        "dicom_samples_per_pixel_add",
        _add(lambda k: h.dicom_samples_per_pixel(k.bad / "d")),
        "GDCM cannot make sense of",
    ),
    Hostile(
        "dicom_meta_overrun",
        _seg(lambda k: h.dicom_meta_overrun(k.bad / "d")),
        "file meta runs over the data set",
    ),
    Hostile(
        "dicom_meta_overrun_add",
        _add(lambda k: h.dicom_meta_overrun(k.bad / "d")),
        "file meta runs over the data set",
    ),
    Hostile("dicom_empty_folder", _add(lambda k: h.empty_folder(k.bad / "d")), "no DICOM"),
    # ---- label maps
    Hostile(
        "label_id_out_of_range",
        _add_labelled(lambda k: _case_label(k, "ids.nii.gz", {1: 1, 9: 9})),
        "9",
    ),
    Hostile(
        "label_id_out_of_range_correct",
        _correct(lambda k: _case_label(k, "ids.nii.gz", {1: 1, 200: 200})),
        "200",
    ),
    Hostile(
        "float_labels", _correct(lambda k: _case_label(k, "f.nii.gz", {1: 0.5})), "non-integer"
    ),
    Hostile(
        "float_labels_add",
        _add_labelled(lambda k: _case_label(k, "f.nii.gz", {1: 1.25})),
        "non-integer",
    ),
    Hostile("negative_labels", _correct(lambda k: _case_label(k, "n.nii.gz", {1: -1})), "negative"),
    Hostile("nan_labels", _correct(_nan), "NaN"),
    Hostile("labels_other_shape", _correct(_other_shape), "same voxel grid"),
    Hostile("labels_other_shape_add", _add_labelled(_other_shape), "same voxel grid"),
    Hostile(
        "labels_other_origin",
        _correct(lambda k: _case_label(k, "o.nii.gz", {1: 1}, origin=(0.0, 30.0, 0.0))),
        "origins",
    ),
    Hostile(
        "labels_other_spacing",
        _correct(lambda k: _case_label(k, "s.nii.gz", {1: 1}, spacing=(1.0, 1.0, 3.0))),
        "spacings",
    ),
    Hostile("labels_truncated", _correct(lambda k: h.truncated_gzip(k.bad)), "truncated"),
    Hostile("labels_rgb", _correct(lambda k: h.rgb_nifti(k.bad)), "values per voxel"),
    Hostile(
        "labels_terabyte",
        _correct(lambda k: h.header_dims(k.bad, "huge.nii", (3, 30000, 30000, 30000))),
        "would need",
    ),
    # ---- model folders
    Hostile(
        "model_pickle_only",
        _seg_model(lambda k: h.model_pickle_only(k.model, k.bad / "m")),
        "missing",
    ),
    Hostile(
        "model_pickle_only_use",
        _use(lambda k: h.model_pickle_only(k.model, k.bad / "m")),
        "missing",
    ),
    Hostile(
        "model_pickled_checkpoint_file",
        _transfer(lambda k: h.model_pickle_only(k.model, k.bad / "m") / "model.pt"),
        "pickled",
    ),
    Hostile(
        "model_safetensors_holds_pickle",
        _seg_model(lambda k: h.model_pickle_as_safetensors(k.model, k.bad / "m")),
        "safetensors",
    ),
    Hostile(
        "model_safetensors_holds_pickle_use",
        _use(lambda k: h.model_pickle_as_safetensors(k.model, k.bad / "m")),
        "safetensors",
    ),
    Hostile(
        "model_json_more_organs",
        _seg_model(lambda k: h.model_json_edited(k.model, k.bad / "m", _set_organs)),
        "organs",
    ),
    Hostile(
        "model_json_other_architecture_use",
        _use(lambda k: h.model_json_edited(k.model, k.bad / "m", _set_channels)),
        "architecture",
    ),
    Hostile(
        "model_json_unknown_class",
        _evaluate(lambda k: h.model_json_edited(k.model, k.bad / "m", _unknown_class)),
        "os.system",
    ),
    Hostile("model_json_not_json", _evaluate(_not_json), "not valid JSON"),
    Hostile(
        "model_weights_changed",
        _transfer(lambda k: h.model_weights_changed(k.human, k.bad / "m")),
        "checksum",
    ),
    Hostile(
        "model_link_escapes",
        _seg_model(lambda k: h.model_escaping_link(k.model, k.bad / "m")),
        "outside",
    ),
    Hostile(
        "model_json_link_escapes_use",
        _use(lambda k: h.model_escaping_link(k.model, k.bad / "m", "model.json")),
        "outside",
    ),
    Hostile(
        "human_model_link_escapes",
        _transfer(lambda k: h.model_escaping_link(k.human, k.bad / "m")),
        "outside",
    ),
    # ---- datasets
    Hostile("dataset_json_garbage", _transfer(lambda k: k.human, _dataset_json_garbage), "JSON"),
    Hostile("dataset_float_labels", _transfer(lambda k: k.human, _float_label_data), "non-integer"),
    Hostile("dataset_truncated_scan", _evaluate(lambda k: k.model, _truncated_data), "truncated"),
    Hostile(
        "dataset_label_other_grid", _evaluate(lambda k: k.model, _shifted_label_data), "origins"
    ),
    # ---- what a workspace holds, damaged after it was registered
    Hostile("workspace_model_damaged", _damage_ws_model, "checksum"),
    Hostile("workspace_scan_truncated", _truncate_ws_scan, "truncated"),
    Hostile("workspace_model_link_escapes", _link_ws_model, "outside"),
)


def _run(kit_template: Path, tmp_path: Path, make: Make) -> tuple[Kit, list[str]]:
    kit = Kit(tmp_path / "kit")
    shutil.copytree(kit_template, kit.root, symlinks=True)
    kit.bad.mkdir()
    return kit, make(kit)


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_hostile_input_is_refused_and_changes_nothing(
    case: Hostile, kit_template: Path, tmp_path: Path
) -> None:
    kit, args = _run(kit_template, tmp_path, case.make)
    before = snapshot(kit.root)
    result = CliRunner().invoke(app, args)
    after = snapshot(kit.root)
    assert result.exit_code == 2, (result.exit_code, result.stderr, result.exception)
    assert "Traceback" not in result.stderr
    # Progress lines (e.g. "scoring new0") may come first; the error is the one last line.
    lines = result.stderr.splitlines()
    message = lines[-1]
    assert message.startswith("error: ") and sum(x.startswith("error") for x in lines) == 1
    assert message.endswith("."), message
    assert case.words in message, message
    assert after == before, sorted(set(after.items()) ^ set(before.items()))


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 40
    assert len({c.name for c in CORPUS}) == len(CORPUS)


CONTROLS: tuple[tuple[str, Make], ...] = (
    ("segment", _seg(lambda k: k.scan)),
    ("add", _add(lambda k: h.dicom_series(k.bad / "good") and k.bad / "good")),
    ("correct", _correct(lambda k: _case_label(k, "good.nii.gz", {1: 1, 2: 2}))),
    ("evaluate", _evaluate(lambda k: k.model)),
    ("unsorted_instances", _add(lambda k: h.dicom_unsorted_instances(k.bad / "u"))),
    # Odd but readable: info describes it (it crashed on a histogram before; found by fuzzing).
    ("info_huge_constant_floats", _info(lambda k: h.huge_constant_floats(k.bad))),
)


@pytest.mark.parametrize("name, make", CONTROLS, ids=[c[0] for c in CONTROLS])
def test_well_formed_controls_pass_the_same_harness(
    name: str, make: Make, kit_template: Path, tmp_path: Path
) -> None:
    kit, args = _run(kit_template, tmp_path, make)
    before = snapshot(kit.root)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (name, result.stderr, result.exception)
    assert snapshot(kit.root) != before or name in ("evaluate", "info_huge_constant_floats")


# --------------------------------------------------------------------------- review uploads
TOKEN = "corpus-token-0123456789abcdef"


def _upload_bytes(folder: Path, name: str, array: np.ndarray, meta: ImageMeta = CASE_META) -> bytes:
    return write_image(array, meta, folder / name).read_bytes()


def _label_array(dtype: type = np.uint8, value: float = 1) -> np.ndarray:
    labels = np.zeros(CASE_SHAPE, dtype=dtype)
    labels[2:5, 10:20, 10:20] = value
    return labels


def _halved(data: bytes) -> bytes:
    return data[: len(data) // 2]


UPLOADS: tuple[tuple[str, Callable[[Path], bytes], int], ...] = (
    ("truncated_gzip", lambda d: h.truncated_gzip(d).read_bytes(), 422),
    (
        "truncated_label_on_grid",
        lambda d: _halved(_upload_bytes(d, "t.nii.gz", _label_array())),
        400,
    ),
    ("wrong_magic", lambda d: h.wrong_magic(d).read_bytes(), 400),
    ("empty_body", lambda d: b"", 400),
    ("gzip_of_garbage", lambda d: h.gzip_of_garbage(d).read_bytes(), 400),
    ("four_d", lambda d: h.four_d(d).read_bytes(), 400),
    ("float_labels", lambda d: _upload_bytes(d, "f.nii.gz", _label_array(np.float32, 0.5)), 422),
    ("nan_labels", lambda d: h.float_volume(d, "nan.nii.gz", float("nan")).read_bytes(), 422),
    (
        "other_grid_size",
        lambda d: _upload_bytes(d, "s.nii.gz", np.zeros((10, 30, 40), np.uint8)),
        422,
    ),
    (
        "other_grid_origin",
        lambda d: _upload_bytes(
            d, "o.nii.gz", _label_array(), ImageMeta(CASE_META.spacing, (0.0, 30.0, 0.0))
        ),
        422,
    ),
    ("label_id_out_of_range", lambda d: _upload_bytes(d, "r.nii.gz", _label_array(value=9)), 422),
    (
        "terabyte_header",
        lambda d: h.header_dims(d, "huge.nii.gz", (3, 30000, 30000, 30000)).read_bytes(),
        422,
    ),
    ("larger_than_a_label", lambda d: np.random.default_rng(0).bytes(100 * 1024), 413),
)


@pytest.mark.parametrize("name, make, status", UPLOADS, ids=[u[0] for u in UPLOADS])
def test_hostile_review_upload_is_refused_and_changes_nothing(
    name: str, make: Callable[[Path], bytes], status: int, kit_template: Path, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from vetseg.server.app import create_app

    kit = Kit(tmp_path / "kit")
    shutil.copytree(kit_template, kit.root, symlinks=True)
    body = make(tmp_path / "made")
    before = snapshot(kit.root)
    app_ = create_app(kit.ws, TOKEN)
    with TestClient(app_) as client:
        response = client.post(
            "/api/cases/new0/corrections",
            params={"base_version": 0},
            content=body,
            headers={"X-Vetseg-Token": TOKEN},
        )
        assert list(app_.state.uploads.iterdir()) == []  # no upload outlives its request
    assert response.status_code == status, (response.status_code, response.text)
    detail = response.json()["detail"]
    assert "\n" not in detail and "Traceback" not in detail and len(detail) > 20, detail
    assert snapshot(kit.root) == before


def test_a_good_review_upload_passes_the_same_harness(kit_template: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from vetseg.server.app import create_app

    kit = Kit(tmp_path / "kit")
    shutil.copytree(kit_template, kit.root, symlinks=True)
    body = _upload_bytes(tmp_path, "good.nii.gz", _label_array())
    before = snapshot(kit.root)
    with TestClient(create_app(kit.ws, TOKEN)) as client:
        response = client.post(
            "/api/cases/new0/corrections",
            params={"base_version": 0},
            content=body,
            headers={"X-Vetseg-Token": TOKEN},
        )
    assert response.status_code == 201, response.text
    assert snapshot(kit.root) != before


def test_unsorted_instance_numbers_are_read_in_position_order(tmp_path: Path) -> None:
    """Scrambled instance numbers and file names are no error: slices go by their positions."""
    from vetseg.io.image import read_scan

    folder = h.dicom_unsorted_instances(tmp_path / "u")
    array, meta = read_scan(folder)
    np.testing.assert_array_equal(array, h.volume((8, 16, 16), 0))
    assert meta.spacing == (1.0, 1.0, 2.0) and meta.modality == "CT"
