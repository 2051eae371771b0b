"""Training checkpoints: a model dir plus ``trainer_state.pt``, written atomically and verified.

Owns ``OUT/last`` (resumable: weights + optimizer, scheduler, RNG states, data position, loop
counters), its fallback ``OUT/last.prev`` (the previous ``last``, kept after each save), ``OUT/best``
(weights only), each a full model dir (see :mod:`dhian.models.model_dir`) plus ``manifest.json`` (size and
SHA-256 of every file, checked before a resume), older ``last`` copies under
``OUT/checkpoints/step-N`` when ``keep_last > 1``, the choice of the newest *valid* checkpoint on
resume (corrupt ones are reported, moved aside to ``NAME.corrupt`` and skipped), and RNG capture /
restore (torch CPU + CUDA, Python ``random``, NumPy). ``trainer_state.pt`` holds only tensors and
primitives so it loads with ``torch.load(weights_only=True)``. A failed write (disk full...) raises
:class:`CheckpointWriteError` naming the previous checkpoint, which stays intact.
Imports: stdlib, numpy, torch, :mod:`dhian.models.model_dir`, :mod:`dhian.config`, :mod:`dhian.errors`.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import random
import re
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dhian.config import RunConfig
from dhian.errors import ConfigError, DhianError, ModelLoadError
from dhian.models.manifest import MANIFEST as MANIFEST_NAME
from dhian.models.model_dir import (
    fsync_dir,
    fsync_tree,
    read_metadata,
    read_run_config,
    recover_dir,
    unpickle_refusal,
    write_model_files,
)

TRAINER_STATE = "trainer_state.pt"
INFO = "checkpoint.json"
MANIFEST = MANIFEST_NAME  # written here, checked on every load by dhian.models.manifest
STATE_VERSION = 1
#: Test hook: seconds to sleep inside each checkpoint write (between the weights and the trainer
#: state, and between the two renames of the swap) so that a test's kill -9 can land there.
PAUSE_ENV = "DHIAN_FAULT_PAUSE_S"


class CheckpointWriteError(DhianError, OSError):
    """Writing a checkpoint failed (e.g. the disk is full); the previous one is intact."""


class CorruptCheckpoint(ModelLoadError):
    """A checkpoint's files do not match its manifest (truncated, changed, missing)."""


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


# --------------------------------------------------------------------------- save


def previous_path(directory: str | Path) -> Path:
    """Where the previous resumable checkpoint of ``directory`` is kept: ``NAME.prev``."""
    directory = Path(directory)
    return directory.with_name(f"{directory.name}.prev")


def _pause() -> None:
    raw = os.environ.get(PAUSE_ENV, "")
    if raw:
        time.sleep(float(raw))


def write_manifest(directory: Path) -> None:
    """Record size and SHA-256 of every file under ``directory`` in ``directory/manifest.json``."""
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST):
        with open(path, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
        rel = path.relative_to(directory).as_posix()
        files[rel] = {"size": path.stat().st_size, "sha256": digest}
    doc = {"format": "dhian-checkpoint", "version": 1, "files": files}
    (directory / MANIFEST).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")


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

    Everything goes into a temp dir first, with ``manifest.json`` last, and is fsynced; only then
    is the previous checkpoint moved aside and the new one renamed into place. A resumable
    checkpoint (with ``trainer_state``) keeps the previous one as ``NAME.prev``, so there is
    always a fallback; ``best`` drops it. An OSError (disk full...) removes the temp dir and
    raises :class:`CheckpointWriteError` naming the intact previous checkpoint.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(directory)  # an older dhian's interrupted swap; stale temp dirs
    for stale in directory.parent.glob(f".{directory.name}.trash-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = directory.with_name(f".{directory.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir()
        write_model_files(tmp, model, run_config, tokenizers, kind=kind, build_kwargs=build_kwargs)
        _pause()
        if trainer_state is not None:
            buf = io.BytesIO()
            torch.save(dict(trainer_state), buf)
            (tmp / TRAINER_STATE).write_bytes(buf.getvalue())
        (tmp / INFO).write_text(json.dumps(dict(info or {}), sort_keys=True) + "\n")
        write_manifest(tmp)
        fsync_tree(tmp)
        _swap_in(tmp, directory, keep_previous=trainer_state is not None)
    except OSError as exc:
        raise CheckpointWriteError(_write_failure(directory, exc)) from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return directory


def _swap_in(tmp: Path, final: Path, keep_previous: bool) -> None:
    """Rename the complete ``tmp`` to ``final``; the old ``final`` becomes ``NAME.prev`` (kept)
    or ``.NAME.old`` (deleted after; :func:`recover_dir` restores it after a crash)."""
    prev = previous_path(final) if keep_previous else final.with_name(f".{final.name}.old")
    trash: Path | None = None
    if final.exists():
        if prev.exists():
            trash = final.with_name(f".{final.name}.trash-{uuid.uuid4().hex[:8]}")
            os.rename(prev, trash)
        os.rename(final, prev)  # a crash from here to the next rename: resume uses NAME.prev
    _pause()
    os.rename(tmp, final)
    fsync_dir(final.parent)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    if not keep_previous:
        shutil.rmtree(prev, ignore_errors=True)


def _write_failure(directory: Path, exc: OSError, intact: Path | None = None) -> str:
    """One line: what failed, which earlier checkpoint is intact, what to do."""
    if exc.errno == errno.ENOSPC:
        what = "no space left on device"
    else:
        what = str(exc).strip() or type(exc).__name__
    places = [intact] if intact is not None else [directory, previous_path(directory)]
    kept = [p for p in places if (p / INFO).is_file()]
    if kept:
        step = read_info(kept[0]).get("step")
        safe = f"the previous checkpoint {kept[0]} (step {step}) is intact"
    else:
        safe = "no earlier checkpoint existed"
    return (
        f"could not write checkpoint {directory}: {what}; {safe}; free some disk space and "
        "continue with --resume"
    )


# --------------------------------------------------------------------------- load


def verify_checkpoint(directory: str | Path) -> bool:
    """Check every file listed in ``DIR/manifest.json`` (size, SHA-256).

    Returns True when verified, False when there is no manifest (written by an older dhian:
    nothing to check against); raises :class:`CorruptCheckpoint` naming the first bad file.
    """
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        return False
    try:
        files = json.loads(path.read_text(encoding="utf-8"))["files"]
        entries = [(str(k), int(v["size"]), str(v["sha256"])) for k, v in files.items()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptCheckpoint(f"{path} is unreadable ({type(exc).__name__})") from exc
    for rel, size, digest in entries:
        f = directory / rel
        if not f.is_file():
            raise CorruptCheckpoint(f"{f} is missing")
        if f.stat().st_size != size:
            raise CorruptCheckpoint(f"{f} has {f.stat().st_size} bytes, {size} were written")
        with open(f, "rb") as fh:
            if hashlib.file_digest(fh, "sha256").hexdigest() != digest:
                raise CorruptCheckpoint(f"{f} does not match its SHA-256 (changed after writing)")
    return True


def load_trainer_state(directory: str | Path) -> dict[str, Any]:
    """``DIR/trainer_state.pt`` loaded with ``weights_only=True``."""
    directory = recover_dir(directory)
    path = Path(directory) / TRAINER_STATE
    if not path.is_file():
        raise ModelLoadError(f"{directory} has no {TRAINER_STATE}; it cannot be resumed")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise ModelLoadError(
            f"corrupt or not a trainer state: {unpickle_refusal(path, exc)}"
        ) from exc
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


def checkpoint_candidates(out_dir: str | Path) -> list[Path]:
    """Resumable checkpoint dirs of a run, newest first: ``last``, ``last.prev``, then
    ``checkpoints/step-N`` by falling N (an older dhian's interrupted swap is repaired first)."""
    out = Path(out_dir)
    last = recover_dir(out / "last")
    found = [p for p in (last, previous_path(last)) if p.is_dir()]
    hist = out / "checkpoints"
    if hist.is_dir():
        steps = [p for p in hist.iterdir() if re.fullmatch(r"step-\d{8}", p.name) and p.is_dir()]
        found.extend(sorted(steps, reverse=True))
    return found


def open_resumable(
    out_dir: str | Path, log: Callable[[str], None] = print
) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that passes :func:`verify_checkpoint` and loads, with its trainer
    state; None when the run has none. Each corrupt newer one is reported through ``log`` (one
    line), moved aside to ``NAME.corrupt`` (so the next save cannot push the good fallback out)
    and skipped; when every one is corrupt, ModelLoadError."""
    bad: list[Path] = []
    for path in checkpoint_candidates(out_dir):
        try:
            verified = verify_checkpoint(path)
            state = load_trainer_state(path)
            read_metadata(path)
            read_run_config(path)
        except ModelLoadError as exc:
            log(f"warning: skipping corrupt checkpoint {path}: {exc}")
            bad.append(path)
            continue
        for p in bad:
            aside = p.with_name(f"{p.name}.corrupt")
            shutil.rmtree(aside, ignore_errors=True)
            os.rename(p, aside)
            log(f"warning: moved the corrupt checkpoint {p} aside to {aside}")
        if bad:
            log(f"resuming from the newest valid checkpoint {path} (step {state['step']})")
        if not verified:
            log(f"note: {path} has no {MANIFEST} (older dhian); its files were not verified")
        return path, state
    if bad:
        raise ModelLoadError(
            f"every checkpoint in {out_dir} is corrupt ({', '.join(p.name for p in bad)}); "
            "start a new run with --out"
        )
    return None


def find_checkpoint(
    out_dir: str | Path, resume: bool, log: Callable[[str], None] = print
) -> tuple[Path | None, dict[str, Any] | None]:
    """For a resume: the newest valid checkpoint and its trainer state (:func:`open_resumable`;
    ``(None, None)`` if the run has none). For a new run: the newest existing checkpoint dir, if
    any (the engine then refuses to overwrite the run), and no state."""
    if not resume:
        found = checkpoint_candidates(out_dir)
        return (found[0] if found else None), None
    recover_dir(Path(out_dir) / "best")  # a crash mid-swap of best left it as .best.old
    opened = open_resumable(out_dir, log)
    return (None, None) if opened is None else opened


def check_resumable_config(saved: RunConfig, current: RunConfig) -> None:
    """Raise ConfigError unless ``current`` may continue a run saved with ``saved``.

    The model, the data and ``train.seed`` / batching must be the same; stop conditions,
    evaluation and logging knobs may change (e.g. a larger ``max_steps``), and so may
    ``train.grad_accum`` (a different number of processes may keep the batches per step with it).
    """
    frozen_train = ("seed", "max_tokens", "batch_size", "freeze", "optimizer", "lora", "fsdp")
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

    With ``keep_last <= 1`` nothing is kept besides ``last`` and its fallback ``last.prev``.
    A failed copy (disk full...) raises :class:`CheckpointWriteError`; ``last`` is untouched.
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
        try:
            shutil.copytree(last, tmp)
            fsync_tree(tmp)
            os.rename(tmp, target)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointWriteError(_write_failure(target, exc, intact=last)) from exc
        fsync_dir(hist)
    older = sorted(p for p in hist.iterdir() if re.fullmatch(r"step-\d{8}", p.name))
    for p in older[: max(0, len(older) - (keep_last - 1))]:
        trash = hist / f".{p.name}.trash"  # hidden first: a kill mid-delete leaves no candidate
        shutil.rmtree(trash, ignore_errors=True)
        os.rename(p, trash)
        shutil.rmtree(trash, ignore_errors=True)
