"""The generation worker of a served LLaMA-family LM: one thread drives one
:class:`dhian.inference.text_engine.TextEngine`, so concurrent ``/v1`` requests share its
decoding steps (continuous batching).

Owns :class:`EngineWorker` and :class:`EngineStats`. :meth:`EngineWorker.submit` hands over a
request (its prompts, sampling settings and for a stream ``on_text(row, increment)``) and
returns a :class:`concurrent.futures.Future` of its :class:`~dhian.inference.generate.Completion`
list. Between two decoding steps the thread takes the new requests (each prompt waits in the
engine's queue until a row is free, then joins the running batch) and cancels the abandoned
ones, so a request whose client left or whose time ran out (:meth:`EngineWorker.abandon`) gives
its row back within one step; its future then holds ``None``.

Backpressure as in :class:`dhian.serve.batching.Batcher`: at most ``max_queue`` requests wait
for a row (:class:`~dhian.serve.batching.QueueFull` beyond; the server answers 503), none are
taken after :meth:`EngineWorker.stop` (:class:`~dhian.serve.batching.ShuttingDown`), which
lets the running and waiting ones finish. A step that raises fails the requests in the engine
(their futures get the exception) and the engine starts again empty. ``lock`` (shared with the
batcher's handlers when both use the model) is held for every step.
Imports: the standard library, :mod:`dhian.inference.text_engine`, :mod:`dhian.serve.batching`,
:mod:`dhian.nn.compute_thread` (every engine step runs on the process's compute thread).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from typing import Any

from dhian.errors import DhianError
from dhian.inference.generate import Completion
from dhian.inference.text_engine import TextEngine, TextJob
from dhian.nn.compute_thread import on_compute_thread
from dhian.serve.batching import QueueFull, ShuttingDown

__all__ = ["EngineStats", "EngineWorker"]

log = logging.getLogger("dhian.serve")

OnText = Callable[[int, str], None]


@dataclasses.dataclass
class EngineStats:
    """Counters since start: ``requests`` answered, ``cancelled`` requests abandoned while
    waiting or running, ``rejected`` refused because the queue was full, ``failed`` answered
    with an error, ``largest`` most rows decoded in one step."""

    requests: int = 0
    cancelled: int = 0
    rejected: int = 0
    failed: int = 0
    largest: int = 0


@dataclasses.dataclass(eq=False)
class _Ticket:
    """One request: its prompts, sampling keywords, stream callback, future and engine jobs."""

    prompts: list[str]
    sampling: dict[str, Any]
    on_text: OnText | None
    future: Future[list[Completion] | None]
    jobs: list[TextJob] = dataclasses.field(default_factory=list)
    abandoned: bool = False


class EngineWorker:
    """One thread stepping ``engine`` (see the module docstring)."""

    def __init__(
        self,
        engine: TextEngine,
        max_queue: int = 64,
        lock: threading.Lock | None = None,
        name: str = "dhian-engine",
    ) -> None:
        if max_queue < 1:
            raise ValueError(f"EngineWorker: max_queue must be >= 1, got {max_queue}")
        self.engine, self.max_queue = engine, max_queue
        self.stats = EngineStats()
        self._lock = lock or threading.Lock()
        self._cond = threading.Condition()
        self._inbox: collections.deque[_Ticket] = collections.deque()
        self._tickets: dict[int, _Ticket] = {}  # id(future) -> ticket, until answered
        self._owner: dict[int, _Ticket] = {}  # id(job) -> its ticket, while it runs
        self._running: list[_Ticket] = []  # tickets with jobs in the engine (worker only)
        self._waiting = 0  # tickets with a prompt not yet in a row (published by the worker)
        self._active = 0  # rows in use (published by the worker)
        self._abandon = False  # a ticket was abandoned since the worker last looked
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    # ---- client side -----------------------------------------------------------------------
    def start(self) -> EngineWorker:
        """Start the worker thread (once)."""
        if not self._thread.is_alive():
            self._thread.start()
        return self

    @property
    def depth(self) -> int:
        """Requests waiting for a row."""
        with self._cond:
            return len(self._inbox) + self._waiting

    @property
    def active(self) -> int:
        """Rows being decoded."""
        with self._cond:
            return self._active

    @property
    def in_flight(self) -> int:
        """Requests waiting or running."""
        with self._cond:
            return len(self._tickets)

    def submit(
        self, prompts: Sequence[str], sampling: dict[str, Any], on_text: OnText | None = None
    ) -> Future[list[Completion] | None]:
        """Queue one request: ``prompts`` (one completion each, in order), ``sampling`` (the
        keywords of :meth:`TextEngine.submit`: ``max_new_tokens``, ``temperature``, ``top_k``,
        ``top_p``, ``repetition_penalty``, ``stop``, ``seed``; prompt ``i`` samples with
        ``seed + i``), ``on_text(i, increment)`` for a stream. The future holds the
        completions, ``None`` once abandoned, or the error (DataError, ValueError) that refused
        a prompt. Raises QueueFull / ShuttingDown."""
        future: Future[list[Completion] | None] = Future()
        with self._cond:
            if self._stopping:
                raise ShuttingDown("the server is shutting down")
            queued = len(self._inbox) + self._waiting
            if queued >= self.max_queue:
                self.stats.rejected += 1
                raise QueueFull(f"{queued} requests wait for the model (limit {self.max_queue})")
            ticket = _Ticket(list(prompts), dict(sampling), on_text, future)
            self._inbox.append(ticket)
            self._tickets[id(future)] = ticket
            self._cond.notify_all()
        return future

    def abandon(self, future: Future[Any]) -> None:
        """Nobody waits for ``future`` any more: its prompts leave the engine's queue or their
        rows before the next step, and it resolves to ``None``."""
        with self._cond:
            ticket = self._tickets.get(id(future))
            if ticket is not None and not ticket.abandoned:
                ticket.abandoned = True
                self._abandon = True
                self._cond.notify_all()

    def stop(self, timeout: float | None = None) -> None:
        """Take no new requests, finish the running and waiting ones, end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ---- worker side -----------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._inbox or self._abandon or self.engine.busy):
                    if self._stopping:
                        return
                    self._cond.wait()
                new = list(self._inbox)
                self._inbox.clear()
                self._waiting += len(new)  # until _publish counts them in the engine's queue
                self._abandon = False
            for ticket in new:
                self._start(ticket)
            for ticket in list(self._running):
                if ticket.abandoned or ticket.future.cancelled():
                    self._cancel(ticket)
            if self.engine.busy:
                self._publish()  # what the step will hold: free rows take the oldest prompts
                self._step()
            self._publish()

    def _start(self, ticket: _Ticket) -> None:
        """Submit ``ticket``'s prompts to the engine (or answer it now: abandoned, refused)."""
        if ticket.abandoned or ticket.future.cancelled():
            self.stats.cancelled += 1
            self._answer(ticket, None)
            return
        seed = ticket.sampling.get("seed")
        try:
            for i, prompt in enumerate(ticket.prompts):
                emit = None
                if ticket.on_text is not None:
                    emit = _row_callback(ticket.on_text, i)
                sampling = {**ticket.sampling, "seed": None if seed is None else seed + i}
                job = self.engine.submit(prompt, on_text=emit, **sampling)
                ticket.jobs.append(job)
                self._owner[id(job)] = ticket
        except (DhianError, ValueError) as exc:  # a prompt that does not fit: the whole request
            for job in ticket.jobs:
                self.engine.cancel(job)
            self._answer(ticket, exc)
            return
        self._running.append(ticket)
        self._maybe_done(ticket)  # max_tokens 0: done already

    def _cancel(self, ticket: _Ticket) -> None:
        for job in ticket.jobs:
            self.engine.cancel(job)
        self.stats.cancelled += 1
        self._answer(ticket, None)

    def _step(self) -> None:
        try:
            with self._lock:
                finished = on_compute_thread(self.engine.step)  # one torch thread: see there
        except Exception as exc:  # a model failure: fail what is in the engine, start afresh
            log.exception("generation step failed; failing the %d requests in it", self._active)
            owners = [self._owner.get(id(job)) for job in self.engine.reset()]
            for ticket in {id(t): t for t in owners if t is not None}.values():
                self._answer(ticket, exc)
            return
        self.stats.largest = max(self.stats.largest, self.engine.active + len(finished))
        self._publish()  # before answering: a client that reads /health next sees its row free
        for job in finished:
            owner = self._owner.get(id(job))
            if owner is not None:
                self._maybe_done(owner)

    def _maybe_done(self, ticket: _Ticket) -> None:
        """Answer ``ticket`` once all of its jobs have stopped."""
        if not all(job.done for job in ticket.jobs):
            return
        if ticket.abandoned or ticket.future.cancelled():
            self._cancel(ticket)
            return
        error = next((job.error for job in ticket.jobs if job.error is not None), None)
        if error is not None:
            self._answer(ticket, error)
            return
        try:
            completions = [job.completion() for job in ticket.jobs]  # streams the held-back text
        except Exception as exc:  # on_text failed on the last increment
            self._answer(ticket, exc)
            return
        self._answer(ticket, completions)

    def _answer(self, ticket: _Ticket, result: list[Completion] | Exception | None) -> None:
        """Resolve the ticket's future (unless it was cancelled) and forget the ticket."""
        for job in ticket.jobs:
            self._owner.pop(id(job), None)
        if ticket in self._running:
            self._running.remove(ticket)
        with self._cond:
            self._tickets.pop(id(ticket.future), None)
        if isinstance(result, Exception):
            self.stats.failed += 1
        elif result is not None:
            self.stats.requests += 1
        with contextlib.suppress(InvalidStateError):  # cancelled by its waiter meanwhile
            if isinstance(result, Exception):
                ticket.future.set_exception(result)
            else:
                ticket.future.set_result(result)

    def _publish(self) -> None:
        """Share the engine's occupancy with the client side (for the queue bound, /health):
        the prompts that the next step admits into free rows count as running."""
        queued = self.engine.waiting()
        free = max(self.engine.max_batch - self.engine.active, 0)
        left = {id(job) for job in queued[free:]}
        count = sum(1 for t in self._running if any(id(j) in left for j in t.jobs))
        with self._cond:
            self._waiting = count
            self._active = self.engine.active + min(free, len(queued))


def _row_callback(on_text: OnText, row: int) -> Callable[[str], None]:
    return lambda text: on_text(row, text)
