"""A benchmark peer in its own process (bench/peer_process.py): calls are forwarded to the
object built in the child, which really is another process, and errors come back with the
child's traceback."""

from __future__ import annotations

import collections
import importlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _repo_on_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``bench`` is a top-level folder of the checkout, not part of the installed package (the
    spawned child inherits this path)."""
    monkeypatch.syspath_prepend(str(ROOT))
    yield


def test_calls_run_in_another_process_and_errors_come_back() -> None:
    from bench.peer_process import PeerProcess

    peer = PeerProcess(collections.Counter, "abracadabra")
    try:
        assert peer.most_common(2) == [("a", 5), ("b", 2)]
        assert peer.total() == 11
        with pytest.raises(RuntimeError, match="AttributeError"):
            peer.no_such_method()
        assert peer.most_common(1) == [("a", 5)]  # still serving after an error
    finally:
        peer.close()
    peer.close()  # idempotent
    child_os = PeerProcess(importlib.import_module, "os")
    try:
        assert child_os.getpid() != os.getpid()
    finally:
        child_os.close()


def test_a_failing_build_is_an_error_naming_the_factory() -> None:
    from bench.peer_process import PeerProcess

    with pytest.raises(RuntimeError, match=r"building int[\s\S]*ValueError"):
        PeerProcess(int, "not a number")
