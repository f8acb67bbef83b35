"""Fixtures: a pre-labelled workspace, the review app on it, and a live uvicorn server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests.workflow.conftest import Setup, make_workspace
from vetseg.workflow.prelabel import prelabel
from vetseg.workflow.workspace import Workspace

TOKEN = "test-token-0123456789abcdef"


@pytest.fixture(scope="package", autouse=True)
def _single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def workspace(tmp_path: Path) -> Setup:
    """2 labelled cases, 3 unlabelled ones of which the model pre-labelled all 3."""
    setup = make_workspace(tmp_path, labelled=2, unlabelled=3)
    with Workspace.open(setup.root) as ws:
        prelabel(ws, cases=3)
    return setup


@dataclass
class LiveServer:
    """A review server running in a thread of the test process."""

    url: str
    root: Path
    port: int
    uploads: Path  # the app's folder of uploads in progress


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture()
def live_server(workspace: Setup) -> Iterator[LiveServer]:
    """uvicorn serving the review app on a free port of 127.0.0.1."""
    import uvicorn

    from vetseg.server.app import create_app

    port = free_port()
    app = create_app(workspace.root, TOKEN)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the review server did not start")
        time.sleep(0.05)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", workspace.root, port, app.state.uploads)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
