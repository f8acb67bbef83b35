"""``vetseg phantoms | synth | preview``: exit 0 and files, or exit 2 and one sentence."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from vetseg.cli import app
from vetseg.io.image import ImageMeta, read_image, write_image
from vetseg.labels import CORE_ORGANS, HUMAN_ORGANS


def run(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def assert_refused(args: tuple[str | Path, ...], words: str) -> None:
    code, out, err = run(*args)
    assert code == 2, (code, out, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and words in err
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def rabbit_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "rabbit"
    code, stdout, err = run("phantoms", out, "--species", "rabbit", "--cases", "1", "--seed", "4")
    assert code == 0, err
    assert "synthetic" in stdout
    return out


def test_phantoms_then_preview(rabbit_dataset: Path, tmp_path: Path) -> None:
    scan = rabbit_dataset / "imagesTr" / "rabbit_000_0000.nii.gz"
    labels = rabbit_dataset / "labelsTr" / "rabbit_000.nii.gz"
    assert scan.is_file() and labels.is_file() and (rabbit_dataset / "dataset.json").is_file()
    png = tmp_path / "rabbit.png"
    code, stdout, err = run("preview", scan, "--labels", labels, "--out", png)
    assert code == 0, err
    assert str(png) in stdout
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 400 and image.size[1] > 300
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    assert ((pixels.max(axis=2) - pixels.min(axis=2)) > 40).mean() > 0.01  # coloured labels


def test_phantoms_wide_variety_writes_twelve_organs(tmp_path: Path) -> None:
    out = tmp_path / "wide"
    code, stdout, err = run("phantoms", out, "--variety", "wide", "--cases", "1", "--seed", "22")
    assert code == 0, err
    assert "synthetic" in stdout
    info = json.loads((out / "dataset.json").read_text())
    assert list(info["labels"]) == ["background", *HUMAN_ORGANS]
    assert info["synthetic"] is True and info["variety"] == "wide"
    labels, _ = read_image(out / "labelsTr" / "human_000.nii.gz")
    assert int(labels.max()) > len(CORE_ORGANS)  # the new organs are labelled
    assert_refused(
        ("phantoms", tmp_path / "r", "--species", "rabbit", "--variety", "wide"), "human"
    )
    assert_refused(("phantoms", tmp_path / "v", "--variety", "huge"), "unknown phantom variety")
    kidneys = tmp_path / "kidneys"
    code, _, err = run("phantoms", kidneys, "--variety", "wide-kidneys", "--cases", "1")
    assert code == 0, err
    info = json.loads((kidneys / "dataset.json").read_text())
    assert info["variety"] == "wide-kidneys" and "kidneys as real" in info["description"]
    assert 1.2 <= info["cases"]["human_000"]["perirenal_fat"] <= 1.6
    ribs = tmp_path / "ribs"
    code, _, err = run("phantoms", ribs, "--variety", "wide-ribs", "--cases", "1")
    assert code == 0, err
    info = json.loads((ribs / "dataset.json").read_text())
    assert info["variety"] == "wide-ribs" and "costal cartilage" in info["description"]
    case = info["cases"]["human_000"]
    assert 6.5 <= case["rib_thickness_mm"] <= 9.5 and 1.2 <= case["perirenal_fat"] <= 1.6


def test_synth_on_a_tiny_atlas(tmp_path: Path) -> None:
    atlas = np.zeros((20, 16, 24), dtype=np.uint8)
    atlas[2:18, 2:14, 2:22] = 7  # bone everywhere: a crude body
    atlas[5:15, 4:12, 4:11] = 1  # liver (vetseg ids)
    atlas[5:12, 6:11, 14:20] = 3  # kidney_left
    path = write_image(atlas, ImageMeta((1.0, 1.0, 2.0), (0.0, 0.0, 0.0)), tmp_path / "a.nii.gz")
    out = tmp_path / "synth"
    code, stdout, err = run("synth", path, out, "--cases", "1", "--mapping", "vetseg")
    assert code == 0, err
    assert "synthesised" in stdout
    ct, _ = read_image(out / "imagesTr" / "case_000_0000.nii.gz")
    assert ct.dtype == np.int16


def test_bad_input_exits_2(rabbit_dataset: Path, tmp_path: Path) -> None:
    scan = rabbit_dataset / "imagesTr" / "rabbit_000_0000.nii.gz"
    assert_refused(("phantoms", tmp_path / "x", "--species", "cat"), "cat")
    assert_refused(("phantoms", rabbit_dataset, "--species", "rabbit"), "not empty")
    assert_refused(("synth", tmp_path / "none.nii.gz", tmp_path / "y"), "no such file")
    assert_refused(("synth", scan, tmp_path / "z", "--mapping", "rat"), "Unknown atlas mapping")
    assert_refused(("preview", tmp_path / "none.nii.gz", "--out", tmp_path / "p.png"), "none")
    # A label map on another grid: the preview would put organs in the wrong place.
    other = np.zeros((4, 8, 8), dtype=np.uint8)
    wrong = write_image(other, ImageMeta((1.0, 1.0, 1.0), (0.0, 0.0, 0.0)), tmp_path / "w.nii.gz")
    assert_refused(
        ("preview", scan, "--labels", wrong, "--out", tmp_path / "p.png"), "same voxel grid"
    )
    assert not (tmp_path / "p.png").exists()
    assert not (tmp_path / "x").exists() and not (tmp_path / "z").exists()
