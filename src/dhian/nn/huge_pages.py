"""A model's weights moved into memory backed by transparent huge pages (2 MiB pages, Linux).

Owns :func:`in_huge_pages` and :func:`huge_pages_available`.

Why: a decoding step reads every weight once, so its speed is the memory bandwidth it gets.
With the usual 4 KiB pages a stream over hundreds of MB misses the TLB every 4 KiB; on 2 MiB
pages dhian's bf16 kernel read SmolLM2's weights at ~28 GB/s instead of ~22.5 (the same
kernel, the same bytes, one process, docs/speed.md). Linux gives an anonymous mapping huge
pages when ``/sys/kernel/mm/transparent_hugepage/enabled`` is ``always`` or, after
``madvise(MADV_HUGEPAGE)`` as here, ``madvise``; with ``never`` (or on another OS) nothing is
moved and nothing changes.

How: storages of :data:`COLLAPSE_BYTES` or more (an embedding table, the biggest
projections) are turned into huge pages where they lie (``madvise(MADV_COLLAPSE)``, Linux 6.1+,
on the 2 MiB-aligned part of their memory: no copy, so no second copy in memory at any time).
The others (most projections are a few hundred KB to a few MB: too small to hold an aligned
2 MiB page of their own) go into one anonymous ``mmap`` arena (2 MiB aligned, advised
``MADV_HUGEPAGE``): each storage's bytes are copied there once and every tensor on that storage
is re-pointed in place (``Tensor.set_``: the same tensor objects, shapes, strides and values —
tied weights stay one tensor). Peak memory while moving: the model plus its largest arena
storage. The arena lives as long as a tensor uses it. Moving or casting the module afterwards
(``.to``) gives ordinary memory again.
Imports: stdlib, torch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import mmap
import sys
import weakref
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["huge_pages_available", "in_huge_pages"]

#: the page size the arena is aligned to
HUGE_PAGE = 2 << 20
#: storages smaller than this stay where they are (norm weights and the like: no gain)
MIN_BYTES = 1 << 16
#: storages at least this big are collapsed into huge pages where they lie, not copied
COLLAPSE_BYTES = 4 << 20
#: bytes moved into the arena between two ``malloc_trim`` calls
_TRIM_EVERY = 8 << 20
#: Linux's MADV_COLLAPSE (include/uapi/asm-generic/mman-common.h)
_MADV_COLLAPSE = 25
#: alignment of each storage inside the arena (a cache line; every dtype's size divides it)
_ALIGN = 64
_THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
#: the live arenas: (their mapping, first byte's address, end address)
_arenas: list[tuple[weakref.ref[mmap.mmap], int, int]] = []


def huge_pages_available() -> bool:
    """Whether this OS gives an ``madvise(MADV_HUGEPAGE)`` mapping huge pages (Linux with
    transparent huge pages ``always`` or ``madvise``)."""
    if not sys.platform.startswith("linux") or not hasattr(mmap, "MADV_HUGEPAGE"):
        return False
    try:
        mode = _THP.read_text()
    except OSError:
        return False
    return "[always]" in mode or "[madvise]" in mode


def _arena(nbytes: int) -> Tensor:
    """A uint8 tensor of at least ``nbytes`` bytes over an anonymous mapping advised to use
    huge pages, starting at a 2 MiB boundary."""
    size = nbytes + HUGE_PAGE  # room to start at the first 2 MiB boundary
    area = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    area.madvise(mmap.MADV_HUGEPAGE)
    whole = torch.frombuffer(area, dtype=torch.uint8)  # keeps ``area`` alive
    skip = -whole.data_ptr() % HUGE_PAGE
    _arenas[:] = [a for a in _arenas if a[0]() is not None]
    _arenas.append((weakref.ref(area), whole.data_ptr(), whole.data_ptr() + size))
    return whole[skip : skip + nbytes]


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, looked up once (``find_library`` may run ``ldconfig``)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def _trim(libc: ctypes.CDLL | None) -> None:
    """Give the heap's free memory back to the OS (glibc ``malloc_trim``): the storages just
    copied were freed into the heap, where they would still count as resident."""
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def _collapse(storage: torch.UntypedStorage) -> None:
    """Ask Linux to back the 2 MiB-aligned part of ``storage``'s memory with huge pages, in
    place (a failure — an older kernel, no free huge page — leaves it as it was)."""
    start = -(-storage.data_ptr() // HUGE_PAGE) * HUGE_PAGE
    end = (storage.data_ptr() + storage.nbytes()) // HUGE_PAGE * HUGE_PAGE
    libc = _libc()
    if end > start and libc is not None and hasattr(libc, "madvise"):
        libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_COLLAPSE)


def _in_arena(ptr: int) -> bool:
    return any(ref() is not None and start <= ptr < end for ref, start, end in _arenas)


def in_huge_pages(module: nn.Module) -> nn.Module:
    """``module`` with its large CPU parameters and buffers (storages of at least
    :data:`MIN_BYTES`) in huge pages, in place (see the module docstring); returns ``module``.
    A no-op where :func:`huge_pages_available` is false and for tensors already in an arena."""
    if not huge_pages_available():
        return module
    by_storage: dict[int, list[Tensor]] = {}
    sizes: dict[int, int] = {}
    collapsed: set[int] = set()
    for t in [*module.parameters(), *module.buffers()]:
        if t.device.type != "cpu" or t.is_meta:
            continue
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if storage.nbytes() < MIN_BYTES or _in_arena(key):
            continue
        if storage.nbytes() >= COLLAPSE_BYTES:
            if key not in collapsed:
                collapsed.add(key)
                _collapse(storage)
            continue
        group = by_storage.setdefault(key, [])
        if not any(u is t for u in group):
            group.append(t)
        sizes[key] = storage.nbytes()
    if not by_storage:
        return module
    offsets, total = {}, 0
    for key, nbytes in sizes.items():
        offsets[key] = total
        total += -(-nbytes // _ALIGN) * _ALIGN
    arena = _arena(total)
    new_storage = arena.untyped_storage()
    base = arena.data_ptr() - new_storage.data_ptr()  # the arena's byte offset in its storage
    libc, freed = _libc(), 0
    with torch.no_grad():
        for key, group in by_storage.items():
            old = group[0].untyped_storage()
            start = offsets[key]
            arena[start : start + old.nbytes()].copy_(torch.empty(0, dtype=torch.uint8).set_(old))
            for t in group:
                offset = (base + start) // t.element_size() + t.storage_offset()
                t.set_(new_storage, offset, t.size(), t.stride())
            freed += sizes[key]
            del old  # the last reference: the storage is freed here
            if freed >= _TRIM_EVERY:  # keeps the peak near the model plus a few MB
                _trim(libc)
                freed = 0
    _trim(libc)
    return module
