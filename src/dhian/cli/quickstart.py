"""``dhian quickstart [--minutes 15] [--model transformer|rnn] [--out DIR] [--corpus SPEC]
[--fast] [--retrain] [--beam K] [--max-test N] [--curve M,M,...]``: wiring for :mod:`dhian.apps.quickstart.run`.

Parses the options, asks before reusing a finished run when stdin is a terminal (otherwise
reuses it and says so), runs the quickstart and prints its summary. Ctrl-C during training ends
the training early and still evaluates and reports; a second Ctrl-C aborts (exit 130). Exit
status 0 once the report is written, 2 on a user error.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from dhian.cli.options import finite_float
from dhian.errors import ConfigError


def register(sub: Any) -> None:
    """Add the ``quickstart`` verb."""
    p = sub.add_parser(
        "quickstart",
        help="the main job: train a small attention translator for N minutes, translate the "
        "test split, write a report",
        description="Fetch the corpus (cached), train a small translator for a fixed time with a "
        "progress bar, translate the test split (beam 5 unless --beam), print sample "
        "translations and BLEU/chrF, and write OUT/report.md + a self-contained OUT/report.html "
        "with the learning curves and alignment heatmaps. The model is OUT/best.",
    )
    p.add_argument("--minutes", type=finite_float, default=15.0, help="training time (default 15)")
    p.add_argument(
        "--model", choices=("transformer", "rnn"), default="transformer", help="architecture"
    )
    p.add_argument("--out", default="runs/quickstart", metavar="DIR", help="run directory")
    p.add_argument(
        "--corpus", default="bible:de-en", metavar="SPEC", help="parallel corpus (dhian data list)"
    )
    p.add_argument(
        "--fast", action="store_true", help="tiny model on a capped corpus (a smoke test)"
    )
    p.add_argument(
        "--retrain", action="store_true", help="train again even if OUT holds a finished model"
    )
    p.add_argument(
        "--beam", type=int, default=5, help="test decoding: K = beam K (default 5), 1 = greedy"
    )
    p.add_argument(
        "--max-test",
        type=int,
        default=0,
        metavar="N",
        help="translate only the first N test examples (default: all; --fast: 12)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value, e.g. --set train.lr=5e-4 (repeatable)",
    )
    p.add_argument(
        "--curve",
        default="",
        metavar="M,M,...",
        help="also keep and score the model a run of M minutes would give, for each M < "
        "--minutes (one run: e.g. --minutes 30 --curve 5,10,15 gives the BLEU-vs-time curve)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=run)


def parse_curve(text: str) -> tuple[float, ...]:
    """``--curve 5,10,15`` → (5.0, 10.0, 15.0), sorted; "" → ()."""
    out = []
    for part in filter(None, (x.strip() for x in text.split(","))):
        try:
            m = float(part)
        except ValueError:
            raise ConfigError(
                f"--curve takes minutes like 5,10,15; {part!r} is not a number"
            ) from None
        if not math.isfinite(m):
            raise ConfigError(f"--curve minutes must be finite, got {part!r}")
        out.append(m)
    return tuple(sorted(out))


def _ask(question: str) -> bool:
    from dhian.apps.quickstart.run import check_interactive_answer

    return check_interactive_answer(input(f"{question} [Y/n] "))


def run(args: argparse.Namespace) -> int:
    """Run the quickstart; print its summary; return the exit status."""
    from dhian.apps.quickstart.evaluate import format_summary
    from dhian.apps.quickstart.run import QuickstartOptions, run_quickstart

    opts = QuickstartOptions(
        minutes=args.minutes,
        model=args.model,
        out=args.out,
        corpus=args.corpus,
        fast=args.fast,
        retrain=args.retrain,
        beam=args.beam,
        max_test=args.max_test,
        overrides=tuple(args.overrides),
        curve=parse_curve(args.curve),
    )
    confirm = _ask if sys.stdin.isatty() else None
    result = run_quickstart(opts, confirm=confirm, progress=not args.quiet)
    print(format_summary(result))
    return 0
