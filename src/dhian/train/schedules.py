"""Learning-rate schedules as multipliers of the peak ``lr``, run by ``torch`` ``LambdaLR``.

``step`` is the 1-based number of the optimizer update about to happen (update 1 uses
``factor(1)``), so no update is wasted at lr 0. Shapes (W = ``warmup_steps``, N = ``total``,
m = ``min_lr_ratio``):

- ``inverse_sqrt``: ``step/W`` while ``step < W``, then ``sqrt(W/step)`` (fairseq), floored at m.
- ``noam``: Vaswani et al.'s ``min(step^-0.5, step·W^-1.5)`` scaled by ``sqrt(W)`` so the peak
  is ``lr`` (same curve as ``inverse_sqrt``; the name people search for).
- ``linear``: warm up to 1, then linear decay reaching m at step N.
- ``cosine``: warm up to 1, then half a cosine from 1 to m at step N.
- ``constant``: warm up to 1 (if W > 0), then 1.

With W = 0 the inverse-sqrt shapes start at 1 and decay as ``1/sqrt(step)``.

Imports: stdlib, torch, :mod:`dhian.errors`.
"""

from __future__ import annotations

import math

import torch

from dhian.errors import ConfigError, nearest

SCHEDULES = ("inverse_sqrt", "noam", "linear", "cosine", "constant")


def lr_factor(
    name: str, step: int, warmup_steps: int = 0, total_steps: int = 0, min_lr_ratio: float = 0.0
) -> float:
    """The multiplier of the peak lr for update number ``step`` (1-based)."""
    step = max(1, step)
    w = max(0, warmup_steps)
    if name in ("inverse_sqrt", "noam"):
        if w == 0:
            return max(min_lr_ratio, 1.0 / math.sqrt(step))
        if name == "noam":
            f = math.sqrt(w) * min(step**-0.5, step * w**-1.5)
        else:
            f = step / w if step < w else math.sqrt(w / step)
        return f if step < w else max(min_lr_ratio, f)
    if w > 0 and step < w:
        return step / w
    if name == "constant":
        return 1.0
    if name in ("linear", "cosine"):
        if total_steps <= w:
            return 1.0
        progress = min(1.0, (step - w) / (total_steps - w))
        shape = 1.0 - progress if name == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
        return min_lr_ratio + (1.0 - min_lr_ratio) * shape
    raise ConfigError(
        f"unknown train.schedule {name!r}{nearest(name, SCHEDULES)}; valid: {', '.join(SCHEDULES)}"
    )


class _Factor:
    """Picklable-free callable (its ``__dict__`` holds only primitives, so LambdaLR's
    ``state_dict`` stays loadable with ``weights_only=True``)."""

    def __init__(self, name: str, warmup_steps: int, total_steps: int, min_lr_ratio: float):
        self.name = name
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self.min_lr_ratio = min_lr_ratio

    def __call__(self, epoch: int) -> float:
        return lr_factor(
            self.name, epoch + 1, self.warmup_steps, self.total_steps, self.min_lr_ratio
        )


def check_schedule(name: str, total_steps: int, min_lr_ratio: float = 0.0) -> None:
    """Raise ConfigError for an unknown schedule or knobs it cannot use (before any work)."""
    if name not in SCHEDULES:
        lr_factor(name, 1)  # raises the ConfigError with the nearest name
    if name in ("linear", "cosine") and total_steps <= 0:
        raise ConfigError(
            f"train.schedule={name} decays to the end of training and needs train.max_steps > 0"
        )
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ConfigError(f"train.min_lr_ratio must lie in [0, 1], got {min_lr_ratio}")


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str,
    warmup_steps: int,
    total_steps: int,
    min_lr_ratio: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` following :func:`lr_factor`; call ``.step()`` once per optimizer update."""
    check_schedule(name, total_steps, min_lr_ratio)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, _Factor(name, warmup_steps, total_steps, min_lr_ratio)
    )
