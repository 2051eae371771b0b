"""Dynamic batching: one worker thread runs every model call, grouping concurrent requests.

Owns :class:`Batcher`. Requests are :meth:`Batcher.submit`-ted as jobs ``(op, params, items)``
and answered through a :class:`concurrent.futures.Future`. The worker takes the oldest job,
then gathers the queued jobs with the same ``(op, params)`` (e.g. translate with beam 4) until
``max_batch`` items are collected or ``max_wait`` seconds have passed since it started
gathering, and calls ``handler(params, items)`` once for all of them; each job gets its own
slice of the results. Ops registered as unbatched run one job per call (generation with a
seed, attention). When a batched call raises, its jobs are retried one by one so the error
reaches only the job that caused it.

Backpressure: at most ``max_queue`` jobs wait; :meth:`submit` raises :class:`QueueFull` beyond
(the server answers 503 with Retry-After). A job cancelled while it waits (its request timed
out) is dropped. A running job can be :meth:`Batcher.abandon`-ed (its request timed out or its
client left): handlers pass :meth:`Batcher.should_stop` to their decoding loops, which stop at
the next step once every job of the running call is abandoned (``Cancelled`` from the handler
is then expected and not retried), so the model is free for the next request. :meth:`stop` refuses new jobs, finishes the queued ones, and joins the thread.
The model is only ever touched by the worker thread, so it needs no locking.
Imports: the standard library only.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from typing import Any

__all__ = ["Batcher", "BatcherStats", "QueueFull", "ShuttingDown"]

Handler = Callable[[Any, list[Any]], Sequence[Any]]


class QueueFull(Exception):
    """The queue holds ``max_queue`` jobs already; try again later."""


class ShuttingDown(Exception):
    """The batcher is stopping and takes no new jobs."""


@dataclasses.dataclass
class BatcherStats:
    """Counters since start: ``calls`` handler calls, ``jobs`` answered, ``items`` processed,
    ``largest`` items in one call, ``rejected`` jobs refused because the queue was full,
    ``cancelled`` calls stopped because every job in them was abandoned."""

    calls: int = 0
    jobs: int = 0
    items: int = 0
    largest: int = 0
    rejected: int = 0
    cancelled: int = 0


@dataclasses.dataclass
class _Job:
    op: str
    params: Hashable
    items: list[Any]
    future: Future[list[Any]]
    enqueued: float
    abandoned: bool = False


class Batcher:
    """A bounded queue of jobs served by one worker thread (see the module docstring).

    ``handlers``: op name → ``fn(params, items) -> results`` (one result per item, in order).
    ``batched``: the ops whose jobs may share a call (default: all). ``max_batch``: most items
    per call (a single job larger than that still runs, alone). ``max_wait``: seconds to wait
    for more jobs once the first one is taken.
    """

    def __init__(
        self,
        handlers: dict[str, Handler],
        *,
        batched: Sequence[str] | None = None,
        max_batch: int = 16,
        max_queue: int = 64,
        max_wait: float = 0.005,
        name: str = "dhian-batcher",
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait < 0:
            raise ValueError(
                f"Batcher: max_batch and max_queue must be >= 1 and max_wait >= 0, received "
                f"{max_batch}, {max_queue}, {max_wait}"
            )
        self.handlers = dict(handlers)
        self.batched = set(self.handlers if batched is None else batched)
        self.max_batch, self.max_queue, self.max_wait = max_batch, max_queue, max_wait
        self.stats = BatcherStats()
        self._queue: collections.deque[_Job] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._busy = 0  # jobs taken by the worker and not yet answered
        self._running: list[_Job] = []  # the jobs of the handler call in progress
        self._jobs: dict[int, _Job] = {}  # id(future) -> job, while queued or running
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # ---- client side -----------------------------------------------------------------------
    def start(self) -> Batcher:
        """Start the worker thread (once)."""
        if not self._thread.is_alive():
            self._thread.start()
        return self

    @property
    def depth(self) -> int:
        """Jobs waiting in the queue (not counting the ones being run)."""
        with self._cond:
            return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Jobs waiting or running."""
        with self._cond:
            return len(self._queue) + self._busy

    def submit(self, op: str, params: Hashable, items: Sequence[Any]) -> Future[list[Any]]:
        """Queue ``items`` for ``handlers[op](params, items)``; the future yields their results.

        Raises :class:`QueueFull` when ``max_queue`` jobs wait, :class:`ShuttingDown` after
        :meth:`stop`, ``KeyError`` for an unknown op.
        """
        if op not in self.handlers:
            raise KeyError(f"Batcher: no handler for op {op!r}")
        future: Future[list[Any]] = Future()
        with self._cond:
            if self._stopping:
                raise ShuttingDown("the server is shutting down")
            if len(self._queue) >= self.max_queue:
                self.stats.rejected += 1
                raise QueueFull(f"{len(self._queue)} requests are queued (limit {self.max_queue})")
            job = _Job(op, params, list(items), future, time.monotonic())
            self._queue.append(job)
            self._jobs[id(future)] = job
            self._cond.notify_all()
        return future

    def abandon(self, future: Future[list[Any]]) -> None:
        """Nobody waits for ``future`` any more: drop its job if queued; if it runs, let the
        running call stop at its next step once all of that call's jobs are abandoned."""
        future.cancel()  # works while queued
        with self._cond:
            job = self._jobs.get(id(future))
            if job is not None:
                job.abandoned = True

    def should_stop(self) -> bool:
        """For handlers (worker thread): True when every job of the running call was
        abandoned, so its decoding loop should stop (:mod:`dhian.decoding.cancel`)."""
        running = self._running
        return bool(running) and all(job.abandoned for job in running)

    def stop(self, timeout: float | None = None) -> None:
        """Take no new jobs, finish every queued one, then end the worker thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ---- worker side -----------------------------------------------------------------------
    def _take(self, first: _Job, size: int) -> list[_Job]:
        """Remove and return the queued jobs that can join ``first``'s group of ``size`` items
        without passing ``max_batch`` (lock held)."""
        taken: list[_Job] = []
        for job in list(self._queue):
            if size >= self.max_batch:
                break
            if (job.op, job.params) != (first.op, first.params):
                continue
            if size + len(job.items) > self.max_batch:
                continue
            self._queue.remove(job)
            taken.append(job)
            size += len(job.items)
        return taken

    def _gather(self) -> list[_Job] | None:
        """The next group of jobs to run as one call, or None when stopping with nothing left."""
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            first = self._queue.popleft()
            group = [first]
            if first.op in self.batched:
                deadline = time.monotonic() + self.max_wait
                while True:
                    group += self._take(first, sum(len(j.items) for j in group))
                    full = sum(len(j.items) for j in group) >= self.max_batch
                    left = deadline - time.monotonic()
                    if full or left <= 0 or self._stopping:
                        break
                    self._cond.wait(left)
            self._busy += len(group)
            return group

    def _run(self) -> None:
        while True:
            group = self._gather()
            if group is None:
                return
            live = [j for j in group if j.future.set_running_or_notify_cancel()]
            try:
                if live:
                    self._call(live)
            finally:
                self._running = []
                with self._cond:
                    self._busy -= len(group)
                    for job in group:
                        self._jobs.pop(id(job.future), None)

    def _call(self, jobs: list[_Job]) -> None:
        items = [item for job in jobs for item in job.items]
        handler = self.handlers[jobs[0].op]
        self._running = jobs
        try:
            results = list(handler(jobs[0].params, items))
            if len(results) != len(items):
                raise RuntimeError(
                    f"handler {jobs[0].op!r} returned {len(results)} results for {len(items)} items"
                )
        except Exception as exc:  # reported to the waiting request(s)
            if self.should_stop():  # abandoned on purpose: nobody to answer, nothing to retry
                self._record(len(items))
                self.stats.cancelled += 1
                for job in jobs:
                    job.future.set_exception(exc)
                return
            if len(jobs) > 1:
                for job in jobs:  # find the culprit: each job alone
                    self._call([job])
                return
            self._record(len(items))
            self.stats.jobs += 1
            jobs[0].future.set_exception(exc)
            return
        self._record(len(items))
        start = 0
        for job in jobs:
            job.future.set_result(results[start : start + len(job.items)])
            start += len(job.items)
        self.stats.jobs += len(jobs)

    def _record(self, n: int) -> None:
        self.stats.calls += 1
        self.stats.items += n
        self.stats.largest = max(self.stats.largest, n)
