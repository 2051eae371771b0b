"""``dhian <verb>``: wiring only — parse arguments, call the library, print.

Every module in this package that defines ``register(subparsers)`` adds one or more verbs;
they are discovered automatically, so adding a verb never touches this file. A verb module
keeps heavy imports (torch, models) inside its handler so ``dhian --help`` stays fast.
A handler returns an exit status. :class:`dhian.errors.DhianError` becomes one line on
stderr and exit status 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from dhian import __version__
from dhian.errors import DhianError


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every discovered verb registered."""
    parser = argparse.ArgumentParser(
        prog="dhian",
        description="dhian (ਧਿਆਨ): attention and transformers end to end — "
        "train, evaluate, translate, classify, generate, see attention, serve, benchmark.",
    )
    parser.add_argument("--version", action="version", version=f"dhian {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dhian`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0
    try:
        return int(handler(args) or 0)
    except DhianError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
