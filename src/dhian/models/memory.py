"""Refusing a model too large for this machine before any of it is allocated.

Owns :func:`check_model_memory`: the model is first built on PyTorch's ``meta`` device (shapes,
no storage, no RNG draws), its parameter and buffer bytes are summed, and when they exceed the
memory this machine has available a one-line :class:`~dhian.errors.ConfigError` names the
setting that made it large (the config number that sizes its largest tensor), the estimated
size and the memory there is — instead of the allocator's RuntimeError (or the OOM killer)
half-way through construction. Also :func:`available_memory` and :func:`human_bytes`.
Imports: stdlib, torch, :mod:`dhian.errors`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from dhian.errors import ConfigError

__all__ = ["available_memory", "check_model_memory", "human_bytes"]


def human_bytes(n: float) -> str:
    """``8000000000000`` → ``"7.3 TiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover - the loop returns


def available_memory() -> int | None:
    """Bytes of memory available now (Linux ``MemAvailable``; else physical memory), or None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


_SIZES = re.compile(r"sizes=\[([0-9, ]+)\]")


def _meta_size(build: Callable[[], nn.Module]) -> tuple[int, int, str, tuple[int, ...]] | None:
    """(bytes, parameters, largest tensor's name, its shape) of the model ``build`` makes, built
    on the meta device; None when the builder cannot run there. A tensor too large even to
    describe (its byte count overflows 64 bits) is reported with its shape and -1 bytes."""
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            model = build()
    except RuntimeError as exc:
        sizes = _SIZES.search(str(exc))
        if "overflow" in str(exc) and sizes:
            shape = tuple(int(s) for s in sizes.group(1).split(","))
            return -1, math.prod(shape), "a tensor", shape
        return None
    except Exception:  # a builder that needs real storage: no estimate, build normally
        return None
    size = params = 0
    largest: tuple[int, str, tuple[int, ...]] = (0, "", ())
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        nbytes = t.numel() * t.element_size()
        size += nbytes
        params += t.numel() if isinstance(t, nn.Parameter) else 0
        if nbytes > largest[0]:
            largest = (nbytes, name, tuple(t.shape))
    return size, params, largest[1], largest[2]


def _culprit(cfg: Any, shape: tuple[int, ...], extra: dict[str, Any]) -> str:
    """``model.embed_dim=1000000000``: the config (or vocabulary) number that sizes ``shape``
    — one of its dimensions, else the largest setting within a factor 4 of its largest
    dimension (a derived size such as embed_dim + 2 * hidden_dim); "" when none fits."""
    numbers: list[tuple[int, str]] = []
    if dataclasses.is_dataclass(cfg):
        for f in dataclasses.fields(cfg):
            value = getattr(cfg, f.name)
            if isinstance(value, int) and not isinstance(value, bool):
                numbers.append((value, f"model.{f.name}={value}"))
    for key, value in extra.items():
        if isinstance(value, int) and not isinstance(value, bool):
            name = "data.vocab_size" if "vocab" in key else key
            numbers.append((value, f"{name} ({key}={value})"))
    exact = [n for n in numbers if n[0] in shape]
    if exact:
        return max(exact)[1]
    near = [n for n in numbers if shape and max(shape) / 4 <= n[0] <= max(shape)]
    return max(near)[1] if near else ""


def check_model_memory(
    build: Callable[[], nn.Module],
    cfg: Any,
    sizes: dict[str, Any] | None = None,
    limit: int | None = None,
) -> None:
    """Raise :class:`ConfigError` when the model ``build()`` would make needs more memory than
    ``limit`` bytes (default: :func:`available_memory`). ``cfg`` (the family config) and
    ``sizes`` (vocabulary sizes...) are searched for the setting to blame."""
    limit = available_memory() if limit is None else limit
    if limit is None:
        return
    found = _meta_size(build)
    if found is None:
        return
    size, params, name, shape = found
    if 0 <= size <= limit:
        return
    setting = _culprit(cfg, shape, sizes or {})
    blame = f"{setting} makes" if setting else "these settings make"
    fix = f"lower {setting.split('=')[0].split(' ')[0]}" if setting else "make the model smaller"
    raise ConfigError(
        f"{blame} a model of {'over ' if size < 0 else ''}{params:,} parameters needing "
        f"{'more than 8 EiB' if size < 0 else f'about {human_bytes(size)}'} for its weights alone (largest: {name} {'x'.join(map(str, shape))}), more than the "
        f"{human_bytes(limit)} of memory available; {fix}"
    )
