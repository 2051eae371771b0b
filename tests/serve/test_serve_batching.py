"""The batcher on its own (no model, no HTTP): grouping by op and params, the batch size cap,
error isolation, cancellation, backpressure and draining on stop."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from dhian.decoding.cancel import check_cancel
from dhian.serve.batching import Batcher, QueueFull, ShuttingDown


class Recorder:
    """A handler that records each call's (params, items) and can be held at a gate."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, list[Any]]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, params: Any, items: list[Any]) -> list[Any]:
        self.entered.set()
        assert self.gate.wait(10)
        if "boom" in items:
            raise ValueError("boom is not a number")
        self.calls.append((params, list(items)))
        return [f"{params}:{x}" for x in items]


def held_batcher(**kwargs: Any) -> tuple[Batcher, Recorder]:
    """A started batcher whose worker is held inside a first call (on op "a", item "hold")."""
    rec = Recorder()
    b = Batcher({"a": rec, "solo": rec}, batched=["a"], **kwargs).start()
    rec.gate.clear()
    b.submit("a", 0, ["hold"])
    assert rec.entered.wait(10)
    return b, rec


def test_groups_same_op_and_params_up_to_max_batch():
    b, rec = held_batcher(max_batch=5, max_queue=100, max_wait=0.05)
    futures = [b.submit("a", i % 2, [f"x{i}", f"y{i}"]) for i in range(10)]  # 10 jobs, 2 items
    futures.append(b.submit("a", 0, [f"z{i}" for i in range(7)]))  # larger than max_batch
    rec.gate.set()
    results = [f.result(10) for f in futures]
    b.stop(10)
    for i, r in enumerate(results[:10]):
        assert r == [f"{i % 2}:x{i}", f"{i % 2}:y{i}"]  # each job gets its own slice
    assert results[10] == [f"0:z{i}" for i in range(7)]
    sizes = [len(items) for _, items in rec.calls[1:]]
    assert all(n <= 5 for n in sizes[:-1]) and sizes[-1] == 7, sizes  # the big job runs alone
    # params never mix: every call's items come from jobs with its params
    for params, items in rec.calls[1:]:
        nums = [int(x[1:]) for x in items if x[0] in "xy"]
        assert all(n % 2 == params for n in nums)
    assert len(rec.calls) - 1 < 11  # fewer calls than jobs
    assert b.stats.largest == 7 and b.stats.jobs == 12


def test_unbatched_ops_run_one_job_per_call():
    b, rec = held_batcher(max_batch=8)
    futures = [b.submit("solo", None, [i]) for i in range(4)]
    rec.gate.set()
    assert [f.result(10) for f in futures] == [[f"None:{i}"] for i in range(4)]
    b.stop(10)
    assert [items for _, items in rec.calls[1:]] == [[0], [1], [2], [3]]


def test_an_error_reaches_only_its_job():
    b, rec = held_batcher(max_batch=8, max_wait=0.05)
    ok1 = b.submit("a", 0, ["one"])
    bad = b.submit("a", 0, ["boom"])
    ok2 = b.submit("a", 0, ["two"])
    rec.gate.set()
    assert ok1.result(10) == ["0:one"] and ok2.result(10) == ["0:two"]
    with pytest.raises(ValueError, match="boom"):
        bad.result(10)
    b.stop(10)


def test_queue_bound_cancellation_and_drain_on_stop():
    b, rec = held_batcher(max_batch=1, max_queue=2)
    first = b.submit("a", 0, ["p"])
    cancelled = b.submit("a", 0, ["q"])
    with pytest.raises(QueueFull):
        b.submit("a", 0, ["r"])
    assert b.stats.rejected == 1 and b.depth == 2 and b.in_flight == 3
    assert cancelled.cancel()  # e.g. its request timed out while waiting
    stopper = threading.Thread(target=b.stop, args=(10,))
    stopper.start()
    time.sleep(0.05)
    with pytest.raises(ShuttingDown):
        b.submit("a", 0, ["s"])
    rec.gate.set()
    stopper.join(10)
    assert first.result(0) == ["0:p"]  # queued work finished before the worker ended
    assert [items for _, items in rec.calls] == [["hold"], ["p"]]
    assert not b._thread.is_alive()


def test_rejects_bad_settings_and_unknown_ops():
    with pytest.raises(ValueError, match="max_batch"):
        Batcher({"a": Recorder()}, max_batch=0)
    b = Batcher({"a": Recorder()})
    with pytest.raises(KeyError, match="no handler"):
        b.submit("nope", None, [1])


def test_an_abandoned_running_job_stops_at_the_next_check_and_is_not_retried():
    calls: list[list[Any]] = []
    checks = {"n": 0}

    def handler(_params: Any, items: list[Any]) -> list[Any]:
        calls.append(list(items))
        for _ in range(400):  # a "decoding loop" of 400 x 10 ms
            checks["n"] += 1
            check_cancel(batcher.should_stop)
            time.sleep(0.01)
        return items

    batcher = Batcher({"op": handler}, max_wait=0.0).start()
    try:
        future = batcher.submit("op", None, ["a"])
        time.sleep(0.1)
        assert future.running()
        batcher.abandon(future)
        with pytest.raises(Exception, match="cancelled"):
            future.result(2.0)
        assert checks["n"] < 40 and calls == [["a"]]  # stopped early, no one-by-one retry
        assert batcher.stats.cancelled == 1
        assert batcher.submit("op", None, ["b"]) is not None  # the worker goes on
    finally:
        batcher.stop(0.1)


def test_a_call_runs_on_while_one_of_its_jobs_still_waits():
    def handler(_params: Any, items: list[Any]) -> list[Any]:
        for _ in range(30):
            if batcher.should_stop():
                raise RuntimeError("stopped although a job still waits")
            time.sleep(0.01)
        return items

    batcher = Batcher({"op": handler}, max_wait=0.05).start()
    try:
        kept, left = batcher.submit("op", None, ["a"]), batcher.submit("op", None, ["b"])
        time.sleep(0.1)
        batcher.abandon(left)
        assert kept.result(5.0) == ["a"]
    finally:
        batcher.stop(1.0)
