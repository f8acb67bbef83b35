"""Fixtures: a workspace with labelled and unlabelled tiny cases and a current model."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests.workflow.helpers import ORGANS, tiny_model, write_case
from vetseg.workflow.register import add_scans, use_model
from vetseg.workflow.workspace import Workspace, WorkspaceSettings


@pytest.fixture(scope="package", autouse=True)
def _single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass
class Setup:
    """A workspace on disk and where its inputs came from."""

    root: Path
    inputs: Path
    truth: dict[str, Path]  # case id -> true label file (the vet's answer in tests)
    model: Path


def make_workspace(
    tmp_path: Path, labelled: int = 3, unlabelled: int = 4, with_model: bool = True
) -> Setup:
    inputs = tmp_path / "inputs"
    root = tmp_path / "ws"
    settings = WorkspaceSettings(species="rabbit", organs=ORGANS, synthetic=True)
    truth: dict[str, Path] = {}
    scans, labels, pool = [], [], []
    for i in range(labelled):
        image, label = write_case(inputs, f"lab{i}", seed=i)
        scans.append(image)
        labels.append(label)
    for i in range(unlabelled):
        image, label = write_case(inputs, f"new{i}", seed=100 + i)
        pool.append(image)
        truth[f"new{i}"] = label
    model_dir = tmp_path / "model"
    tiny_model(model_dir)
    with Workspace.create(root, settings) as ws:
        if labelled:
            add_scans(ws, scans, labels)
        if unlabelled:
            add_scans(ws, pool)
        if with_model:
            use_model(ws, model_dir)
    return Setup(root, inputs, truth, model_dir)


@pytest.fixture()
def setup(tmp_path: Path) -> Setup:
    """3 labelled cases, 4 unlabelled ones, a current (untrained) model."""
    return make_workspace(tmp_path)
