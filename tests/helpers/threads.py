"""Torch thread counts for tests: tiny models run many times faster on one intra-op thread than
on two when the machine's cores are shared.

Import a fixture into a test module (``from helpers.threads import one_thread  # noqa: F401``)
and it applies to every test there (autouse): :func:`one_thread` per test,
:func:`one_thread_per_module` for a whole module (module-scoped fixtures included).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Every test of the importing module runs on one torch thread."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module", autouse=True)
def one_thread_per_module() -> Iterator[None]:
    """The importing module (its module-scoped fixtures too) runs on one torch thread."""
    with torch_threads(1):
        yield
