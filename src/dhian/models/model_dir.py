"""Model directories: save and load a trained model with its config and tokenizers.

Owns the on-disk layout of a dhian model dir (see docs/design.md, "Model directories")::

    DIR/config.yaml          resolved RunConfig (model, data, train)
    DIR/model.safetensors    weights only (never pickles); header metadata names the format,
                             model type, task kind and the keyword arguments of the builder
    DIR/tokenizer/           one shared tokenizer, or tokenizer/src + tokenizer/tgt

and the atomic-write helpers (temp file + fsync + rename; temp dir + rename) that checkpoints
reuse. Loading fails with one-line :class:`~dhian.errors.ModelLoadError` for a missing dir,
missing files, a corrupt weights file, weights of another model type, pickle-only weights, or
a file that does not match the dir's ``manifest.json`` (:mod:`dhian.models.manifest`).
Imports: stdlib, PyYAML, torch, safetensors, :mod:`dhian.config`, :mod:`dhian.errors`,
:mod:`dhian.text` (the default tokenizer loader) and :mod:`dhian.models.families` (the default
builder and each family's default task).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_model

from dhian.config import RunConfig, run_config_from_dict
from dhian.errors import ConfigError, DhianError, ModelLoadError
from dhian.models.families import build_model, family_of
from dhian.models.manifest import verify_model_files
from dhian.text import load_tokenizer

FORMAT = "dhian-model"
FORMAT_VERSION = "1"
WEIGHTS = "model.safetensors"
CONFIG = "config.yaml"
TOKENIZER = "tokenizer"
PICKLE_NAMES = ("pytorch_model.bin", "model.pt", "model.pth", "model.bin", "checkpoint.pt")

Builder = Callable[..., torch.nn.Module]
TokenizerLoader = Callable[[Path], Any]


@dataclasses.dataclass
class LoadedModel:
    """A model ready to use: ``model`` (eval mode, on ``map_location``), its ``config``,
    ``tokenizers`` (``{"src": tok, "tgt": tok}``, the same object when shared) and ``kind``
    (the task it was trained for: translation | classification | lm | mlm)."""

    model: torch.nn.Module
    config: RunConfig
    tokenizers: dict[str, Any]
    kind: str
    build_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)


def unpickle_refusal(path: str | Path, exc: BaseException) -> str:
    """One line for a ``torch.load(weights_only=True)`` that failed on ``path``: what torch
    found (e.g. "unsupported GLOBAL posix.system"), never torch's advice to re-run with
    ``weights_only=False`` — that would run whatever code a file of unknown origin holds."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    if found:
        return (
            f"{path} cannot be read as weights only: it holds Python objects (it would call "
            f"{found.group(1)}); dhian "
            "never unpickles code from a file, so it is refused"
        )
    first = lines[0] if lines else type(exc).__name__
    if "weights_only" in first or "Weights only" in first:
        first = "not a plain weights file"
    return (
        f"{path} cannot be read as weights only ({first}); it is corrupt or holds more than weights"
    )


# --------------------------------------------------------------------------- atomic writes


def fsync_dir(path: str | Path) -> None:
    """Flush a directory entry (after a rename) to disk; a no-op where unsupported."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(path: str | Path) -> None:
    """fsync every file and directory under ``path`` (before it is renamed into place)."""
    for root, _dirs, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(root)


def _umask() -> int:
    """The process umask (read from /proc where possible: setting it is process-wide)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    old = os.umask(0o022)
    os.umask(old)
    return old


def normalise_modes(path: str | Path) -> None:
    """Give every file under ``path`` the mode an ordinary ``open()`` would (0644 with the
    usual umask) and every folder 0755: writers that go through a private temp file (safetensors
    writes 0600) would otherwise leave files only their owner can read."""
    mask = _umask()
    for root, dirs, files in os.walk(path):
        os.chmod(root, 0o777 & ~mask)
        for name in files:
            full = os.path.join(root, name)
            if not os.path.islink(full):
                os.chmod(full, 0o666 & ~mask)
        for name in dirs:
            full = os.path.join(root, name)
            if not os.path.islink(full):
                os.chmod(full, 0o777 & ~mask)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file + fsync + rename: never a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _old_name(final: Path) -> Path:
    return final.with_name(f".{final.name}.old")


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a fresh temp dir beside ``final``; on success swap it into place as ``final``.

    The previous ``final`` stays intact until the new one is complete and fsynced: it is moved
    aside to ``.NAME.old``, the new dir renamed in, then the old one deleted. An exception
    inside the block removes the temp dir and leaves ``final`` untouched. A crash between the
    two renames is repaired by :func:`recover_dir`.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(final)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
        normalise_modes(tmp)
        fsync_tree(tmp)
        old = _old_name(final)
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            os.rename(final, old)
        os.rename(tmp, final)
        fsync_dir(final.parent)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def recover_dir(final: str | Path) -> Path:
    """Repair an interrupted :func:`atomic_dir` swap (restore ``.NAME.old``) and drop temp dirs."""
    final = Path(final)
    old = _old_name(final)
    if not final.exists() and old.is_dir():
        os.rename(old, final)
    if final.parent.is_dir():
        for stale in final.parent.glob(f".{final.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
    return final


def default_task(model_type: str) -> str:
    """The task a model of ``model_type`` is saved for when the saver names none (its family's
    ``task``; the type itself for a type no family owns, e.g. a test's toy model)."""
    try:
        return family_of(model_type).task
    except ConfigError:
        return model_type


# --------------------------------------------------------------------------- save


def _tokenizer_dirs(tokenizers: Any) -> list[tuple[str, Any]]:
    """[(subdir, tokenizer)]: ``""`` for one shared tokenizer, else ``src``/``tgt``."""
    if tokenizers is None:
        return []
    if not isinstance(tokenizers, Mapping):
        return [("", tokenizers)]
    toks = {k: v for k, v in tokenizers.items() if v is not None}
    if len({id(v) for v in toks.values()}) <= 1:
        return [("", next(iter(toks.values())))] if toks else []
    return sorted(toks.items())


def save_tokenizers(directory: str | Path, tokenizers: Any) -> None:
    """Save ``tokenizers`` under ``directory`` (shared: directly; else ``src/`` and ``tgt/``)."""
    directory = Path(directory)
    for sub, tok in _tokenizer_dirs(tokenizers):
        target = directory / sub if sub else directory
        target.mkdir(parents=True, exist_ok=True)
        tok.save(target)


def save_model_dir(
    directory: str | Path,
    model: torch.nn.Module,
    run_config: RunConfig,
    tokenizers: Any,
    *,
    kind: str | None = None,
    build_kwargs: Mapping[str, Any] | None = None,
    atomic: bool = True,
) -> Path:
    """Write ``model`` + config + tokenizers as a model dir at ``directory``.

    ``tokenizers``: one tokenizer, or ``{"src": ..., "tgt": ...}`` (saved once when they are the
    same object); each needs ``save(dir)``. ``build_kwargs`` are what the model builder needs
    besides the config (e.g. vocab sizes); by default ``src_vocab_size``/``tgt_vocab_size`` of the
    tokenizers. With ``atomic`` the dir is written elsewhere first and swapped in complete.
    """
    directory = Path(directory)
    if atomic:
        with atomic_dir(directory) as tmp:
            write_model_files(
                tmp, model, run_config, tokenizers, kind=kind, build_kwargs=build_kwargs
            )
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    write_model_files(
        directory, model, run_config, tokenizers, kind=kind, build_kwargs=build_kwargs
    )
    return directory


def default_build_kwargs(tokenizers: Any) -> dict[str, Any]:
    """``{"src_vocab_size": ..., "tgt_vocab_size": ...}`` read off the tokenizers."""
    if tokenizers is None:
        return {}
    if isinstance(tokenizers, Mapping):
        src = tokenizers.get("src") or next(iter(tokenizers.values()))
        tgt = tokenizers.get("tgt") or src
    else:
        src = tgt = tokenizers
    return {"src_vocab_size": int(src.vocab_size), "tgt_vocab_size": int(tgt.vocab_size)}


def write_model_files(
    directory: Path,
    model: torch.nn.Module,
    run_config: RunConfig,
    tokenizers: Any,
    *,
    kind: str | None = None,
    build_kwargs: Mapping[str, Any] | None = None,
) -> None:
    """Write the files of a model dir into an existing ``directory`` (not atomic by itself)."""
    mtype = str(getattr(run_config.model, "type", type(run_config.model).__name__))
    kwargs = dict(build_kwargs) if build_kwargs is not None else default_build_kwargs(tokenizers)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_type": mtype,
        "kind": kind or default_task(mtype),
        "build_kwargs": json.dumps(kwargs, sort_keys=True),
    }
    save_model(model, str(directory / WEIGHTS), metadata=meta)
    os.chmod(directory / WEIGHTS, 0o666 & ~_umask())  # safetensors writes 0600
    (directory / CONFIG).write_text(
        yaml.safe_dump(run_config.to_dict(), sort_keys=False), encoding="utf-8"
    )
    save_tokenizers(directory / TOKENIZER, tokenizers)


# --------------------------------------------------------------------------- load


def read_metadata(directory: str | Path) -> dict[str, str]:
    """The safetensors header metadata of ``DIR/model.safetensors`` (checked, not loaded)."""
    path = _weights_path(Path(directory))
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelLoadError(
            f"{path} is corrupt or truncated ({_first_line(exc)}); re-save it or use another checkpoint"
        ) from exc
    return dict(meta)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _weights_path(directory: Path) -> Path:
    if not directory.exists():
        raise ModelLoadError(f"model dir {str(directory)!r} does not exist")
    if not directory.is_dir():
        raise ModelLoadError(f"{str(directory)!r} is a file, not a model dir")
    path = directory / WEIGHTS
    if path.is_file():
        return path
    pickles = [p.name for p in directory.iterdir() if p.name in PICKLE_NAMES or p.suffix == ".bin"]
    if pickles:
        raise ModelLoadError(
            f"{directory} holds pickled weights ({', '.join(sorted(pickles))}) which dhian never "
            f"unpickles; convert them to {WEIGHTS} (safetensors)"
        )
    raise ModelLoadError(f"{directory} has no {WEIGHTS}; is it a dhian model dir?")


def read_run_config(directory: str | Path) -> RunConfig:
    """The :class:`RunConfig` saved in ``DIR/config.yaml``."""
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise ModelLoadError(f"{Path(directory)} has no {CONFIG}; is it a dhian model dir?")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return run_config_from_dict(data)
    except (yaml.YAMLError, DhianError) as exc:
        raise ModelLoadError(f"{path} is not a valid run config: {_first_line(exc)}") from exc


def load_weights(
    directory: str | Path, model: torch.nn.Module, *, strict: bool = True, device: str = "cpu"
) -> tuple[list[str], list[str]]:
    """Copy the weights of ``DIR/model.safetensors`` into ``model``; returns (missing, unexpected).

    With ``strict=False`` names may differ (e.g. a pretrained backbone into a model with a new
    head) but every shared name must match in shape, and at least one must be shared.
    """
    path = _weights_path(Path(directory))
    read_metadata(directory)  # corrupt header → ModelLoadError before torch sees it
    try:
        missing, unexpected = load_model(model, str(path), strict=strict, device=device)
    except (RuntimeError, SafetensorError, OSError, ValueError) as exc:
        raise ModelLoadError(
            f"weights in {path} do not fit this model: {_first_line(exc)}"
            + ("" if strict else " (shapes differ)")
        ) from exc
    own = set(model.state_dict())
    if not strict and own and len(set(missing)) >= len(own):
        raise ModelLoadError(f"no weight in {path} matches a parameter name of this model")
    return list(missing), list(unexpected)


def load_tokenizers(directory: str | Path, loader: TokenizerLoader | None = None) -> dict[str, Any]:
    """``{"src": tok, "tgt": tok}`` from ``DIR/tokenizer`` (shared) or its ``src``/``tgt``."""
    loader = loader or load_tokenizer
    root = Path(directory) / TOKENIZER
    if not root.is_dir():
        raise ModelLoadError(f"{Path(directory)} has no {TOKENIZER}/ folder")
    try:
        if (root / "src").is_dir() or (root / "tgt").is_dir():
            subs = sorted(p.name for p in root.iterdir() if p.is_dir())
            toks = {name: loader(root / name) for name in subs}
            toks.setdefault("src", toks.get("tgt"))
            toks.setdefault("tgt", toks.get("src"))
            return toks
        tok = loader(root)
    except DhianError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot load the tokenizer in {root}: {_first_line(exc)}") from exc
    return {"src": tok, "tgt": tok}


def load_model_dir(
    directory: str | Path,
    *,
    expect_type: str | Iterable[str] | None = None,
    map_location: str = "cpu",
    builder: Builder | None = None,
    tokenizer_loader: TokenizerLoader | None = None,
) -> LoadedModel:
    """Load a model dir written by :func:`save_model_dir` (model in eval mode).

    ``expect_type``: accepted ``model.type`` name(s); another type raises ModelLoadError.
    ``builder(model_cfg, **build_kwargs)`` makes the empty model; default
    ``dhian.models.families.build_model``. A dir with a ``manifest.json`` (a checkpoint) is
    checked against it first (:func:`dhian.models.manifest.verify_model_files`).
    """
    directory = Path(directory)
    verify_model_files(directory)  # a checkpoint's manifest: a corrupt file is named, not used
    meta = read_metadata(directory)
    if meta.get("format") != FORMAT:
        raise ModelLoadError(
            f"{directory / WEIGHTS} was not written by dhian (no '{FORMAT}' metadata); "
            "import foreign checkpoints first"
        )
    cfg = read_run_config(directory)
    mtype = str(getattr(cfg.model, "type", ""))
    if meta.get("model_type") and meta["model_type"] != mtype:
        raise ModelLoadError(
            f"{directory}: weights are of model type {meta['model_type']!r} but config.yaml "
            f"says {mtype!r}"
        )
    if expect_type is not None:
        allowed = {expect_type} if isinstance(expect_type, str) else set(expect_type)
        if mtype not in allowed:
            raise ModelLoadError(
                f"{directory} holds a {mtype!r} model; expected {' or '.join(sorted(allowed))}"
            )
    try:
        build_kwargs = json.loads(meta.get("build_kwargs", "{}"))
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{directory / WEIGHTS} has unreadable build metadata") from exc
    if builder is None:
        builder = build_model
    try:
        model = builder(cfg.model, **build_kwargs)
    except TypeError as exc:
        raise ModelLoadError(f"cannot rebuild the {mtype!r} model of {directory}: {exc}") from exc
    load_weights(directory, model, strict=True, device=map_location)
    model.to(map_location)
    model.eval()
    tokenizers = load_tokenizers(directory, tokenizer_loader)
    kind = meta.get("kind") or default_task(mtype)
    return LoadedModel(model, cfg, tokenizers, kind, build_kwargs)
