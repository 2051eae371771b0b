"""Optimizer and freezing for the trainer.

Owns :func:`build_optimizer` (AdamW, ``fused``/``foreach`` where the device allows; no weight
decay on biases, norms and other 1-D parameters), :func:`apply_freeze` (``train.freeze``:
comma-separated parameter-name prefixes get ``requires_grad=False``)
and :func:`autocast` (bf16 on CPU or CUDA when ``train.bf16``) with :func:`resolve_bf16`, which
decides ``train.bf16: auto``: on for a CPU with bf16 instructions (``avx512_bf16`` or
``amx_bf16`` in ``/proc/cpuinfo``: there bf16 autocast trains faster) and for a CUDA device that
supports bf16; off elsewhere (a CPU without them emulates bf16 and runs slower than fp32).
Imports: stdlib, torch, :mod:`dhian.config`, :mod:`dhian.errors`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch

from dhian.config import TrainConfig
from dhian.errors import ConfigError, nearest


def apply_freeze(model: torch.nn.Module, freeze: str) -> list[str]:
    """Set ``requires_grad=False`` on parameters whose name starts with a prefix in ``freeze``.

    ``freeze`` is comma-separated (``"encoder,src_embed"``); returns the frozen names. A prefix
    that matches nothing is a ConfigError naming the closest parameter prefix.
    """
    prefixes = [p.strip() for p in freeze.split(",") if p.strip()]
    if not prefixes:
        return []
    names = [n for n, _ in model.named_parameters()]
    frozen: list[str] = []
    for prefix in prefixes:
        hits = [n for n in names if n == prefix or n.startswith(prefix.rstrip(".") + ".")]
        hits = hits or [n for n in names if n.startswith(prefix)]
        if not hits:
            tops = sorted({n.split(".")[0] for n in names})
            raise ConfigError(
                f"train.freeze prefix {prefix!r} matches no parameter{nearest(prefix, tops)}; "
                f"top-level modules: {', '.join(tops)}"
            )
        frozen.extend(hits)
    params = dict(model.named_parameters())
    for n in frozen:
        params[n].requires_grad_(False)
    if all(not p.requires_grad for p in model.parameters()):
        raise ConfigError(f"train.freeze={freeze!r} freezes every parameter; nothing would train")
    return sorted(set(frozen))


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters (weight decay only on tensors with ≥ 2 dims)."""
    if cfg.optimizer.lower() != "adamw":
        raise ConfigError(
            f"train.optimizer {cfg.optimizer!r} is not supported{nearest(cfg.optimizer, ['adamw'])}; "
            "valid: adamw"
        )
    if cfg.lr <= 0:
        raise ConfigError(f"train.lr must be > 0, got {cfg.lr}")
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    seen: set[int] = set()
    for _, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 else no_decay).append(p)
    groups: list[dict[str, Any]] = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    kwargs: dict[str, Any] = {"lr": cfg.lr, "betas": tuple(cfg.betas), "eps": cfg.eps}
    params = [p for g in groups for p in g["params"]]
    fused_ok = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    if fused_ok:
        try:
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):
            pass
    return torch.optim.AdamW(groups, foreach=True, **kwargs)


#: the /proc/cpuinfo flags of CPUs that compute in bf16 natively
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU flags listed in ``cpuinfo`` (default: ``/proc/cpuinfo``; empty where it is
    missing)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return set()
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags


def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether the CPU described by the file ``cpuinfo`` lists a bf16 instruction set
    (:data:`BF16_FLAGS`); False where the file cannot be read."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return bool(cpu_flags(text) & set(BF16_FLAGS))


def resolve_bf16(
    setting: bool | str, device: torch.device, flags: set[str] | None = None
) -> tuple[bool, str]:
    """``train.bf16`` (true | false | auto) on ``device`` → (autocast or not, why). ``flags``:
    the CPU flags (default: :func:`cpu_flags`)."""
    if isinstance(setting, bool):
        return setting, "train.bf16: " + str(setting).lower()
    if str(setting).lower() != "auto":
        raise ConfigError(f"train.bf16 must be true, false or auto, got {setting!r}")
    if device.type == "cuda":
        ok = bool(torch.cuda.is_bf16_supported())
        return ok, f"auto: this GPU {'supports' if ok else 'lacks'} bf16"
    if device.type != "cpu":
        return False, f"auto: off on {device.type}"
    native = sorted((cpu_flags() if flags is None else flags) & set(BF16_FLAGS))
    if native:
        return True, f"auto: the CPU has {', '.join(native)}"
    return False, "auto: the CPU has no avx512_bf16/amx_bf16 (bf16 would be emulated, slower)"


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on ``device`` when ``enabled``, else a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
