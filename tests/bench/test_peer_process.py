"""A benchmark peer in its own process (bench/peer_process.py): calls are forwarded to the
object built in the child, which really is another process, and errors come back with the
child's traceback."""

from __future__ import annotations

import collections
import importlib
import os

import pytest
from bench.peer_process import PeerProcess


def test_calls_run_in_another_process_and_errors_come_back() -> None:
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
    with pytest.raises(RuntimeError, match=r"building int[\s\S]*ValueError"):
        PeerProcess(int, "not a number")
