"""Training checkpoints: a model dir plus ``trainer_state.pt``, written atomically.

Owns ``OUT/last`` (resumable: weights + optimizer, scheduler, RNG states, data position, loop
counters) and ``OUT/best`` (weights only), each a full model dir (see :mod:`dhian.models.io`),
older ``last`` copies under ``OUT/checkpoints/step-N`` when ``keep_last > 1``, and RNG capture /
restore (torch CPU + CUDA, Python ``random``, NumPy). ``trainer_state.pt`` holds only tensors and
primitives so it loads with ``torch.load(weights_only=True)``.
Imports: stdlib, numpy, torch, :mod:`dhian.models.io`, :mod:`dhian.config`, :mod:`dhian.errors`.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dhian.config import RunConfig
from dhian.errors import ConfigError, ModelLoadError
from dhian.models.io import (
    atomic_dir,
    fsync_dir,
    recover_dir,
    write_model_files,
)

TRAINER_STATE = "trainer_state.pt"
INFO = "checkpoint.json"
STATE_VERSION = 1


# --------------------------------------------------------------------------- RNG


def seed_everything(seed: int) -> None:
    """Seed Python ``random``, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng() -> dict[str, Any]:
    """All global RNG states as tensors / primitives (``weights_only``-loadable)."""
    py = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    ver, internal, gauss = state["python"]
    random.setstate((ver, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


# --------------------------------------------------------------------------- save / load


def save_checkpoint(
    directory: str | Path,
    model: torch.nn.Module,
    run_config: RunConfig,
    tokenizers: Any,
    trainer_state: Mapping[str, Any] | None,
    *,
    kind: str | None = None,
    build_kwargs: Mapping[str, Any] | None = None,
    info: Mapping[str, Any] | None = None,
) -> Path:
    """Write a model dir (and ``trainer_state.pt`` when given) atomically at ``directory``.

    Everything goes into a temp dir first; the previous checkpoint at ``directory`` is replaced
    only once the new one is complete on disk.
    """
    directory = Path(directory)
    with atomic_dir(directory) as tmp:
        write_model_files(tmp, model, run_config, tokenizers, kind=kind, build_kwargs=build_kwargs)
        if trainer_state is not None:
            buf = io.BytesIO()
            torch.save(dict(trainer_state), buf)
            (tmp / TRAINER_STATE).write_bytes(buf.getvalue())
        (tmp / INFO).write_text(json.dumps(dict(info or {}), sort_keys=True) + "\n")
    return directory


def load_trainer_state(directory: str | Path) -> dict[str, Any]:
    """``DIR/trainer_state.pt`` loaded with ``weights_only=True``."""
    directory = recover_dir(directory)
    path = Path(directory) / TRAINER_STATE
    if not path.is_file():
        raise ModelLoadError(f"{directory} has no {TRAINER_STATE}; it cannot be resumed")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{path} is corrupt or not a trainer state: {first}") from exc
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise ModelLoadError(f"{path} is not a dhian trainer state (version {STATE_VERSION})")
    return state


def read_info(directory: str | Path) -> dict[str, Any]:
    """``DIR/checkpoint.json`` (step, epoch, metric...) or ``{}``."""
    path = Path(directory) / INFO
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def resumable_checkpoint(out_dir: str | Path) -> Path | None:
    """``OUT/last`` if it holds a complete checkpoint (repairing an interrupted swap), else None."""
    last = recover_dir(Path(out_dir) / "last")
    return last if (last / TRAINER_STATE).is_file() else None


def check_resumable_config(saved: RunConfig, current: RunConfig) -> None:
    """Raise ConfigError unless ``current`` may continue a run saved with ``saved``.

    The model, the data and ``train.seed`` / ``train.grad_accum`` / batching must be the same;
    stop conditions, evaluation and logging knobs may change (e.g. a larger ``max_steps``).
    """
    frozen_train = ("seed", "grad_accum", "max_tokens", "batch_size", "freeze", "optimizer")
    old, new = saved.to_dict(), current.to_dict()
    diffs = []
    for section in ("model", "data"):
        for key in sorted(set(old[section]) | set(new[section])):
            if old[section].get(key) != new[section].get(key):
                diffs.append(
                    f"{section}.{key}: {old[section].get(key)!r} -> {new[section].get(key)!r}"
                )
    for key in frozen_train:
        if old["train"].get(key) != new["train"].get(key):
            diffs.append(f"train.{key}: {old['train'].get(key)!r} -> {new['train'].get(key)!r}")
    if diffs:
        raise ConfigError(
            "cannot resume: the config differs from the checkpoint's in "
            + "; ".join(diffs[:4])
            + ("; ..." if len(diffs) > 4 else "")
            + " (start a new run with --out instead)"
        )


def rotate_last(out_dir: str | Path, keep_last: int) -> None:
    """Before ``last`` is replaced: copy it to ``checkpoints/step-N`` and prune to ``keep_last-1``.

    With ``keep_last <= 1`` nothing is kept besides ``last`` itself.
    """
    out_dir = Path(out_dir)
    last = out_dir / "last"
    if keep_last <= 1 or not last.is_dir():
        return
    step = read_info(last).get("step")
    if not isinstance(step, int):
        return
    hist = out_dir / "checkpoints"
    hist.mkdir(exist_ok=True)
    target = hist / f"step-{step:08d}"
    if not target.exists():
        tmp = hist / f".step-{step:08d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(last, tmp)
        os.rename(tmp, target)
        fsync_dir(hist)
    older = sorted(p for p in hist.iterdir() if re.fullmatch(r"step-\d{8}", p.name))
    for p in older[: max(0, len(older) - (keep_last - 1))]:
        shutil.rmtree(p, ignore_errors=True)
