"""The process's compute thread (dhian.nn.compute_thread): results and exceptions come back,
every call runs on the same thread (never the caller's), a call from that thread runs inline,
and it computes with the creator's intra-op thread count."""

from __future__ import annotations

import threading

import pytest
import torch

from dhian.nn.compute_thread import COMPUTE_THREAD_NAME, on_compute_thread


def _where() -> tuple[int, str, int]:
    t = threading.current_thread()
    return threading.get_ident(), t.name, torch.get_num_threads()


def test_one_thread_runs_everything_and_errors_come_back() -> None:
    first, name, threads = on_compute_thread(_where)
    assert first != threading.get_ident() and name.startswith(COMPUTE_THREAD_NAME)
    assert threads == torch.get_num_threads()
    seen = []
    callers = [threading.Thread(target=lambda: seen.append(on_compute_thread(_where)[0]))]
    callers.append(threading.Thread(target=lambda: seen.append(on_compute_thread(_where)[0])))
    for c in callers:
        c.start()
    for c in callers:
        c.join()
    assert seen == [first, first]
    assert on_compute_thread(lambda: on_compute_thread(_where)[0]) == first  # inline, no deadlock
    with pytest.raises(ZeroDivisionError):
        on_compute_thread(lambda: 1 / 0)
    assert on_compute_thread(torch.add, torch.ones(2), 1).tolist() == [2.0, 2.0]
