"""The trainer: one class, :class:`Trainer`, that runs a training loop for any task.

A :class:`~dhian.train.tasks.base.Task` supplies data, loss and metrics; the trainer owns
everything else: seeding, AdamW + LR schedule, gradient accumulation (the loss of a group of
``grad_accum`` batches is normalised by the group's total target count, so accumulation equals
one big batch), clipping, bf16 autocast (``train.bf16: auto`` = where the hardware has it),
LoRA adapters (``train.lora.r`` > 0, :mod:`dhian.train.lora`), non-finite-loss skipping (``train.max_bad_steps`` in a
row raise :class:`TrainingDiverged`), ``metrics.jsonl`` events (``train`` / ``eval`` / ``skip`` /
``stop``, each with step, epoch and ``wall`` seconds), validation with best-model tracking and
early stopping, best/last checkpoints, stop conditions (max_steps, max_epochs, max_minutes — per
invocation, the final validation and averaging included —, early stopping, SIGINT/SIGTERM), checkpoint averaging at the end
(``train.average_last`` snapshots every ``train.average_every`` steps, see
:mod:`dhian.train.averaging`: the average becomes ``best`` when it scores at least as well on the
dev set) and the learning-curve PNG.

Resume restores weights, optimizer, scheduler, RNG states (every rank's under ``torchrun``),
data position, loop counters, the running loss window, elapsed time and cuts ``metrics.jsonl``
back to the checkpoint, so an interrupted + resumed run equals a straight one; it starts from
the newest checkpoint that passes its checksums (corrupt ones are reported and skipped). Under
``torchrun`` (:mod:`dhian.train.distributed`) each process trains on its share of the batches
through DistributedDataParallel, the loss of a step is divided by the global target count, and
only rank 0 evaluates (broadcasting the metrics) and writes checkpoints, logs, progress, curves.
A LoRA run saves plain models (the adapters merged into a copy), and its resumable checkpoint
keeps the adapters in the trainer state: a resume rebuilds the frozen base from
``train.init_from`` (or the same seeded initialisation) and puts the adapters back.
The class reads top to bottom: fields, setup, the loop, one step, trainer state, checkpoints,
validation. Imports: stdlib, torch, :mod:`dhian.config`, :mod:`dhian.errors`,
:mod:`dhian.models` (model_dir, device), :mod:`dhian.train`.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from dhian.config import RunConfig
from dhian.errors import DhianError
from dhian.models import model_dir as model_io
from dhian.models.device import choose_device
from dhian.train import checkpoint as ckpt
from dhian.train.averaging import Snapshots
from dhian.train.distributed import NullLog, World
from dhian.train.lora import adapter_state, add_lora, is_lora, load_adapter_state, merged_copy
from dhian.train.metricslog import MetricsLog
from dhian.train.optim import apply_freeze, autocast, build_optimizer, resolve_bf16
from dhian.train.progress import Progress
from dhian.train.schedules import build_scheduler
from dhian.train.stopping import catch_signals, check_train_config, is_improvement
from dhian.train.tasks import EvalResult, Task, task_for
from dhian.train.warmstart import init_source
from dhian.viz.run_curves import plot_curves

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


Callback = Callable[["Trainer"], None]


class TrainingDiverged(DhianError):
    """The loss stayed non-finite for ``train.max_bad_steps`` steps in a row."""


class Trainer:
    """Train ``config.model`` on ``task`` (default: the task :func:`~dhian.train.tasks.task_for`
    picks for the model type).

    ``resume``: continue ``OUT/last``; ``progress``: a progress bar; ``log``: where console lines
    go; ``callbacks``: called with the trainer after every step; ``curves``: draw curves.png.
    Read top to bottom: fields, setup, the loop, one step, evaluation, checkpoints."""

    # built by _setup
    device: torch.device
    model: torch.nn.Module
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    stream: Any  # the task's train stream, sharded under torchrun
    bf16: bool  # bf16 autocast (train.bf16 resolved for the device)

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
        self.snapshots: Snapshots | None = None
        self.bf16 = False  # train.bf16 resolved for the device (auto: where it is native)
        self._eval_seconds = 0.0  # the longest validation so far (budgets the end of a timed run)

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

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        cfg = self.cfg
        check_train_config(cfg, self.task.metrics, self.task.name)
        if cfg.num_threads > 0:
            torch.set_num_threads(cfg.num_threads)
        self.device = self.world.setup(choose_device(cfg.device, "train.device"))
        self.bf16, bf16_why = resolve_bf16(cfg.bf16, self.device)
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
        lora = cfg.lora.r > 0
        if cfg.init_from and (not self.resume or lora):  # LoRA: the frozen base, again
            self.task.init_weights(self.model, cfg.init_from)
        if last is not None and self.resume and not lora:
            model_io.load_weights(last, self.model, strict=True)
        if lora:
            self.model = add_lora(self.model, cfg.lora)
            if state is not None:
                if "lora" not in state:
                    raise DhianError(f"{last} holds no LoRA adapters; resume without train.lora")
                load_adapter_state(self.model, state["lora"])
        self.model.to(self.device)
        frozen = apply_freeze(self.model, cfg.freeze)
        if frozen:
            self.log(f"frozen: {len(frozen)} parameter tensors (prefix {cfg.freeze!r})")
        if cfg.fsdp:
            if lora:
                raise DhianError(
                    "train.fsdp shards full fine-tuning; LoRA adapters train under DDP "
                    "(set train.fsdp=false or train.lora.r=0)"
                )
            blocks = self.world.shard_model(self.model)
            self.log(f"FSDP2: {blocks} blocks + root sharded over {self.world.size} processes")
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(
            self.optimizer, cfg.schedule, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio
        )
        self.stream = self.world.shard(self.task.train_stream(cfg.seed))
        if cfg.average_last > 1 and self.world.is_main:
            self.snapshots = Snapshots(max(cfg.average_every, 1), cfg.average_last)
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
            f"({n_train:,} trainable{', LoRA r=' + str(cfg.lora.r) if lora else ''}), "
            f"bf16 autocast {'on' if self.bf16 else 'off'} ({bf16_why}) -> {self.out}"
        )

    # ------------------------------------------------------------------ the loop
    def _limit_reached(self) -> str | None:
        cfg = self.cfg
        if cfg.max_steps > 0 and self.step >= cfg.max_steps:
            return "max_steps"
        if cfg.max_epochs > 0 and self.stream.epochs_done >= cfg.max_epochs - 1e-9:
            return "max_epochs"
        if cfg.max_minutes > 0 and self.would_stop(cfg.max_minutes):
            return "time_limit"
        return None

    def would_stop(self, minutes: float) -> bool:
        """Whether a run with ``train.max_minutes = minutes`` would stop before the next step:
        this invocation's clock plus what the end of the run will cost reaches the budget."""
        used = time.monotonic() - self._session_t0
        return used + self._final_work_seconds() >= minutes * 60

    def _final_work_seconds(self) -> float:
        """What the end of a timed run will still cost, so that ``max_minutes`` covers it: the
        final validation and the averaged weights' validation, each estimated by the longest
        validation so far (0 before the first one)."""
        n = 1 + (self.snapshots is not None)
        return n * self._eval_seconds

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
        if self.snapshots is not None:
            self.snapshots.observe(self.step, self.model)
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
            if reason not in ("SIGINT", "SIGTERM", "stopped"):
                self.average()
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

    # ------------------------------------------------------------------ one step

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
        total_norm = torch.nn.utils.clip_grad_norm_(self.params, clip)
        full = getattr(total_norm, "full_tensor", None)  # a DTensor under FSDP
        grad_norm = float(full() if full is not None else total_norm)
        if not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.optimizer.step()
        self.scheduler.step()
        return loss_sum, total, grad_norm

    def _loss(self, model: Any, batch: Any) -> Any:
        with autocast(self.device, self.bf16):
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

    # ------------------------------------------------------------------ trainer state
    def _load_state(self, state: dict[str, Any]) -> None:
        self.world.load_optimizer_state(self.model, self.optimizer, state["optimizer"])
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
            "optimizer": self.world.optimizer_state(self.model, self.optimizer),
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
        if is_lora(self.model):
            state["lora"] = adapter_state(self.model)
        return state

    # ------------------------------------------------------------------ checkpoints
    def _plain_model(self) -> torch.nn.Module | None:
        """The model as saved and evaluated: LoRA adapters merged into a copy; under FSDP the
        gathered weights in a fresh unsharded copy (a collective; None on ranks > 0)."""
        if not self.world.fsdp:
            return merged_copy(self.model)
        state = self.world.full_state(self.model)
        if not self.world.is_main:
            return None
        with torch.random.fork_rng():  # building initialises weights: keep the RNG streams
            model = self.task.build_model()
        model.load_state_dict(state)
        return model.to(self.device)

    def _save(self, name: str, state: dict[str, Any] | None, **info: Any) -> Path:
        model = self._plain_model()  # every rank: a collective under FSDP
        if model is None or not self.world.is_main:
            return self.out / name
        return ckpt.save_checkpoint(
            self.out / name,
            model,  # plain: LoRA adapters merged, FSDP shards gathered
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
    def _validate(self, share: bool = True) -> EvalResult:
        """The task's validation of the current weights on rank 0; with ``share`` the other
        ranks get its metrics (a collective: every rank must call it then)."""
        cfg = self.cfg
        t0 = time.monotonic()
        devices = [self.device] if self.device.type == "cuda" else []
        res = EvalResult({})
        model = self._plain_model() if self.world.fsdp else self.model  # FSDP: a collective
        if self.world.is_main and model is not None:
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                model.eval()
                with autocast(self.device, self.bf16):
                    res = self.task.evaluate(
                        model, self.device, cfg.eval_beam, cfg.eval_max_examples
                    )
                model.train()
        if share:
            res.metrics = self.world.share_metrics(res.metrics, self.task.metrics)
        self._eval_seconds = max(self._eval_seconds, time.monotonic() - t0)
        return res

    def average(self) -> dict[str, Any] | None:
        """Average the kept weight snapshots (the final weights included), score the average
        on the dev set and save it as ``best`` when it is at least as good as the best so far;
        the model keeps its trained weights. Returns ``{"steps", "value", "kept"}`` or None (off,
        or fewer than 2 snapshots). Rank 0 only (snapshots are not taken elsewhere)."""
        snaps = self.snapshots
        if snaps is None:
            return None
        snaps.take(self.step, self.model)
        if len(snaps.states) < 2:
            return None
        trained = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(snaps.average())
        try:
            metrics = self._validate(share=False).metrics  # rank 0 alone
            metric = self.cfg.early_stop_metric
            value = metrics.get(metric, math.nan)
            best = self.best["value"]
            kept = value == best or is_improvement(metric, value, best)
            if kept:
                self.best = {"value": value, "step": self.step, "bad_evals": 0}
                self.best["averaged"] = snaps.steps
                self._save("best", None, metric=metric, value=value, averaged=snaps.steps)
        finally:
            self.model.load_state_dict(trained)
        done = {"steps": snaps.steps, "value": value, "kept": kept}
        self._event("average", **{f"dev_{metric}": value}, steps=snaps.steps, kept=kept)
        shown = f"{value:.4g}" if math.isfinite(value) else "n/a"
        self.log(
            f"averaged the weights of steps {', '.join(map(str, snaps.steps))}: dev {metric} "
            f"{shown} -> {'saved as best' if kept else 'not better; best kept'}"
        )
        return done

    def stop_point(self, name: str) -> dict[str, Any]:
        """Save as ``OUT/<name>`` the model this run would leave as ``best`` if it stopped now
        (the final validation and the averaged weights weighed against the best so far, as at
        the end of a run) without changing the run: the weights, the best-model record and the
        snapshots are untouched, and the time it takes is taken off the training clock, so the
        run goes on as if it had not happened. Single process only. Returns ``{"name", "step",
        "minutes", "metric", "value", "source"}`` and logs a ``stop_point`` event."""
        if self.world.distributed:
            raise DhianError("stop points need a single-process run (not torchrun)")
        t0 = time.monotonic()
        metric = self.cfg.early_stop_metric
        value, source = self.best["value"], f"best so far (step {self.best['step']})"
        choice: dict[str, torch.Tensor] | None = None  # None: OUT/best as it is
        trained = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        if self.last_eval_step != self.step:
            now = self._validate(share=False).metrics.get(metric, math.nan)
            if is_improvement(metric, now, value):
                value, source, choice = now, f"step {self.step}", trained
        if self.snapshots is not None:
            steps, avg = self.snapshots.average_with(self.step, self.model)
            if len(steps) >= 2:
                self.model.load_state_dict(avg)
                try:
                    mean = self._validate(share=False).metrics.get(metric, math.nan)
                finally:
                    self.model.load_state_dict(trained)
                if mean == value or is_improvement(metric, mean, value):
                    value, source, choice = mean, f"average of steps {steps}", avg
        target = self.out / name
        if choice is None and (self.out / "best").is_dir():
            tmp = target.with_name(f".{target.name}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(self.out / "best", tmp)
            shutil.rmtree(target, ignore_errors=True)
            tmp.replace(target)
        else:
            self.model.load_state_dict(choice if choice is not None else trained)
            try:
                self._save(name, None, metric=metric, value=value)
            finally:
                self.model.load_state_dict(trained)
        spent = time.monotonic() - t0
        self._session_t0 += spent  # the run's budget does not pay for the stop point
        self._t0 += spent
        point = {
            "name": name,
            "step": self.step,
            "minutes": round(self.elapsed / 60, 2),
            "metric": metric,
            "value": value,
            "source": source,
        }
        self._event("stop_point", **{f"dev_{metric}": value}, point=name, source=source)
        self.log(f"stop point {name} at step {self.step}: dev {metric} {value} ({source})")
        return point

    def evaluate(self) -> dict[str, float]:
        """Run the task's validation, log it, track the best model and early stopping.

        Under DDP rank 0 evaluates and broadcasts the metrics (the others wait)."""
        cfg = self.cfg
        res = self._validate()
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


def train(
    config: RunConfig,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train the run described by ``config`` (see :class:`Trainer`)."""
    return Trainer(config, resume=resume, progress=progress, log=log).fit()
