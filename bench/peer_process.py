"""A benchmark peer in its own process: :class:`PeerProcess` builds an object in a spawned child
and forwards method calls to it (``peer.decode(...)`` runs ``obj.decode(...)`` there).

Why not in the benchmark's process: CTranslate2 and llama.cpp parallelise with OpenMP, and in a
process that imported torch their ``GOMP_*`` calls bind to torch's libgomp (torch loads it
globally), so each of their worker threads becomes one more master of a libgomp team. Once a
process holds more libgomp threads than CPUs, libgomp cuts every thread's spin-wait at a
barrier from 300,000 to 1,000 iterations and sleeps on a futex instead (``GOMP_SPINCOUNT``,
libgomp's documented throttling): measured on the 2-core machine, a torch two-thread parallel
region went from 17 to 100 us and the same dhian greedy decode from ~1,050 to ~710 tok/s while a
CTranslate2 translator that had translated once was alive, and back when it was deleted
(``OMP_WAIT_POLICY=ACTIVE``, which disables the throttling, also restored it). A user runs
each tool in its own process; so does the benchmark. The parent waits in ``recv`` while the
child works, so the two never compete for the cores. The call's round trip (a pipe message of a
few KB) is timed with the work: well under 1 ms against runs of 0.3 s or more.

The child is spawned (not forked: a fork of a process with live OpenMP threads can hang), so
``factory`` must be importable (a module-level class or function); it is called once in the
child with ``args``/``kwargs``. Errors in the child come back as :class:`RuntimeError` with the
child's traceback. Imports: stdlib only.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["PeerProcess"]


def _serve(conn: Connection, factory: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    """Child: build the object, then answer ``(method, args, kwargs)`` messages until None."""
    try:
        obj = factory(*args, **kwargs)
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    conn.send(("ok", None))
    while True:
        message = conn.recv()
        if message is None:
            return
        name, a, kw = message
        try:
            conn.send(("ok", getattr(obj, name)(*a, **kw)))
        except BaseException:
            conn.send(("error", traceback.format_exc()))


class PeerProcess:
    """``factory(*args, **kwargs)`` built in a spawned child; ``peer.NAME(...)`` calls its
    method NAME there and returns the (pickled) result. :meth:`close` ends the child (also at
    exit)."""

    def __init__(self, factory: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_serve, args=(child, factory, args, kwargs), daemon=True, name="bench-peer"
        )
        self._proc.start()
        child.close()
        atexit.register(self.close)
        self._answer(f"building {getattr(factory, '__name__', factory)}")

    def _answer(self, what: str) -> Any:
        try:
            status, value = self._conn.recv()
        except EOFError:
            raise RuntimeError(f"the peer process died while {what}") from None
        if status == "error":
            raise RuntimeError(f"the peer process failed while {what}:\n{value}")
        return value

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self._conn.send((name, args, kwargs))
            return self._answer(f"running {name}")

        return call

    def close(self) -> None:
        """Stop the child (idempotent)."""
        if self._proc.is_alive():
            with contextlib.suppress(BrokenPipeError, OSError):
                self._conn.send(None)
            self._proc.join(timeout=10)
            if self._proc.is_alive():
                self._proc.kill()
        self._conn.close()
