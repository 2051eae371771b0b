"""Options shared by several verbs, defined once: ``--dtype``, ``--compile``, ``--force``, the
stderr :func:`notice` line, the argparse types that read numbers (NaN and infinity are refused
where a number is read), and the checks of output paths that run *before* a model is loaded (:func:`check_output_dir`,
:func:`check_output_file`): a target that cannot be written, or a non-empty directory without
``--force``, is one :class:`~dhian.errors.ConfigError` (or the OSError writing the file would
raise) before any work is done.

Imports: stdlib, :mod:`dhian.errors`.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import sys
from pathlib import Path

from dhian.errors import ConfigError

__all__ = [
    "add_compile_argument",
    "add_dtype_argument",
    "add_force_argument",
    "check_output_dir",
    "check_output_file",
    "finite_float",
    "notice",
]


def finite_float(text: str) -> float:
    """An argparse ``type``: a finite float (``nan``, ``inf`` and non-numbers are usage errors)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def add_dtype_argument(p: argparse.ArgumentParser) -> None:
    """Add ``--dtype {auto,fp32,bf16,int8,int4,int4-fp32}`` (see
    :func:`dhian.models.precision.apply_precision`; ``auto`` = the fastest mode that passes its
    quality bound: int4-fp32 for a GGUF file of 4-bit blocks (smollm2 included) on a CPU where
    dhian's kernels run, else fp32; see docs/speed.md)."""
    p.add_argument(
        "--dtype",
        choices=("auto", "fp32", "bf16", "int8", "int4", "int4-fp32"),
        default="auto",
        help="inference precision: fp32, bf16 weights+activations, int8 (dynamic quantization "
        "of linear/recurrent layers; weight-only for LLaMA models), int4 (LLaMA models: "
        "weight-only, the GGUF file's own 4-bit blocks, bf16 math), int4-fp32 (LLaMA models: "
        "the same 4-bit blocks with float32 math, the fp32 model's results), CPU only for "
        "int8/int4/int4-fp32; "
        "default auto = the fastest mode within its quality bound: int4-fp32 for a GGUF file "
        "of 4-bit blocks (smollm2) where dhian's CPU kernels run, else fp32",
    )


def add_no_repeat_argument(p: argparse.ArgumentParser) -> None:
    """Add ``--no-repeat-ngram N`` (translation decoding never repeats an N-gram; default None =
    the model's ``train.eval_no_repeat_ngram``)."""
    p.add_argument(
        "--no-repeat-ngram",
        type=int,
        default=None,
        metavar="N",
        help="never repeat an N-gram (0 = off; default: the model's train.eval_no_repeat_ngram)",
    )


def check_no_repeat(value: int | None) -> None:
    """ConfigError for a negative ``--no-repeat-ngram``."""
    if value is not None and value < 0:
        raise ConfigError(f"--no-repeat-ngram must be >= 0 (0 = off), got {value}")


def add_compile_argument(p: argparse.ArgumentParser, default: str = "auto") -> None:
    """Add ``--compile {auto,on,off}``: run the LLaMA decoding step ``torch.compile``d
    (:mod:`dhian.decoding.compiled_step`; the compiled code is cached in ``$DHIAN_CACHE``)."""
    p.add_argument(
        "--compile",
        choices=("auto", "on", "off"),
        default=default,
        help="LLaMA models: compile the decoding step with torch.compile (the first compile "
        "of a batch size and cache length takes a minute or more, later processes load it "
        "from $DHIAN_CACHE/inductor in seconds); auto (default) = only where it pays: a "
        "server, or a cached compile whose per-token saving covers its start-up",
    )


def notice(line: str) -> None:
    """A progress line on stderr, e.g. while compiling (the generated text owns stdout)."""
    print(f"[dhian] {line}", file=sys.stderr, flush=True)


def add_force_argument(p: argparse.ArgumentParser, what: str = "OUT") -> None:
    """Add ``--force``: replace a non-empty ``what`` (written complete, then swapped in)."""
    p.add_argument(
        "--force",
        action="store_true",
        help=f"replace {what} if it exists and is not empty (default: refuse)",
    )


def _writable_parent(path: Path, flag: str) -> None:
    """The nearest existing ancestor of ``path`` is a writable directory, else ConfigError."""
    anc = path.absolute().parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise ConfigError(f"{flag} {str(path)!r} cannot be created: {anc} is a file")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{flag} {str(path)!r} cannot be created: {anc} is not writable; choose another path"
        )


def check_output_dir(path: str | Path, flag: str, force: bool | None = False) -> None:
    """Before any work: ``path`` must be creatable as a directory; an existing non-empty one is
    refused unless ``force`` (``force=None``: a non-empty dir is allowed, e.g. a report dir
    that collects one file per split)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{flag} {str(p)!r} is a file; give a directory")
    if p.is_dir():
        if force is False and any(p.iterdir()):
            raise ConfigError(
                f"{flag} {str(p)!r} is not empty; choose a new directory, or pass --force to "
                "replace it (the new one is written complete, then swapped in)"
            )
        if not os.access(p, os.W_OK | os.X_OK):
            raise ConfigError(f"{flag} {str(p)!r} is not writable; choose another directory")
        return
    _writable_parent(p, flag)


def check_output_file(path: str | Path, flag: str) -> None:
    """Before any work: ``path`` must be writable as a file. A directory, a missing folder or
    a file where its folder should be raise the OSError that writing it would raise (so the
    CLI prints the same one line as for any OSError, only before the model runs)."""
    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if p.exists():
        if not os.access(p, os.W_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return
    parent = p.absolute().parent
    if not parent.is_dir():
        anc = parent
        while not anc.exists() and anc != anc.parent:
            anc = anc.parent
        code = errno.ENOTDIR if anc.exists() and not anc.is_dir() else errno.ENOENT
        raise OSError(code, os.strerror(code), str(path))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
