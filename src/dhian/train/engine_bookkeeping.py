"""The training engine's bookkeeping: validation, best-model tracking, early stopping, the
best/last checkpoints and the resumable trainer state.

Owns :class:`BookkeepingMixin` (mixed into :class:`~dhian.train.engine.Trainer`). The trainer
state saved next to the weights holds the optimizer, scheduler, RNG states (every rank's under
``torchrun``), data position, loop counters, the running loss window, elapsed time and the
``metrics.jsonl`` offset, so a resumed run equals a straight one. Only rank 0 writes; rank 0
evaluates and broadcasts the metrics.
Imports: stdlib, torch, :mod:`dhian.train`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from dhian.train import checkpoint as ckpt
from dhian.train.engine_base import TrainerBase
from dhian.train.optim import autocast
from dhian.train.stopping import is_improvement
from dhian.train.tasks import EvalResult


class BookkeepingMixin(TrainerBase):
    """Evaluation and checkpoints of a training run."""

    # ------------------------------------------------------------------ trainer state
    def _load_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        sched = dict(state["scheduler"])
        sched["lr_lambdas"] = [None] * len(self.scheduler.lr_lambdas)  # keep this run's schedule
        self.scheduler.load_state_dict(sched)
        self.stream.load_state_dict(state["data"])
        self.step = int(state["step"])
        self.bad_steps = int(state["bad_steps"])
        self.tokens_seen = int(state["tokens_seen"])
        self.best = dict(state["best"])
        self.last_eval = {k: float(v) for k, v in state["last_eval"].items()}
        self.last_eval_step = int(state["last_eval_step"])
        self.last_saved_step = self.step
        self._window = dict(state["window"])
        self._elapsed_before = float(state["elapsed"])
        self._rng_state = self.world.rng_for_rank(state, self.cfg.seed)
        before = int(state.get("batches_per_step", self.cfg.grad_accum))
        now = self.world.size * self.cfg.grad_accum
        if before != now:
            self.log(
                f"note: {now} batches per step now ({self.world.size} processes x grad_accum "
                f"{self.cfg.grad_accum}), {before} before; the data position is global, so no "
                "batch is repeated or skipped"
            )

    def _trainer_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "version": ckpt.STATE_VERSION,
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": ckpt.capture_rng(),
            "data": self.stream.state_dict(),
            "bad_steps": self.bad_steps,
            "tokens_seen": self.tokens_seen,
            "best": dict(self.best),
            "last_eval": dict(self.last_eval),
            "last_eval_step": self.last_eval_step,
            "window": dict(self._window),
            "elapsed": self.elapsed,
            "metrics_offset": self.metrics.sync(),
            "world_size": self.world.size,
            "batches_per_step": self.world.size * self.cfg.grad_accum,
        }
        if self.world.distributed:  # a collective: every rank calls _trainer_state
            state["rng_ranks"] = self.world.gather_rng()
        return state

    # ------------------------------------------------------------------ checkpoints
    def _save(self, name: str, state: dict[str, Any] | None, **info: Any) -> Path:
        if not self.world.is_main:
            return self.out / name
        return ckpt.save_checkpoint(
            self.out / name,
            self.model,
            self.config,
            self.task.tokenizers,
            state,
            kind=self.task.kind,
            build_kwargs=self.task.build_kwargs(),
            info={"step": self.step, "epoch": self.epoch, **info},
        )

    def save_last(self) -> Path:
        """Write ``OUT/last`` (resumable) atomically; every rank calls it, rank 0 writes."""
        if self.world.is_main:
            ckpt.rotate_last(self.out, self.cfg.keep_last)
        path = self._save("last", self._trainer_state())
        self.last_saved_step = self.step
        return path

    # ------------------------------------------------------------------ validation
    def evaluate(self) -> dict[str, float]:
        """Run the task's validation, log it, track the best model and early stopping.

        Under DDP rank 0 evaluates and broadcasts the metrics (the others wait)."""
        cfg = self.cfg
        devices = [self.device] if self.device.type == "cuda" else []
        res = EvalResult({})
        if self.world.is_main:
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                self.model.eval()
                with autocast(self.device, cfg.bf16):
                    res = self.task.evaluate(
                        self.model, self.device, cfg.eval_beam, cfg.eval_max_examples
                    )
                self.model.train()
        res.metrics = self.world.share_metrics(res.metrics, self.task.metrics)
        self.last_eval = dict(res.metrics)
        self.last_eval_step = self.step
        fields = {f"dev_{k}": v for k, v in res.metrics.items()}
        self._event("eval", **fields, **res.info)
        metric = cfg.early_stop_metric
        value = res.metrics.get(metric, math.nan)
        improved = is_improvement(metric, value, self.best["value"])
        shown = "  ".join(f"{k} {v:.4g}" for k, v in res.metrics.items())
        self.log(f"step {self.step}  dev: {shown}{'  (best)' if improved else ''}")
        if not self._signatures_shown:
            for name, sig in res.info.items():
                self.log(f"  {name}: {sig}")
            self._signatures_shown = True
        for src, ref, hyp in res.samples[:1]:
            self.log(f"  src: {src}\n  ref: {ref}\n  hyp: {hyp}")
        if improved:
            self.best = {"value": value, "step": self.step, "bad_evals": 0}
            self._save("best", None, metric=metric, value=value)
        else:
            self.best["bad_evals"] = int(self.best["bad_evals"]) + 1
            patience = cfg.early_stop_patience
            if patience > 0 and self.best["bad_evals"] >= patience:
                self.log(
                    f"early stop: dev {metric} did not improve for {patience} evaluations "
                    f"(best {self.best['value']:.4g} at step {self.best['step']})"
                )
                self.request_stop("early_stop")
        return self.last_eval
