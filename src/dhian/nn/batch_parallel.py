"""Batch-parallel CPU inference: the sentences of a batch split across single-threaded workers.

Owns :func:`batch_parts` (how many parts a batch should be cut into, or 1 for "run as is") and
:func:`run_parts` (run a function on each part in its own worker thread, each worker computing
with one intra-op thread, and give back the results in order).

Why: with PyTorch's intra-op threads (OpenMP), every operator of a forward is one parallel
region — a fork, a static split of its work and a barrier — and a BERT-base forward has ~200 of
them. Each barrier waits for the slowest thread, so any thread that is descheduled or simply
late stalls the other (on a shared or loaded machine the two-thread forward did *more* CPU work
than one thread: the waiting thread spins). Cutting the batch instead gives each thread a whole,
independent forward of its sentences: no barriers inside the forward, one join at the end.
Rows of an encoder batch are independent, so the result is the same function (exactly, for
float32/bf16; int8 layers that quantize their input with one scale per tensor then pick each
part's scale from its own rows — a different rounding of the same order, see docs/speed.md).

The workers are a process-wide pool per part count, created on first use; each worker sets its
own OpenMP thread count to 1 once (``torch.set_num_threads(1)`` in the worker, after which the
caller's thread count is restored: the count is per thread for OpenMP and oneDNN, and the
workers keep theirs). Grad mode and inference mode are thread-local in torch, so each part runs
under the caller's modes. Use only for inference without autograd (the callers check
:func:`batch_parts`, which says 1 when gradients are on, under autocast, off the CPU, or for a
batch too small to pay for the hand-off).

Notation: B batch, T length. Imports: stdlib, torch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

__all__ = ["MIN_TOKENS_PER_PART", "batch_parts", "run_parts"]

#: a part gets at least this many tokens (B·T / parts); smaller batches run as one
MIN_TOKENS_PER_PART = 256

R = TypeVar("R")

_pools: dict[int, ThreadPoolExecutor] = {}
_lock = threading.Lock()


def batch_parts(batch: int, length: int, device: torch.device, enabled: bool = True) -> int:
    """How many parts a (B, T) batch on ``device`` should run as: ``min(threads, B)`` limited
    so that each part has at least :data:`MIN_TOKENS_PER_PART` tokens, and 1 (run as is) when
    ``enabled`` is false, off the CPU, with one intra-op thread, with gradients enabled or under
    CPU autocast (thread-local states the workers would not see)."""
    if not enabled or device.type != "cpu" or torch.is_grad_enabled():
        return 1
    if torch.is_autocast_enabled("cpu"):
        return 1
    parts = min(torch.get_num_threads(), batch, (batch * length) // MIN_TOKENS_PER_PART)
    return max(parts, 1)


def _single_threaded() -> None:
    """Worker initializer: one intra-op thread in this worker (OpenMP and oneDNN read it per
    thread; ``get_num_threads`` makes torch's lazy per-thread setup happen now, with 1)."""
    torch.set_num_threads(1)
    torch.get_num_threads()


def _pool(workers: int) -> ThreadPoolExecutor:
    """The pool of ``workers`` single-threaded workers, every worker started before returning
    (so the caller's thread count, which ``torch.set_num_threads`` in a starting worker changes
    process-wide, is restored once and for all)."""
    with _lock:
        pool = _pools.get(workers)
        if pool is None:
            threads = torch.get_num_threads()
            pool = ThreadPoolExecutor(workers, "dhian-batch", initializer=_single_threaded)
            started = threading.Barrier(workers)
            for f in [pool.submit(started.wait) for _ in range(workers)]:
                f.result()
            torch.set_num_threads(threads)
            _pools[workers] = pool
        return pool


def _part_bounds(batch: int, parts: int) -> list[slice]:
    """``parts`` contiguous slices of range(batch), sizes differing by at most one."""
    size, extra = divmod(batch, parts)
    bounds, start = [], 0
    for i in range(parts):
        stop = start + size + (1 if i < extra else 0)
        bounds.append(slice(start, stop))
        start = stop
    return bounds


def run_parts(fn: Callable[[slice], R], batch: int, parts: int) -> Sequence[R]:
    """``[fn(rows) for rows in the parts of range(batch)]``, each call in its own
    single-threaded worker (under the caller's grad and inference modes), results in order.
    ``parts`` = 1 calls ``fn(slice(0, batch))`` here."""
    bounds = _part_bounds(batch, parts)
    if parts <= 1:
        return [fn(bounds[0])]
    grad = torch.is_grad_enabled()
    inference = torch.is_inference_mode_enabled()

    def call(rows: slice) -> R:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            return fn(rows)

    futures = [_pool(parts).submit(call, rows) for rows in bounds]
    return [f.result() for f in futures]
