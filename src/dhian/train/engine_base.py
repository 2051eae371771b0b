"""The state every part of the training engine shares: :class:`TrainerBase`.

Owns the :class:`~dhian.train.engine.Trainer`'s fields (config, loop counters, best-model record,
the running loss window, wall-clock bookkeeping, the objects ``_setup`` builds) and the small
helpers the other engine modules call: the console line, stop requests, elapsed time, epochs and
``metrics.jsonl`` events. The step (:mod:`~dhian.train.engine_step`), the evaluation and
checkpoint bookkeeping (:mod:`~dhian.train.engine_bookkeeping`) and the loop
(:mod:`~dhian.train.engine`) are mixins over this base.
Imports: stdlib, torch, :mod:`dhian.config`, :mod:`dhian.train`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dhian.config import RunConfig
from dhian.train.distributed import NullLog, World
from dhian.train.metricslog import MetricsLog
from dhian.train.progress import Progress
from dhian.train.tasks import Task, task_for

if TYPE_CHECKING:
    from dhian.train.engine import Trainer

Callback = Callable[["Trainer"], None]


class TrainerBase:
    """The fields and helpers of a training run (see :class:`~dhian.train.engine.Trainer`)."""

    # built by Trainer._setup
    device: torch.device
    model: torch.nn.Module
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    stream: Any  # the task's train stream, sharded under torchrun

    def __init__(
        self,
        config: RunConfig,
        task: Task | None = None,
        *,
        resume: bool = False,
        progress: bool = True,
        log: Callable[[str], None] | None = None,
        callbacks: Sequence[Callback] = (),
        curves: bool = True,
    ) -> None:
        self.config = config
        self.draw_curves = curves
        self.cfg = config.train
        self.out = Path(self.cfg.out_dir)
        self.resume = resume
        self.callbacks = list(callbacks)
        self._log_fn = log
        self.world = World.from_env()
        self.progress = Progress(None, enabled=False, log=log)
        self._progress_enabled = progress
        self.task = task or task_for(config, self.log)
        self.step = 0
        self.bad_steps = 0
        self.tokens_seen = 0
        self.best: dict[str, Any] = {"value": None, "step": 0, "bad_evals": 0}
        self.last_eval: dict[str, float] = {}
        self.last_eval_step = -1
        self.last_saved_step = -1
        self.stop_reason: str | None = None
        self._window = {"loss": 0.0, "count": 0, "steps": 0, "time": 0.0}
        self._elapsed_before = 0.0
        self._t0 = time.monotonic()
        self._session_t0 = time.monotonic()
        self.metrics: MetricsLog | NullLog  # opened by _setup
        self._signatures_shown = False
        self._rng_state: dict[str, Any] | None = None

    def log(self, message: str) -> None:
        """One console line (above the progress bar); rank 0 only."""
        if self.world.is_main:
            self.progress.write(message)

    def request_stop(self, reason: str = "stopped") -> None:
        """Stop after the current step, save a checkpoint and return (signal-safe)."""
        if self.stop_reason is None:
            self.stop_reason = reason

    @property
    def elapsed(self) -> float:
        """Training seconds, summed over resumed invocations."""
        return self._elapsed_before + (time.monotonic() - self._t0)

    @property
    def epoch(self) -> float:
        """Epochs consumed so far (fractional)."""
        return round(float(self.stream.epochs_done), 6)

    def _event(self, event: str, **fields: Any) -> None:
        self.metrics.write(event, self.step, self.epoch, self.elapsed, **fields)
