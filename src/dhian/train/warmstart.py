"""Where a run starts from: ``train.init_from`` (an existing model dir) and ``--resume auto``.

Owns :func:`init_source` (where the tokenizer of ``init_from`` lives, checked before any work),
:func:`load_init_weights` (copy every weight whose name and shape fit; report the rest) and
:func:`resolve_resume` (``--resume auto``: continue when the output dir holds a checkpoint, else
start fresh — what ``torchrun --max-restarts`` needs). A dhian model dir is read with
:mod:`dhian.models.model_dir`; a HuggingFace dir (``config.json`` with a ``model_type`` dhian can
import) is converted by :mod:`dhian.interop.hf_dirs` first.
``pretrained:NAME`` values resolve through :func:`dhian.data.builtin_corpora.resolve_pretrained`.
Imports: stdlib, torch, :mod:`dhian.data`, :mod:`dhian.models.model_dir`, :mod:`dhian.interop`,
:mod:`dhian.errors`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import torch

from dhian.data.builtin_corpora import resolve_pretrained
from dhian.data.fetch import cache_dir
from dhian.errors import ConfigError, ModelLoadError
from dhian.inference.load import load_model
from dhian.interop.hf_dirs import hf_model_type, load_hf_dir
from dhian.models import model_dir as model_io
from dhian.models.families import family_for_builtin, family_for_suffix

#: ``--resume`` values: True / "must" — continue the run (an error when there is none);
#: "auto" — continue when the output dir holds a checkpoint, else start fresh; False — fresh.
ResumeMode = bool | Literal["auto", "must"]


def _is_hf(path: Path) -> bool:

    return hf_model_type(path) is not None


def imported_dir(source: str | Path) -> Path:
    """The cached dhian model dir of ``source`` — a built-in model name (``smollm2``) or a
    checkpoint file a family imports (``.gguf``) —, written on first use.

    The cache key is the built-in name, or the file's name and size; a complete dir is reused
    (it is written atomically), so every run and every torchrun rank reads the same weights."""
    path = Path(source)
    key = f"{path.stem}-{path.stat().st_size}" if path.is_file() else str(source)
    target = cache_dir() / "imported" / key
    if not (target / model_io.CONFIG).is_file():
        loaded = load_model(source)
        model_io.save_model_dir(
            target,
            loaded.model,
            loaded.config,
            loaded.tokenizers,
            kind=loaded.kind,
            build_kwargs=loaded.build_kwargs,
        )
    return target


def resolve_init(path: str | Path) -> Path:
    """The directory of an ``init_from`` value: ``pretrained:NAME`` is fetched/cached by
    :func:`dhian.data.builtin_corpora.resolve_pretrained` (the one resolver for recipe model paths);
    a built-in model name (``smollm2``) or a file a family imports (a GGUF checkpoint) becomes
    its :func:`imported_dir`; any other value is taken as a path."""
    if not Path(path).exists() and family_for_builtin(str(path)) is not None:
        return imported_dir(str(path))
    d = resolve_pretrained(path)
    if d.is_file() and family_for_suffix(d.suffix) is not None:
        return imported_dir(d)
    return d


def init_source(path: str | Path) -> Path:
    """Check ``init_from`` (a dir or ``pretrained:NAME``) and return the directory its
    tokenizer loads from."""
    d = resolve_init(path)
    if not d.is_dir():
        raise ModelLoadError(f"train.init_from {str(d)!r} is not a directory")
    if (d / model_io.CONFIG).is_file():
        model_io.read_metadata(d)  # a corrupt/foreign weights file fails here, before any work
        return d / model_io.TOKENIZER
    if _is_hf(d):
        return d  # dhian.text loads HF tokenizer.json / vocab.txt dirs
    raise ModelLoadError(
        f"train.init_from {str(d)!r} is neither a dhian model dir (config.yaml) nor a "
        "HuggingFace dir (config.json)"
    )


def load_init_weights(
    model: torch.nn.Module, path: str | Path, log: Callable[[str], None] = print
) -> list[str]:
    """Copy the weights of ``path`` into ``model`` where names and shapes match.

    Returns the names left as initialised (e.g. a new classification head). Shape mismatches
    and a checkpoint sharing no name with ``model`` raise ModelLoadError. ``path`` may be
    ``pretrained:NAME``.
    """
    d = resolve_init(path)
    if (d / model_io.CONFIG).is_file():
        missing, unexpected = model_io.load_weights(d, model, strict=False)
    else:
        source = load_hf_dir(d).model.state_dict()
        own = model.state_dict()
        bad = [
            f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
            for k, v in source.items()
            if k in own and own[k].shape != v.shape
        ]
        if bad:
            raise ModelLoadError(f"weights in {d} do not fit this model: {bad[0]}")
        result = model.load_state_dict(source, strict=False)
        missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
        if len(missing) >= len(own):
            raise ModelLoadError(f"no weight in {d} matches a parameter name of this model")
    log(
        f"init_from {d}: {len(missing)} tensors left as initialised"
        + (f" (e.g. {missing[0]})" if missing else "")
        + (f", {len(unexpected)} unused" if unexpected else "")
    )
    return list(missing)


def has_checkpoint(out_dir: str | Path) -> bool:
    """Whether ``out_dir`` holds a checkpoint a resume would try: ``last``, ``last.prev``, a
    ``last`` left mid-swap (``.last.old``) or ``checkpoints/step-N``.

    Read-only (no repair, no verification: the resume itself picks the newest *valid* one and
    reports corrupt ones), so every torchrun rank may call it at start and they all agree.
    """
    out = Path(out_dir)
    if any((out / name).is_dir() for name in ("last", "last.prev", ".last.old")):
        return True
    hist = out / "checkpoints"
    return hist.is_dir() and any(
        re.fullmatch(r"step-\d{8}", p.name) and p.is_dir() for p in hist.iterdir()
    )


def resolve_resume(mode: ResumeMode, out_dir: str | Path) -> bool:
    """The ``resume`` flag for :func:`dhian.train.train` from a ``--resume`` value.

    ``"auto"``: True when :func:`has_checkpoint` (continue after a crash or a restart), False
    otherwise (a new run; files of a run that crashed before its first checkpoint are
    overwritten). ``True``/``"must"``: True (the engine refuses when there is nothing to resume).
    """
    if mode == "auto":
        return has_checkpoint(out_dir)
    if mode == "must" or mode is True:
        return True
    if mode is False:
        return False
    raise ConfigError(f"--resume {mode!r} is not a resume mode; use --resume or --resume auto")
