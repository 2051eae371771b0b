"""``dhian <verb>``: wiring only — parse arguments, call the library, print.

Each verb module defines ``register(subparsers)`` and is listed in :data:`VERBS` (adding a verb
is its module + one line there). A verb module keeps heavy imports (torch, models) inside its
handler so ``dhian --help`` stays fast; options shared by several verbs are in
:mod:`dhian.cli.options`. Every model operation is a :mod:`dhian.inference` function.
A handler returns an exit status. :class:`dhian.errors.DhianError` becomes one line on
stderr and exit status 2, and so does an :class:`OSError` (a missing, unreadable or too long
path, a full disk: ``error: <what> (<path>)``); any other exception is a bug and keeps its
traceback. Ctrl-C exits 130. Text that the terminal's encoding cannot show (a lone surrogate
from undecodable argv bytes) is printed with backslash escapes rather than crashing.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import os
import sys
from collections.abc import Iterator, Sequence

from dhian import __version__
from dhian.cli import (
    answer,
    attention,
    chat,
    classify,
    convert_hf,
    data,
    evaluate,
    fill_mask,
    generate,
    quickstart,
    selfcheck,
    serve,
    tag,
    train,
    translate,
)
from dhian.errors import DhianError

#: Every verb module, each with ``register(subparsers)``. A verb module imports its heavy
#: dependencies (torch, the model layers, FastAPI) inside ``run``, so that ``dhian --help`` and
#: argument errors stay instant; that is the one reason imports sit inside functions in dhian.cli.
VERBS = (
    answer,
    attention,
    chat,
    classify,
    data,
    evaluate,
    fill_mask,
    generate,
    convert_hf,  # import-hf, export-hf (listed where the old cli/hf.py sorted)
    quickstart,
    selfcheck,
    serve,
    tag,
    train,
    translate,
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every discovered verb registered."""
    parser = argparse.ArgumentParser(
        prog="dhian",
        description="dhian (ਧਿਆਨ): attention and transformers end to end — "
        "train, evaluate, translate, classify, generate, see attention, serve, benchmark.",
    )
    parser.add_argument("--version", action="version", version=f"dhian {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for verb in VERBS:
        verb.register(sub)
    return parser


#: What to do about an OSError, by errno (appended to its one-line message).
OS_HINTS = {
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "check the path",
    errno.ENAMETOOLONG: "use a shorter path",
    errno.EACCES: "check its permissions or choose another path",
    errno.EPERM: "check its permissions or choose another path",
    errno.EROFS: "choose a writable directory",
    errno.EISDIR: "give a file, not a directory",
    errno.ENOSPC: "free some disk space",
    errno.EDQUOT: "free some disk space",
    errno.EMFILE: "raise the open-file limit (ulimit -n)",
}


def one_line(text: str) -> str:
    """``text`` with control and other unprintable characters (CR, LF, lone surrogates...)
    escaped, so that an error message naming a user's odd path stays one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _shown_path(path: object, limit: int = 160) -> str:
    """A path for a one-line message: undecodable/control characters escaped, long ones cut."""
    text = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path)
    text = one_line(text)
    if len(text) > limit:
        text = f"{text[: limit // 2]}…{text[-(limit // 4) :]}, {len(text)} characters"
    return text


def describe_os_error(exc: OSError) -> str:
    """One line for an OSError: ``<what> (<path>[ -> <path2>]); <hint>`` (no ``error:``)."""
    if exc.strerror:  # "No such file or directory" → "no such file or directory"
        what = exc.strerror[:1].lower() + exc.strerror[1:]
    else:
        lines = str(exc).strip().splitlines()
        what = lines[0] if lines else type(exc).__name__
    paths = [_shown_path(p) for p in (exc.filename, exc.filename2) if p is not None]
    line = f"{what} ({' -> '.join(paths)})" if paths else what
    hint = OS_HINTS.get(exc.errno or 0)
    return f"{line}; {hint}" if hint else line


@contextlib.contextmanager
def _tolerant_stdout() -> Iterator[None]:
    """Let a strict-encoding stdout (e.g. an ASCII terminal) escape what it cannot encode
    (help text in Gurmukhi, a path with a lone surrogate) instead of raising; restored after."""
    out = sys.stdout
    if not (isinstance(out, io.TextIOWrapper) and out.errors == "strict"):
        yield
        return
    out.reconfigure(errors="backslashreplace")
    try:
        yield
    finally:
        if not out.closed:
            out.reconfigure(errors="strict")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dhian`` console script; returns the exit status."""
    with _tolerant_stdout():
        return _run(argv)


def _run(argv: Sequence[str] | None) -> int:
    """Parse ``argv``, run the verb's handler, turn user errors into one ``error:`` line."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0
    try:
        return int(handler(args) or 0)
    except DhianError as exc:
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except io.UnsupportedOperation:  # an OSError, but a bug in dhian (e.g. reading a write-only
        raise  # stream): keep its traceback
    except OSError as exc:  # a missing / unreadable / too long path, a full disk...
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
