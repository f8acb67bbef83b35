"""End to end through the CLI: phantoms -> train-human -> transfer -> segment -> evaluate.

Tiny sizes (64 px, a few steps): these runs check files, lineage and exit codes, not accuracy.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vetseg.cli import app
from vetseg.io.image import read_image, read_label

runner = CliRunner()
FAST = ["--size", "64", "--batch-size", "4", "--steps-per-epoch", "2", "--extend", "0"]


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output


def _fails_cleanly(args: list[str], *needles: str) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, result.output
    return result.output


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("method")
    _ok(["phantoms", str(root / "human"), "--species", "human", "--cases", "3", "--seed", "1"])
    _ok(["phantoms", str(root / "rabbit"), "--species", "rabbit", "--cases", "3", "--seed", "2"])
    # 6 mm pixels: a 384 mm human phantom is one 64 px tile (the rabbit then gets 2.1 mm);
    # segmenting runs it on 96 px tiles (--tile).
    human_args = ["--epochs", "1", "--spacing", "6", "--tile", "96", *FAST]
    _ok(["train-human", str(root / "human"), "--out", str(root / "hm"), *human_args])
    config = root / "transfer.json"
    config.write_text(json.dumps({"epochs": 2, "freeze_epochs": 1, "lr": 1e-3}))
    _ok(
        [
            "transfer",
            str(root / "hm"),
            str(root / "rabbit"),
            "--out",
            str(root / "rm"),
            "--config",
            str(config),
            *FAST,
        ]
    )
    return {
        "root": root,
        "human": root / "hm",
        "rabbit_model": root / "rm",
        "rabbit": root / "rabbit",
    }


@pytest.mark.slow
def test_models_record_lineage_settings_and_split(trained: dict[str, Path]) -> None:
    human = json.loads((trained["human"] / "model.json").read_text())
    rabbit = json.loads((trained["rabbit_model"] / "model.json").read_text())
    assert human["stage"] == "human" and human["parent"] is None
    assert rabbit["stage"] == "transfer" and rabbit["parent"] == human["model_id"]
    assert rabbit["architecture"]["class"] == "AnimalOrganNet"
    assert rabbit["training"]["config"]["epochs"] == 2  # from --config
    assert rabbit["training"]["config"]["freeze_epochs"] == 1
    assert rabbit["training"]["config"]["tversky_beta"] == 0.7  # transfer default kept
    # The human model's inference tile is recorded and its own: the animal model runs on its
    # training tiles unless it is given one.
    assert human["preprocess"]["tile"] == 96 and human["preprocess"]["size"] == 64
    assert rabbit["preprocess"]["tile"] is None and rabbit["preprocess"]["size"] == 64
    # Physical scale: the rabbit model's pixels are the human's times the rabbit's body scale,
    # and it keeps the human model's intensity statistics (its stem learned them).
    assert human["preprocess"]["spacing"] == 6.0
    assert rabbit["preprocess"]["spacing"] == pytest.approx(6.0 * (3.0 / 70.0) ** (1 / 3), 1e-2)
    assert "species rabbit" in rabbit["training"]["spacing_rule"]
    assert rabbit["preprocess"]["intensity"] == human["preprocess"]["intensity"]
    assert rabbit["synthetic_data"] is True
    split = rabbit["training"]["split"]
    assert sorted(split["train"] + split["val"] + split["test"]) == [
        "rabbit_000",
        "rabbit_001",
        "rabbit_002",
    ]
    log = (trained["rabbit_model"] / "train" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["phase"] for line in log] == ["frozen", "unfrozen"]


def _segment(trained: dict[str, Path], case: str) -> tuple[np.ndarray, np.ndarray]:
    """``vetseg segment`` one rabbit: (label map written, reference label), both in model ids."""
    scan = trained["rabbit"] / "imagesTr" / f"{case}_0000.nii.gz"
    out = trained["root"] / "segmented" / f"{case}.nii.gz"
    if not out.is_file():
        _ok(["segment", str(trained["rabbit_model"]), str(scan), "--out", str(out)])
    image, meta = read_image(scan)
    labels, _ = read_label(out, reference=meta, reference_shape=image.shape)
    reference, _ = read_label(trained["rabbit"] / "labelsTr" / f"{case}.nii.gz")
    names = json.loads((trained["rabbit"] / "dataset.json").read_text())["labels"]
    organs = json.loads((trained["rabbit_model"] / "model.json").read_text())["organs"]
    assert set(organs) <= set(names)
    in_model_ids = np.zeros_like(labels)
    for index, organ in enumerate(organs):
        in_model_ids[reference == names[organ]] = index + 1
    return labels, in_model_ids


@pytest.mark.slow
def test_segment_writes_the_post_processed_prediction_on_the_scan_grid(
    trained: dict[str, Path],
) -> None:
    from vetseg.inference.postprocess import PostprocessConfig
    from vetseg.inference.segmenter import Segmenter

    labels, _ = _segment(trained, "rabbit_000")
    image, meta = read_image(trained["rabbit"] / "imagesTr" / "rabbit_000_0000.nii.gz")
    segmenter = Segmenter.load(trained["rabbit_model"], postprocess=PostprocessConfig())
    assert np.array_equal(labels, segmenter.predict(image, meta).labels)


def _strict_json(text: str) -> object:
    def refuse(constant: str) -> object:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.slow
def test_evaluate_scores_what_segment_writes_in_strict_json(trained: dict[str, Path]) -> None:
    out = trained["root"] / "eval.json"
    text = _ok(
        ["evaluate", str(trained["rabbit_model"]), str(trained["rabbit"]), "--json", str(out)]
    )
    assert "kidney_left" in text and "HD95" in text
    result = _strict_json(out.read_text())
    assert isinstance(result, dict) and result["synthetic"] is True
    organs = result["organs"]
    assert sorted(result["per_case"]) == ["rabbit_000", "rabbit_001", "rabbit_002"]
    for case, scores in result["per_case"].items():
        labels, reference = _segment(trained, case)  # what a user of vetseg segment gets
        for index, organ in enumerate(organs, start=1):
            predicted, true = labels == index, reference == index
            total = int(predicted.sum()) + int(true.sum())
            expected = 2.0 * int((predicted & true).sum()) / total if total else None
            assert scores[organ]["dice"] == pytest.approx(expected), (case, organ)
    for organ in organs:
        counted = [
            s[organ]["dice"] for s in result["per_case"].values() if s[organ]["dice"] is not None
        ]
        expected = float(np.mean(counted)) if counted else None
        assert result["per_organ"][organ] == pytest.approx(expected), organ


@pytest.mark.slow
def test_bad_input_to_method_commands(trained: dict[str, Path], tmp_path: Path) -> None:
    pickle_file = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(1)}, pickle_file)
    _fails_cleanly(
        ["transfer", str(pickle_file), str(trained["rabbit"]), "--out", str(tmp_path / "x")],
        "model.pt",
        "pickled",
    )
    assert not (tmp_path / "x").exists()
    _fails_cleanly(
        [
            "segment",
            str(trained["rabbit_model"]),
            str(tmp_path / "nope.nii.gz"),
            "--out",
            str(tmp_path / "s.nii.gz"),
        ],
        "nope.nii.gz",
    )
    assert not (tmp_path / "s.nii.gz").exists()
    (tmp_path / "empty").mkdir()
    _fails_cleanly(["train-human", str(tmp_path / "empty"), "--out", str(tmp_path / "h")], "empty")
    bad_config = tmp_path / "bad.json"
    bad_config.write_text(json.dumps({"epochs": 2, "learning_rate": 1}))
    _fails_cleanly(
        [
            "transfer",
            str(trained["human"]),
            str(trained["rabbit"]),
            "--out",
            str(tmp_path / "y"),
            "--config",
            str(bad_config),
        ],
        "learning_rate",
    )
    _fails_cleanly(
        [
            "transfer",
            str(trained["human"]),
            str(trained["rabbit"]),
            "--out",
            str(tmp_path / "y"),
            "--freeze-epochs",
            "200",
        ],
        "freeze epochs",
    )


@pytest.mark.slow
def test_help_is_instant_and_does_not_import_torch() -> None:
    code = "import sys; from vetseg.cli import app; app(['--help'])"
    probe = (
        "import sys, runpy\n"
        "sys.argv=['vetseg','--help']\n"
        "try:\n"
        f"    exec({code!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('TORCH_LOADED' if 'torch' in sys.modules else 'TORCH_NOT_LOADED')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        encoding="utf-8",  # rich draws boxes; CI may run without a UTF-8 locale
        errors="replace",
        timeout=60,
    )
    assert "TORCH_NOT_LOADED" in result.stdout, result.stdout + result.stderr
    assert "transfer" in result.stdout


def test_config_values_are_validated() -> None:
    from vetseg.config import StageConfig
    from vetseg.errors import InputError

    with pytest.raises(InputError):
        StageConfig(epochs=0)
    with pytest.raises(InputError):
        StageConfig(epochs=5, freeze_epochs=6)
    assert StageConfig.transfer().freeze_epochs == 50
    assert (StageConfig.refine().epochs, StageConfig.refine().freeze_epochs) == (30, 20)
    assert np.isclose(StageConfig.human().tversky_alpha, 0.5)


@pytest.mark.slow
def test_transfer_builds_the_refine_module_asked_for(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    from vetseg.config import PreprocessConfig, StageConfig
    from vetseg.models.files import load_model
    from vetseg.training.stages import transfer

    config = StageConfig.transfer(
        epochs=1, freeze_epochs=0, batch_size=4, steps_per_epoch=1, extend=0,
        preprocess=PreprocessConfig(size=64),
    )  # fmt: skip
    info = transfer(
        trained["human"], trained["rabbit"], tmp_path / "m", config, expand=2, progress=False
    )
    assert info.architecture["expand"] == 2
    model, _ = load_model(tmp_path / "m")
    first = model.refine[0]
    assert first.expand[0].out_channels == 2 * first.expand[0].in_channels == 32


def test_transfer_does_not_inherit_the_human_models_inference_tile_or_tilings(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    """Both were measured for the human model on human scans: the animal model gets its own
    (the config's: none and 1)."""
    import dataclasses

    from vetseg.config import PreprocessConfig, StageConfig
    from vetseg.models.files import load_model, read_model_info, save_model
    from vetseg.training.stages import transfer

    net, human = load_model(trained["human"])
    parent = tmp_path / "human_tilings"
    preprocess = dataclasses.replace(human.preprocess, tilings=3)
    save_model(net, parent, dataclasses.replace(human, model_id="human-t3", preprocess=preprocess))
    assert read_model_info(parent).preprocess.tilings == 3 and preprocess.tile == 96
    config = StageConfig.transfer(
        epochs=1, freeze_epochs=0, batch_size=4, steps_per_epoch=1, extend=0,
        preprocess=PreprocessConfig(size=64),
    )  # fmt: skip
    info = transfer(parent, trained["rabbit"], tmp_path / "m", config, progress=False)
    assert info.parent == "human-t3"
    assert info.preprocess.tilings == 1 and info.preprocess.tile is None
    assert read_model_info(tmp_path / "m").preprocess.tilings == 1


def _rabbits_with_a_stomach(source: Path, out: Path) -> None:
    """A copy of the rabbit phantoms whose labels also draw a "stomach" (id 8), which the
    human model does not know."""
    import shutil

    from vetseg.io.image import write_image

    shutil.copytree(source, out)
    meta_file = out / "dataset.json"
    dataset = json.loads(meta_file.read_text())
    dataset["labels"]["stomach"] = 8
    meta_file.write_text(json.dumps(dataset))
    for label_file in sorted((out / "labelsTr").glob("*.nii.gz")):
        labels, meta = read_label(label_file)
        z, y, x = (n // 2 for n in labels.shape)
        labels[z - 8 : z + 8, y - 6 : y + 6, x - 6 : x + 6] = 8
        write_image(labels.astype(np.uint8), meta, label_file)


@pytest.mark.slow
def test_transfer_trains_organs_the_human_model_lacks_and_says_so(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    data = tmp_path / "rabbit_stomach"
    _rabbits_with_a_stomach(trained["rabbit"], data)
    args = ["--epochs", "1", "--freeze-epochs", "0", *FAST]
    out = _ok(["transfer", str(trained["human"]), str(data), "--out", str(tmp_path / "m"), *args])
    assert "organs the human model lacks, trained from the animal labels alone: stomach" in out
    info = json.loads((tmp_path / "m" / "model.json").read_text())
    assert info["organs"][-1] == "stomach" and len(info["organs"]) == 8
    assert info["training"]["organs_new_to_human"] == ["stomach"]

    # --organs chooses; the labelled organs left out are named, not dropped silently.
    chosen = ["--organs", "liver,stomach"]
    out = _ok(
        [
            "transfer",
            str(trained["human"]),
            str(data),
            "--out",
            str(tmp_path / "m2"),
            *args,
            *chosen,
        ]
    )
    assert "NOT trained (not in --organs): spleen, kidney_left" in out
    info = json.loads((tmp_path / "m2" / "model.json").read_text())
    assert info["organs"] == ["liver", "stomach"]
    assert "bone" in info["training"]["organs_not_trained"]


@pytest.mark.slow
def test_train_human_init_fine_tunes_a_human_model_and_records_it(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    import dataclasses

    from vetseg.models.files import load_model, save_model

    # A parent far from what a fresh seed-0 start would give: the fixture's human model with
    # every weight moved by noise, saved as another human model.
    net, info = load_model(trained["human"])
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, tensor in net.state_dict().items():
            if name.endswith("weight"):
                tensor.add_(0.05 * torch.randn(tensor.shape, generator=generator))
    parent_dir = tmp_path / "parent"
    save_model(net, parent_dir, dataclasses.replace(info, model_id="human-perturbed"))
    data, out = trained["root"] / "human", tmp_path / "ft"
    init = ["--init", str(parent_dir)]
    _ok(["train-human", str(data), "--out", str(out), *init, "--epochs", "1", *FAST])
    parent_net, parent = load_model(parent_dir)
    child_net, child = load_model(out)
    assert child.stage == "human" and child.parent == "human-perturbed"
    assert child.organs == parent.organs  # no --organs: the parent's, not the core default
    assert child.preprocess == parent.preprocess  # 6 mm pixels and intensity statistics kept

    # Started from the parent's weights: two small Adam steps move them a little, while the
    # seed-0 start that train-human takes without --init is far from them.
    def distance(a: torch.nn.Module, b: torch.nn.Module) -> float:
        sa, sb = a.state_dict(), b.state_dict()
        return sum(float((sa[k] - sb[k]).norm()) for k in sa if k.endswith("weight"))

    unperturbed, _ = load_model(trained["human"])
    assert 0 < distance(child_net, parent_net) < 0.2 * distance(unperturbed, parent_net)

    # --tile with --init: the inference tile changes, nothing else of the input definition.
    retiled = tmp_path / "retiled"
    _ok(
        [
            "train-human",
            str(data),
            "--out",
            str(retiled),
            *init,
            "--tile",
            "128",
            "--epochs",
            "1",
            *FAST,
        ]
    )
    _, info_128 = load_model(retiled)
    assert info_128.preprocess == dataclasses.replace(parent.preprocess, tile=128)
    assert parent.preprocess.tile == 96 and info_128.preprocess.tile_size == 128

    args = ["train-human", str(data), "--out", str(tmp_path / "x"), "--init", str(parent_dir)]
    _fails_cleanly([*args, "--tile", "100"], "inference tile 100 must be a multiple of 32")
    _fails_cleanly([*args, "--spacing", "3"], "--spacing 6.0", "Leave --spacing out")
    _fails_cleanly([*args, "--organs", "liver"], "--init keeps them", "Leave --organs out")
    _fails_cleanly([*args[:-1], str(trained["rabbit_model"])], "needs a human model")
    assert not (tmp_path / "x" / "model.json").exists()
