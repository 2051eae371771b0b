"""Training-test helpers: a quiet :class:`~dhian.train.trainer.Trainer`, the straight-vs-resumed
exactness check, ``metrics.jsonl`` rows without timing fields, weight comparison, polling."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from dhian.config import RunConfig, replace
from dhian.train.trainer import Trainer

#: metrics.jsonl fields that differ between two otherwise identical runs
TIMING = ("wall", "tokens_per_s")


def quiet_trainer(
    cfg: RunConfig,
    task: Any = None,
    *,
    resume: bool = False,
    stop: int = 0,
    log: Callable[[str], None] | None = None,
) -> Trainer:
    """A Trainer without progress bar, console lines (unless ``log``) or curves; with
    ``stop > 0`` it requests a stop after step ``stop``."""

    def at_stop(t: Trainer) -> None:
        if t.step == stop:
            t.request_stop()

    return Trainer(
        cfg,
        task,
        resume=resume,
        progress=False,
        log=log or (lambda m: None),
        callbacks=[at_stop] if stop else [],
        curves=False,
    )


def assert_resume_is_exact(base: RunConfig, root: Path, stop: int) -> None:
    """Train ``base`` straight into ``root/a`` and, into ``root/b``, up to step ``stop``, stop,
    then resume; both must end at ``base.train.max_steps`` with bitwise-equal last weights and
    the same ``metrics.jsonl`` (timing aside)."""
    steps = base.train.max_steps

    def at(out: str) -> RunConfig:
        return replace(base, train=replace(base.train, out_dir=str(root / out)))

    assert quiet_trainer(at("a")).fit().step == steps
    assert quiet_trainer(at("b"), stop=stop).fit().step == stop
    assert quiet_trainer(at("b"), resume=True).fit().step == steps
    assert same_weights(root / "a" / "last", root / "b" / "last")
    assert rows(root / "a") == rows(root / "b")


def rows(out: Path, event: str | None = None) -> list[dict[str, Any]]:
    """``out/metrics.jsonl`` rows without timing fields (a torn last line is ignored)."""
    found = []
    path = out / "metrics.jsonl"
    if not path.is_file():
        return []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event is None or row["event"] == event:
            found.append({k: v for k, v in row.items() if k not in TIMING})
    return found


def wait_for(
    check: Callable[[], bool], timeout: float, alive: Callable[[], bool], poll: float = 0.005
) -> bool:
    """Poll ``check`` until it holds (True), ``alive`` turns False or ``timeout`` passes."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        if not alive():
            return check()
        time.sleep(poll)
    raise TimeoutError(f"condition not met within {timeout} s")


def weights(directory: Path) -> dict[str, torch.Tensor]:
    """The tensors of ``directory/model.safetensors``."""
    return load_file(str(directory / "model.safetensors"))


def same_weights(a: Path, b: Path) -> bool:
    """Bitwise equality of two model dirs' weights."""
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
