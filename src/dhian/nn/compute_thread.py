"""One thread for a long-running process's torch work: :func:`on_compute_thread`.

Why: torch's CPU build runs its parallel regions on libgomp (GNU OpenMP). Every thread that
opens a parallel region becomes the master of a libgomp team, whose worker threads live as long
as that thread does. Once libgomp manages more threads than the process has CPUs, it throttles
every thread's spin-wait at a barrier from 300,000 iterations to 1,000 and sleeps on a futex
instead (libgomp's documented ``GOMP_SPINCOUNT`` behaviour), so every short parallel region
pays a sleep and a wake-up. A server that loads its model on the main thread and computes on a
worker thread has two team masters for good. Measured on the 2-core machine with 2 torch
threads: a parallel ``add`` of 2^18 floats took 115 us instead of 24, and SmolLM2 generated
16.0 instead of 24.6 tokens/s on the worker thread while the main thread's team was alive
(docs/speed.md, "Peers in their own process").

:func:`on_compute_thread` runs a function on the process's one compute thread (started on first
use, with the caller's intra-op thread count) and returns its result or raises its exception
there, in the caller. ``dhian serve`` loads, builds and runs its model only there, whichever
thread (batcher, generation worker) asks. A call from the compute thread itself runs inline.
Thread-local torch state (grad mode, inference mode) is the compute thread's own: callees set
what they need (``torch.no_grad`` in the inference functions).

Imports: stdlib, torch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

import torch

__all__ = ["COMPUTE_THREAD_NAME", "on_compute_thread"]

#: the compute thread's name (threading.current_thread().name there)
COMPUTE_THREAD_NAME = "dhian-compute"

P = ParamSpec("P")
R = TypeVar("R")

_executor: ThreadPoolExecutor | None = None
_ident: int | None = None
_lock = threading.Lock()


def _start(threads: int) -> None:
    """Compute-thread initializer: remember its identity, use the creator's thread count."""
    global _ident
    _ident = threading.get_ident()
    torch.set_num_threads(threads)


def _compute_executor() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                1, COMPUTE_THREAD_NAME, initializer=_start, initargs=(torch.get_num_threads(),)
            )
        return _executor


def on_compute_thread(fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """``fn(*args, **kwargs)`` run on the process's compute thread; its result, or its
    exception raised here. Calls from several threads run one at a time, in arrival order."""
    if threading.get_ident() == _ident:
        return fn(*args, **kwargs)
    return _compute_executor().submit(fn, *args, **kwargs).result()
