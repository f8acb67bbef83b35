"""Tiny scans, labels and models for the workspace tests (written to tmp_path)."""

from __future__ import annotations

import functools
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vetseg.config import PreprocessConfig
from vetseg.io.image import ImageMeta, write_image
from vetseg.models.animal import AnimalOrganNet
from vetseg.models.files import ModelInfo, new_model_id, save_model
from vetseg.models.human import HumanOrganNet

ORGANS = ("liver", "spleen")
SHAPE = (10, 40, 40)
META = ImageMeta(spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0))
REPO = Path(__file__).resolve().parents[2]


def phantom(seed: int, shape: tuple[int, int, int] = SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """A body (40 HU) in air with a 'liver' ellipse (110 HU) and a 'spleen' disc (200 HU)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]].astype(np.float32)
    cy, cx = shape[1] / 2 + rng.normal(0, 1.5), shape[2] / 2 + rng.normal(0, 1.5)
    image = np.full(shape, -1000.0, np.float32)
    body = ((y - cy) / (shape[1] * 0.42)) ** 2 + ((x - cx) / (shape[2] * 0.42)) ** 2 < 1
    image[body] = 40.0
    labels = np.zeros(shape, np.uint8)
    ly, lx = cy + rng.normal(0, 1), cx - shape[2] * 0.12 + rng.normal(0, 1)
    liver = ((y - ly) / (shape[1] * 0.2)) ** 2 + ((x - lx) / (shape[2] * 0.16)) ** 2 < 1
    liver &= z < shape[0] * 0.8
    sy, sx = cy + rng.normal(0, 1), cx + shape[2] * 0.2
    spleen = (y - sy) ** 2 + (x - sx) ** 2 < (shape[1] * 0.08) ** 2
    spleen &= z > shape[0] * 0.2
    image[liver], labels[liver] = 110.0, 1
    image[spleen], labels[spleen] = 200.0, 2
    image += rng.normal(0, 8, shape).astype(np.float32)
    return image.astype(np.int16), labels


def write_case(
    folder: Path, name: str, seed: int, meta: ImageMeta = META, label_ids: tuple[int, int] = (1, 2)
) -> tuple[Path, Path]:
    """Write ``<name>.nii.gz`` and ``<name>_seg.nii.gz`` (organ ids ``label_ids``)."""
    image, labels = phantom(seed)
    out = labels.copy()
    out[labels == 1], out[labels == 2] = label_ids
    folder.mkdir(parents=True, exist_ok=True)
    image_path = write_image(image, meta, folder / f"{name}.nii.gz")
    label_path = write_image(out, meta, folder / f"{name}_seg.nii.gz")
    return image_path, label_path


@functools.lru_cache(maxsize=8)
def _tiny_network(
    organs: tuple[str, ...], head_bias: tuple[float, ...] | None, seed: int
) -> AnimalOrganNet:
    # Building EfficientNet-b1 takes most of a second: build each variant once per session.
    torch.manual_seed(seed)
    human = HumanOrganNet(len(organs), decoder_channels=(32, 24, 16, 16))
    model = AnimalOrganNet.from_human(human, n_organs=len(organs), refine_blocks=1)
    if head_bias is not None:
        with torch.no_grad():
            model.head.weight.zero_()
            model.head.bias.copy_(torch.tensor(head_bias))
    return model.eval()


def tiny_model(
    out: Path,
    organs: tuple[str, ...] = ORGANS,
    size: int = 32,
    window: tuple[float, float] = (-1000.0, 1000.0),
    head_bias: tuple[float, ...] | None = None,
    seed: int = 0,
    spacing: float | None = None,
) -> ModelInfo:
    """Save a small untrained animal model (optionally with a fixed head) to ``out``."""
    model = _tiny_network(tuple(organs), head_bias, seed)
    info = ModelInfo(
        model_id=new_model_id("transfer"),
        architecture=model.architecture(),
        organs=tuple(organs),
        preprocess=PreprocessConfig(
            window=window,
            size=size,
            spacing=spacing,
            intensity=None if spacing is None else (40.0, 300.0),
        ),
        stage="transfer",
        species="rabbit",
        metrics={"val_mean_dice": 0.5},
    )
    save_model(model, out, info)
    return info


def child_env() -> dict[str, str]:
    """Environment of a child ``python -m vetseg.cli`` process (one thread: shared machine)."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def kill_when(
    args: list[str | Path], ready: Callable[[], bool], timeout: float = 120.0
) -> tuple[bool, str]:
    """Start ``python -m vetseg.cli ARGS``, ``kill -9`` it once ``ready()`` holds.

    Returns:
        ``(killed, output)``: killed is False when the process ended before ``ready()`` held.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "vetseg.cli", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=child_env(),
        cwd=REPO,
    )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False, process.stdout.read().decode() if process.stdout else ""
            if ready():
                process.kill()  # SIGKILL: no cleanup code runs
                process.wait()
                return True, ""
            time.sleep(0.02)
        raise TimeoutError(f"child {args} never became ready")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()


def db_rows(workspace: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Query a workspace database from outside (read-only, tolerant of a busy writer)."""
    try:
        db = sqlite3.connect(f"file:{workspace / 'vetseg.db'}?mode=ro", uri=True, timeout=1.0)
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()
    except sqlite3.OperationalError:
        return []


def temp_leftovers(root: Path) -> list[Path]:
    """Temporary files of atomic writes under ``root`` (none may survive a finished command)."""
    return [p for p in root.rglob(".*.tmp-*")]
