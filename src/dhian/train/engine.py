"""The model-agnostic training loop: steps, logging, validation, early stopping, checkpoints,
exact resume, clean stops.

Owns :class:`Trainer` / :func:`train`. A :class:`~dhian.train.tasks.Task` supplies data, loss and
metrics; the engine owns everything else: seeding, AdamW + LR schedule, gradient accumulation
(the loss of a group of ``grad_accum`` batches is normalised by the group's total target count,
so accumulation equals one big batch), clipping, bf16 autocast, non-finite-loss skipping,
``metrics.jsonl`` events (``train`` / ``eval`` / ``skip`` / ``stop``, each with step, epoch and
``wall`` seconds), best/last checkpoints, stop conditions (max_steps, max_epochs, max_minutes —
per invocation —, early stopping, SIGINT/SIGTERM) and the learning-curve PNG.
Resume restores weights, optimizer, scheduler, RNG states, data position, loop counters and cuts
``metrics.jsonl`` back to the checkpoint, so an interrupted + resumed run equals a straight one;
it starts from the newest checkpoint that passes its checksums (corrupt ones are reported and
skipped). Under ``torchrun`` (:mod:`dhian.train.distributed`) each process trains on its share of
the batches through DistributedDataParallel, the loss of a step is divided by the global target
count, and only rank 0 writes checkpoints, logs, progress and curves.
This module owns setup and the loop; the shared fields are in :mod:`~dhian.train.engine_base`,
the optimizer update in :mod:`~dhian.train.engine_step` (:class:`TrainingDiverged` is re-exported
here), evaluation and checkpoints in :mod:`~dhian.train.engine_bookkeeping`.
Imports: stdlib, torch, :mod:`dhian.config`, :mod:`dhian.errors`,
:mod:`dhian.models.io`, :mod:`dhian.train`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from dhian.config import RunConfig
from dhian.errors import DhianError
from dhian.models import io as model_io
from dhian.train import checkpoint as ckpt
from dhian.train.curves import plot_curves
from dhian.train.distributed import NullLog
from dhian.train.engine_base import Callback
from dhian.train.engine_bookkeeping import BookkeepingMixin
from dhian.train.engine_step import StepMixin, TrainingDiverged
from dhian.train.metricslog import MetricsLog
from dhian.train.optim import apply_freeze, build_optimizer, resolve_device
from dhian.train.progress import Progress
from dhian.train.schedules import build_scheduler
from dhian.train.stopping import catch_signals, check_train_config
from dhian.train.warmstart import init_source

__all__ = ["Callback", "TrainResult", "Trainer", "TrainingDiverged", "train"]


@dataclasses.dataclass
class TrainResult:
    """How a run ended. ``status``: max_steps | max_epochs | time_limit | early_stop |
    SIGINT | SIGTERM | stopped; ``best``: ``{"metric", "value", "step"}`` or None; ``rank``:
    this process's rank under torchrun (only rank 0 reports)."""

    status: str
    step: int
    epoch: float
    out_dir: Path
    best: dict[str, Any] | None
    last_eval: dict[str, float]
    curves: Path | None
    rank: int = 0


class Trainer(StepMixin, BookkeepingMixin):
    """Train ``config.model`` on ``task`` (default: the task registered for the model type).

    Arguments (see :class:`~dhian.train.engine_base.TrainerBase`): ``config``, ``task``,
    ``resume``, ``progress``, ``log``, ``callbacks`` (called with the trainer after every
    step), ``curves``. The step lives in :class:`~dhian.train.engine_step.StepMixin`, evaluation
    and checkpoints in :class:`~dhian.train.engine_bookkeeping.BookkeepingMixin`."""

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        cfg = self.cfg
        check_train_config(cfg, self.task.metrics, self.task.name)
        if cfg.num_threads > 0:
            torch.set_num_threads(cfg.num_threads)
        self.device = self.world.setup(resolve_device(cfg.device))
        last, state = self.world.find_checkpoint(self.out, self.resume, self.log)
        tokenizer_dir: Path | None = None
        if self.resume:
            if last is None:
                raise DhianError(f"nothing to resume in {self.out}: no last/{ckpt.TRAINER_STATE}")
            saved = model_io.read_run_config(last)
            self.config = self.task.config = self.task.resume_config(saved)
            ckpt.check_resumable_config(saved, self.config)
            tokenizer_dir = last / model_io.TOKENIZER
        else:
            if last is not None:
                raise DhianError(
                    f"{self.out} already holds a run ({last}); pass --resume to continue it or "
                    "--out to start a new one"
                )
            if cfg.init_from:
                tokenizer_dir = init_source(cfg.init_from)
        self.out.mkdir(parents=True, exist_ok=True)
        if self.world.is_main:
            self.config.save(self.out / "config.yaml")
        ckpt.seed_everything(cfg.seed)
        serial = self.world.distributed and tokenizer_dir is None
        if serial and not self.world.is_main:  # rank 0 builds the tokenizers; the others load them
            self.world.barrier()
            tokenizer_dir = self.out / model_io.TOKENIZER
        self.task.setup(tokenizer_dir)
        if self.task.config is not self.config:  # the task filled in data-derived model fields
            self.config = self.task.config
            if self.world.is_main:
                self.config.save(self.out / "config.yaml")
        if not self.resume and self.world.is_main:
            model_io.save_tokenizers(self.out / model_io.TOKENIZER, self.task.tokenizers)
        if serial and self.world.is_main:
            self.world.barrier()
        ckpt.seed_everything(cfg.seed)
        self.model = self.task.build_model()
        self.world.seed_rank(cfg.seed)  # ranks > 0 get their own dropout stream
        if cfg.init_from and not self.resume:
            self.task.init_weights(self.model, cfg.init_from)
        if last is not None and self.resume:
            model_io.load_weights(last, self.model, strict=True)
        self.model.to(self.device)
        frozen = apply_freeze(self.model, cfg.freeze)
        if frozen:
            self.log(f"frozen: {len(frozen)} parameter tensors (prefix {cfg.freeze!r})")
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(
            self.optimizer, cfg.schedule, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio
        )
        self.stream = self.world.shard(self.task.train_stream(cfg.seed))
        if state is not None:
            self._load_state(state)
        offset = None if state is None else int(state["metrics_offset"])
        metrics_path = self.out / "metrics.jsonl"
        self.metrics = MetricsLog(metrics_path, offset) if self.world.is_main else NullLog()
        n_all = sum(p.numel() for p in self.model.parameters())
        n_train = sum(p.numel() for p in self.params)
        self.log(
            f"{'resumed at step ' + str(self.step) if self.resume else 'training'} "
            f"{getattr(self.config.model, 'type', '?')} on {self.device}{self.world.label}: "
            f"{n_all:,} parameters "
            f"({n_train:,} trainable) -> {self.out}"
        )

    # ------------------------------------------------------------------ the loop
    def _limit_reached(self) -> str | None:
        cfg = self.cfg
        if cfg.max_steps > 0 and self.step >= cfg.max_steps:
            return "max_steps"
        if cfg.max_epochs > 0 and self.stream.epochs_done >= cfg.max_epochs - 1e-9:
            return "max_epochs"
        if cfg.max_minutes > 0 and time.monotonic() - self._session_t0 >= cfg.max_minutes * 60:
            return "time_limit"
        return None

    def _after_step(self, loss_sum: float, count: int, grad_norm: float, t_step: float) -> None:
        cfg = self.cfg
        self.step += 1
        self.bad_steps = 0
        self.tokens_seen += count
        w = self._window
        w["loss"] += loss_sum
        w["count"] += count
        w["steps"] += 1
        w["time"] += t_step
        lr = float(self.scheduler.get_last_lr()[0])
        tps = w["count"] / w["time"] if w["time"] > 0 else 0.0
        self.progress.update(self.step, loss=w["loss"] / max(w["count"], 1), tok_s=tps, lr=lr)
        if cfg.log_every > 0 and self.step % cfg.log_every == 0:
            self._event(
                "train",
                loss=w["loss"] / max(w["count"], 1),
                lr=lr,
                grad_norm=grad_norm,
                tokens=self.tokens_seen,
                tokens_per_s=round(tps, 1),
            )
            self._window = {"loss": 0.0, "count": 0, "steps": 0, "time": 0.0}
        if cfg.eval_every > 0 and self.step % cfg.eval_every == 0:
            self.evaluate()
        if cfg.save_every > 0 and self.step % cfg.save_every == 0:
            self.save_last()
        for cb in self.callbacks:
            cb(self)

    def fit(self) -> TrainResult:
        """Run until a stop condition; always leaves a resumable ``OUT/last``."""
        try:
            return self._fit()
        finally:
            self.world.close()

    def _fit(self) -> TrainResult:
        self._setup()
        self._t0 = time.monotonic()
        self._session_t0 = self._t0
        if self._rng_state is not None:
            ckpt.restore_rng(self._rng_state)
        self.progress = Progress(
            self.cfg.max_steps or None,
            initial=self.step,
            enabled=self._progress_enabled and self.world.is_main,
            log=self._log_fn,
        )
        with catch_signals(self.request_stop):
            result = self._run()
        self.world.barrier()  # no rank exits (ending the torchrun job) before rank 0 has saved
        return result

    def _run(self) -> TrainResult:
        try:
            reason = self._loop()
            if reason not in ("SIGINT", "SIGTERM", "stopped") and self.last_eval_step != self.step:
                self.evaluate()
            if self.stop_reason == "early_stop":
                reason = "early_stop"
            if self.last_saved_step != self.step or reason in ("SIGINT", "SIGTERM", "stopped"):
                self.save_last()  # before the stop event, so a resume drops that event
            self._event("stop", reason=reason)
        finally:
            self.progress.close()
            self.metrics.close()
            curves = self._write_curves() if self.draw_curves and self.world.is_main else None
        best = None
        if self.best["value"] is not None:
            best = {"metric": self.cfg.early_stop_metric, **self.best}
        return TrainResult(
            reason, self.step, self.epoch, self.out, best, self.last_eval, curves, self.world.rank
        )

    def _loop(self) -> str:
        while True:
            reason = self.stop_reason if self.stop_reason is not None else self._limit_reached()
            reason = self.world.agree_stop(reason)  # ranks see signals / time limits apart
            if reason is not None:
                return reason
            t = time.monotonic()
            group = [next(self.stream) for _ in range(self.cfg.grad_accum)]
            out = self._train_step(group)
            if out is None:
                self._on_bad_step()
                continue
            self._after_step(*out, time.monotonic() - t)

    def _write_curves(self) -> Path | None:
        try:
            return plot_curves(
                self.out / "metrics.jsonl", self.out / "curves.png", title=str(self.out.name)
            )
        except (OSError, ValueError) as exc:  # a picture must never fail a run
            self.log(f"could not draw curves.png: {exc}")
            return None


def train(
    config: RunConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train the run described by ``config`` (see :class:`Trainer`)."""
    return Trainer(config, resume=resume, progress=progress, log=log).fit()
