"""Data-parallel training under ``torchrun``: who this process is, and what the ranks must agree on.

Owns :class:`World` (rank / world size / local rank read from the ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` variables that ``torchrun`` sets; the process group is created only when
``WORLD_SIZE > 1``: ``nccl`` when training on CUDA, else ``gloo``), :class:`ShardedStream` (rank
``r`` of ``N`` takes global batches ``r, r+N, r+2N, ...`` of the one seeded global order, so the
stream position saved in a checkpoint is global and nothing is duplicated or dropped) and the
few collectives the engine needs: global token counts (loss = sum / global count), one loss sum
and "bad step" flag per step, an agreed stop reason (signals and time limits hit ranks at
different moments), dev metrics computed on rank 0 and broadcast, per-rank RNG states gathered
into rank 0's checkpoint, and a lazily built :class:`~torch.nn.parallel.DistributedDataParallel`
wrapper — or, with ``train.fsdp``, parameters sharded by PyTorch FSDP2
(:func:`torch.distributed.fsdp.fully_shard` on each block and the root): then the full model
and optimizer states are gathered (``torch.distributed.checkpoint.state_dict``, a collective)
for checkpoints and for rank 0's evaluation, and a resume scatters them back. With one process
every method is a cheap no-op, so single-process runs are unchanged.
Imports: stdlib, torch, :mod:`dhian.errors`, :mod:`dhian.train.checkpoint`.
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import io
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel

from dhian.errors import ConfigError, DhianError
from dhian.train import checkpoint as ckpt

#: Stop reasons in rising priority; ranks agree on the highest one any of them reached.
STOP_REASONS = (
    None,
    "max_steps",
    "max_epochs",
    "time_limit",
    "stopped",
    "early_stop",
    "SIGINT",
    "SIGTERM",
)
TIMEOUT_ENV = "DHIAN_DIST_TIMEOUT"  # seconds a collective may wait (rank 0 evaluating...)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer") from None


class NullLog:
    """Stands in for :class:`~dhian.train.metricslog.MetricsLog` on ranks other than 0."""

    def write(self, event: str, step: int, epoch: float, wall: float, **fields: Any) -> None:
        """Drop the row (only rank 0 writes ``metrics.jsonl``)."""

    def sync(self) -> int:
        """No file, offset 0."""
        return 0

    def close(self) -> None:
        """Nothing to close."""


class ShardedStream:
    """Rank ``rank`` of ``size`` sees every ``size``-th batch of ``inner`` (a TrainStream).

    Every rank advances ``inner`` by ``size`` batches per call and keeps batch number ``rank``
    of that round, so all ranks hold the same (global) position. The global order is endless —
    epoch after epoch — so a round that straddles an epoch end simply takes its last batches
    from the next epoch: no padding, no duplicates, no drops.
    """

    def __init__(self, inner: Any, rank: int, size: int) -> None:
        self.inner, self.rank, self.size = inner, rank, size

    def __iter__(self) -> ShardedStream:
        return self

    def __next__(self) -> Any:
        mine = None
        for i in range(self.size):
            batch = next(self.inner)
            if i == self.rank:
                mine = batch
        return mine

    def state_dict(self) -> dict[str, Any]:
        """The global position (that of ``inner``)."""
        return dict(self.inner.state_dict())

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a global position (saved with any world size)."""
        self.inner.load_state_dict(state)

    @property
    def epochs_done(self) -> float:
        """Global epochs consumed (fractional)."""
        return float(self.inner.epochs_done)


class World:
    """This process's place in a (possibly one-process) data-parallel job."""

    def __init__(self, rank: int = 0, size: int = 1, local_rank: int = 0) -> None:
        if size < 1 or not 0 <= rank < size:
            raise ConfigError(f"bad torchrun environment: RANK={rank} WORLD_SIZE={size}")
        self.rank, self.size, self.local_rank = rank, size, local_rank
        self.backend: str | None = None
        self._owns_group = False
        self._comm = torch.device("cpu")
        self._ddp: DistributedDataParallel | None = None
        self.fsdp = False  # parameters sharded by shard_model

    @classmethod
    def from_env(cls) -> World:
        """From an initialised process group, else ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0))
        return cls(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))

    @property
    def is_main(self) -> bool:
        """Rank 0: the only one that writes checkpoints, logs, progress and curves."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.size > 1

    @property
    def label(self) -> str:
        """`` x N processes (backend)`` for the start-up line; empty with one process."""
        return f" x {self.size} processes ({self.backend})" if self.distributed else ""

    @property
    def grad_scale(self) -> float:
        """DDP averages gradients over ranks; the engine multiplies its loss by this back."""
        return float(self.size)

    # ------------------------------------------------------------------ lifecycle
    def setup(self, device: torch.device) -> torch.device:
        """Join the process group (created here when needed) and return this rank's device
        (``cuda:LOCAL_RANK`` when training on CUDA with several processes)."""
        if not self.distributed:
            return device
        if not dist.is_available():
            raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
        if device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        self.backend = "nccl" if device.type == "cuda" else "gloo"
        if not dist.is_initialized():
            timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "3600")))
            kwargs: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
            dist.init_process_group(self.backend, timeout=timeout, **kwargs)
            self._owns_group = True
        else:
            self.backend = str(dist.get_backend())
        self._comm = device if self.backend == "nccl" else torch.device("cpu")
        return device

    def close(self) -> None:
        """Leave the process group if :meth:`setup` created it."""
        self._ddp = None
        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()
        self._owns_group = False

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.distributed:
            dist.barrier()

    # ------------------------------------------------------------------ collectives
    def _reduce(self, values: Sequence[float], op: Any, dtype: torch.dtype) -> list[float]:
        t = torch.tensor(list(values), dtype=dtype, device=self._comm)
        dist.all_reduce(t, op=op)
        return [float(v) for v in t.cpu().tolist()]

    def all_sum(self, value: int) -> int:
        """Sum of an integer (e.g. target tokens) over all ranks."""
        if not self.distributed:
            return value
        return int(self._reduce([value], dist.ReduceOp.SUM, torch.int64)[0])

    def reduce_step(self, loss_sum: float, bad: bool) -> tuple[float, bool]:
        """Global loss sum of a step, and whether any rank saw a non-finite loss."""
        if not self.distributed:
            return loss_sum, bad
        total, flags = self._reduce([loss_sum, float(bad)], dist.ReduceOp.SUM, torch.float64)
        return total, flags > 0

    def agree_stop(self, reason: str | None) -> str | None:
        """The highest-priority stop reason of any rank (see :data:`STOP_REASONS`)."""
        if not self.distributed:
            return reason
        code = (
            STOP_REASONS.index(reason) if reason in STOP_REASONS else STOP_REASONS.index("stopped")
        )
        agreed = int(self._reduce([code], dist.ReduceOp.MAX, torch.int64)[0])
        return STOP_REASONS[agreed]

    def share_metrics(self, metrics: Mapping[str, float], names: Sequence[str]) -> dict[str, float]:
        """Rank 0's dev ``metrics`` on every rank (only ``names`` travel; others keep theirs)."""
        if not self.distributed:
            return dict(metrics)
        values = [float(metrics.get(n, 0.0)) for n in names]
        present = [1.0 if n in metrics else 0.0 for n in names]
        t = torch.tensor([values, present], dtype=torch.float64, device=self._comm)  # (2, K)
        dist.broadcast(t, src=0)
        rows = t.cpu().tolist()
        shared = {n: v for n, v, p in zip(names, rows[0], rows[1], strict=True) if p > 0}
        return {**metrics, **shared} if self.is_main else shared

    def broadcast_text(self, text: str) -> str:
        """Rank 0's ``text`` on every rank."""
        if not self.distributed:
            return text
        data = text.encode("utf-8")
        n = torch.tensor([len(data)], dtype=torch.int64, device=self._comm)
        dist.broadcast(n, src=0)
        buf = torch.zeros(int(n.item()), dtype=torch.uint8, device=self._comm)
        if self.is_main and data:
            buf.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        dist.broadcast(buf, src=0)
        return bytes(buf.cpu().tolist()).decode("utf-8")

    def decide(self, choose: Callable[[], str]) -> str:
        """Rank 0 runs ``choose()``; every rank gets its text, or re-raises its DhianError."""
        text = ""
        if self.is_main:
            try:
                text = choose()
            except DhianError as exc:
                self.broadcast_text("\0" + str(exc))
                raise
        text = self.broadcast_text(text)
        if text.startswith("\0"):
            raise DhianError(text[1:])
        return text

    def find_checkpoint(
        self, out_dir: Path, resume: bool, log: Callable[[str], None]
    ) -> tuple[Path | None, dict[str, Any] | None]:
        """:func:`~dhian.train.checkpoint.find_checkpoint` on rank 0 (which alone repairs,
        verifies and reports); every rank gets the same path and loads its trainer state."""
        found: dict[str, Any] = {}

        def choose() -> str:
            path, found["state"] = ckpt.find_checkpoint(out_dir, resume, log)
            return "" if path is None else str(path)

        text = self.decide(choose)
        if not text:
            return None, None
        if self.is_main or not resume:
            return Path(text), found.get("state")
        return Path(text), ckpt.load_trainer_state(text)

    def gather_rng(self) -> list[torch.Tensor]:
        """Every rank's RNG states, each serialised as a uint8 tensor (meaningful on rank 0)."""
        buf = io.BytesIO()
        torch.save(ckpt.capture_rng(), buf)
        mine = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
        if not self.distributed:
            return [mine.clone()]
        n = torch.tensor([mine.numel()], dtype=torch.int64, device=self._comm)
        sizes = [torch.zeros_like(n) for _ in range(self.size)]
        dist.all_gather(sizes, n)
        width = max(int(s.item()) for s in sizes)
        padded = torch.zeros(width, dtype=torch.uint8, device=self._comm)
        padded[: mine.numel()] = mine.to(self._comm)
        parts = [torch.zeros_like(padded) for _ in range(self.size)]
        dist.all_gather(parts, padded)
        return [p[: int(s.item())].cpu() for p, s in zip(parts, sizes, strict=True)]

    # ------------------------------------------------------------------ RNG
    def _rank_seed(self, seed: int, step: int) -> int:
        return (seed + 7919 * self.rank + 104_729 * step) % 2**63

    def seed_rank(self, seed: int) -> None:
        """Give ranks > 0 their own dropout stream (rank 0 keeps the single-process one)."""
        if self.rank > 0:
            ckpt.seed_everything(self._rank_seed(seed, 0))

    def rng_for_rank(self, state: Mapping[str, Any], seed: int) -> dict[str, Any]:
        """This rank's RNG states from a trainer state: its own when the checkpoint has one for
        this rank, else (a new, larger world) a fresh stream derived from seed, rank and step."""
        ranks = state.get("rng_ranks") or []
        if self.rank == 0 or self.rank < len(ranks):
            if self.rank < len(ranks):
                raw = bytes(ranks[self.rank].tolist())
                return dict(torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True))
            return dict(state["rng"])
        ckpt.seed_everything(self._rank_seed(seed, int(state["step"])))
        return ckpt.capture_rng()

    # ------------------------------------------------------------------ model
    def shard_model(self, model: torch.nn.Module) -> int:
        """FSDP2: ``fully_shard`` every block (the model's top-level
        ``ModuleList`` items, e.g. llama's ``layers``) and then the root, in place; returns the
        number of blocks. A no-op (0) with one process. Call before building the optimizer."""
        if not self.distributed:
            return 0
        blocks = [
            block
            for child in model.children()
            if isinstance(child, torch.nn.ModuleList)
            for block in child
        ]
        for block in blocks:
            fully_shard(block)
        fully_shard(model)
        self.fsdp = True
        return len(blocks)

    def full_state(self, model: torch.nn.Module) -> dict[str, Any]:
        """The whole (unsharded) model state on rank 0's CPU, others get ``{}``; a collective
        under FSDP (every rank calls it). Without FSDP: the model's own state dict."""
        if not self.fsdp:
            return dict(model.state_dict())
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return dict(get_model_state_dict(model, options=options))

    def optimizer_state(self, model: torch.nn.Module, optimizer: Any) -> dict[str, Any]:
        """The optimizer state for a checkpoint: under FSDP gathered whole (keyed by
        parameter name; a collective), else ``optimizer.state_dict()``."""
        if not self.fsdp:
            return dict(optimizer.state_dict())
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return dict(get_optimizer_state_dict(model, optimizer, options=options))

    def load_optimizer_state(
        self, model: torch.nn.Module, optimizer: Any, state: Mapping[str, Any]
    ) -> None:
        """Restore :meth:`optimizer_state` (under FSDP each rank keeps its shard of it)."""
        if not self.fsdp:
            optimizer.load_state_dict(state)
            return
        if (
            "param_groups" in state
            and state.get("state")
            and all(isinstance(k, int) for k in state["state"])
        ):
            raise ConfigError(
                "this checkpoint was written without train.fsdp; resume it with train.fsdp=false"
            )
        options = StateDictOptions(full_state_dict=True)
        set_optimizer_state_dict(model, optimizer, dict(state), options=options)

    def wrap(self, model: torch.nn.Module, probe: Callable[[torch.nn.Module], torch.Tensor]) -> Any:
        """``model`` itself with one process; else its DDP wrapper, built on the first call.

        ``probe(model)`` returns a training loss on a real batch; parameters that get no
        gradient from it make DDP look for unused parameters every step (``find_unused``).
        The probe runs under a forked RNG and leaves no gradient behind.
        """
        if not self.distributed or self.fsdp:
            return model
        if self._ddp is None:
            params = [p for p in model.parameters() if p.requires_grad]
            devices = [self._comm] if self._comm.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                grads = torch.autograd.grad(probe(model), params, allow_unused=True)
            unused = any(g is None for g in grads)
            unused = self._reduce([float(unused)], dist.ReduceOp.MAX, torch.float64)[0] > 0
            ids = [self.local_rank] if self.backend == "nccl" else None
            # no buffer broadcast before each forward: every rank's buffers are identical already
            sig = inspect.signature(DistributedDataParallel).parameters
            quiet = "forward_sync_buffers" if "forward_sync_buffers" in sig else "broadcast_buffers"
            kwargs: dict[str, Any] = {quiet: False}
            self._ddp = DistributedDataParallel(
                model, device_ids=ids, find_unused_parameters=unused, **kwargs
            )
        return self._ddp

    def sync_context(self, model: Any, sync: bool) -> contextlib.AbstractContextManager[Any]:
        """Around forward + backward of a micro-batch: skip the gradient all-reduce unless
        ``sync`` (the last micro-batch of an accumulation group)."""
        if sync or not isinstance(model, DistributedDataParallel):
            return contextlib.nullcontext()
        return model.no_sync()

    def shard(self, stream: Any) -> Any:
        """``stream`` itself with one process, else this rank's :class:`ShardedStream`."""
        return ShardedStream(stream, self.rank, self.size) if self.distributed else stream
