"""When a run stops: knob checks before any work, "is this dev score better", and signals.

Owns :func:`check_train_config` (the train knobs the engine relies on, with one-line
ConfigErrors), :func:`is_improvement` (direction from :func:`dhian.metrics.higher_is_better`)
and :func:`catch_signals` (SIGINT/SIGTERM → a stop request instead of an exception, handlers
restored afterwards; a no-op outside the main thread).
Imports: stdlib, :mod:`dhian.config`, :mod:`dhian.errors`, :mod:`dhian.metrics`,
:mod:`dhian.train.schedules`.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from dhian.config import TrainConfig
from dhian.errors import ConfigError, nearest
from dhian.metrics import higher_is_better
from dhian.train.schedules import check_schedule


def check_train_config(cfg: TrainConfig, metrics: Sequence[str], task: str) -> None:
    """Raise ConfigError for train knobs that cannot work, before any data is read."""
    for name in ("grad_accum", "max_bad_steps"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"train.{name} must be >= 1, got {getattr(cfg, name)}")
    for name in ("max_steps", "max_epochs", "eval_every", "save_every", "log_every"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"train.{name} must be >= 0, got {getattr(cfg, name)}")
    if cfg.max_steps == 0 and cfg.max_epochs == 0 and cfg.max_minutes <= 0:
        raise ConfigError("set train.max_steps, train.max_epochs or train.max_minutes > 0")
    if not 0.0 <= cfg.label_smoothing < 1.0:
        raise ConfigError(f"train.label_smoothing must be in [0, 1), got {cfg.label_smoothing}")
    check_schedule(cfg.schedule, cfg.max_steps, cfg.min_lr_ratio)
    if cfg.optimizer.lower() != "adamw":
        raise ConfigError(
            f"train.optimizer {cfg.optimizer!r} is not supported"
            f"{nearest(cfg.optimizer, ['adamw'])}; valid: adamw"
        )
    metric = cfg.early_stop_metric
    if metric not in metrics:
        raise ConfigError(
            f"train.early_stop_metric {metric!r}{nearest(metric, metrics)} is not reported by "
            f"the {task} task; valid: {', '.join(metrics)}"
        )


def is_improvement(metric: str, value: float, best: float | None) -> bool:
    """Whether ``value`` of ``metric`` beats ``best`` (None = nothing yet); NaN never does."""
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best if higher_is_better(metric) else value < best


@contextlib.contextmanager
def catch_signals(on_signal: Callable[[str], None]) -> Iterator[None]:
    """While inside, SIGINT/SIGTERM call ``on_signal("SIGINT" | "SIGTERM")`` instead of
    interrupting; the previous handlers come back on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old: dict[signal.Signals, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        on_signal(signal.Signals(signum).name)

    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, handler)
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
