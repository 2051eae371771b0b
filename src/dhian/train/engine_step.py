"""One optimizer update of the training engine: gradient accumulation, clipping, bf16 autocast
and non-finite-loss skipping.

Owns :class:`StepMixin` (mixed into :class:`~dhian.train.engine.Trainer`) and
:class:`TrainingDiverged`. The loss of a group of ``grad_accum`` batches is normalised by the
group's total target count, so accumulation equals one big batch; under ``torchrun`` each process
backprops its share and the count is global (times the world size, which DDP's gradient averaging
divides back out). A step whose loss or gradient norm is not finite is skipped on every rank;
``train.max_bad_steps`` of them in a row end the run.
Imports: stdlib, torch, :mod:`dhian.errors`, :mod:`dhian.train`.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from dhian.errors import DhianError
from dhian.train.engine_base import TrainerBase
from dhian.train.optim import autocast


class TrainingDiverged(DhianError):
    """The loss stayed non-finite for ``train.max_bad_steps`` steps in a row."""


class StepMixin(TrainerBase):
    """Forward/backward over an accumulation group and the update that follows."""

    def _train_step(self, group: list[Any]) -> tuple[float, int, float] | None:
        """Forward/backward over ``group`` and one optimizer update; None when skipped.

        Under DDP ``group`` is this rank's share; the loss is divided by the global target count
        (times the world size, which DDP's gradient averaging divides back out)."""
        self.model.train()
        total = self.world.all_sum(sum(self.task.count(b) for b in group))
        norm = max(total, 1) / self.world.grad_scale
        group = [b.to(self.device) if hasattr(b, "to") else b for b in group]
        model = self.world.wrap(self.model, lambda m: self._loss(m, group[0]).loss)
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum, bad = 0.0, False
        for i, batch in enumerate(group):
            with self.world.sync_context(model, sync=i == len(group) - 1):
                terms = self._loss(model, batch)
                value = float(terms.loss.detach())
                bad = bad or not math.isfinite(value)
                if bad and not self.world.distributed:
                    self.optimizer.zero_grad(set_to_none=True)
                    return None
                (terms.loss.float() / norm).backward()  # every rank backprops: DDP syncs here
            loss_sum += value
        loss_sum, bad = self.world.reduce_step(loss_sum, bad)
        if bad:
            self.optimizer.zero_grad(set_to_none=True)
            return None
        clip = self.cfg.clip_norm if self.cfg.clip_norm > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, clip))
        if not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.optimizer.step()
        self.scheduler.step()
        return loss_sum, total, grad_norm

    def _loss(self, model: Any, batch: Any) -> Any:
        with autocast(self.device, self.cfg.bf16):
            return self.task.loss(model, batch, self.cfg.label_smoothing)

    def _on_bad_step(self) -> None:
        self.bad_steps += 1
        self._event("skip", reason="non-finite loss or gradient", bad_steps=self.bad_steps)
        self.log(f"step {self.step + 1}: non-finite loss or gradient, update skipped")
        if self.bad_steps >= self.cfg.max_bad_steps:
            self._event("stop", reason="diverged")
            raise TrainingDiverged(
                f"the loss was not finite for {self.bad_steps} steps in a row after step "
                f"{self.step}; lower train.lr or raise train.warmup_steps (last checkpoint: "
                f"{self.out / 'last'})"
            )
