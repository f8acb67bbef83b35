"""Model tests run on one thread: tiny tensors gain nothing from more, and on a shared 2-core
machine a second thread spin-waits against other jobs (10x slower forward passes seen)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="package", autouse=True)
def _single_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
