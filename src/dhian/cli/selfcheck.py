"""``dhian selfcheck``: a short numerical check of the attention core (seconds, no data)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Add the ``selfcheck`` verb."""
    p = sub.add_parser("selfcheck", help="check the attention core numerically (a few seconds)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the checks of :mod:`dhian.nn.selfcheck` and print one line per check."""
    from dhian.nn.selfcheck import run_checks

    ok = True
    for name, passed, detail in run_checks():
        ok &= passed
        print(f"{'PASS' if passed else 'FAIL'}  {name:<48} {detail}")
    print("attention core: OK" if ok else "attention core: FAILED")
    return 0 if ok else 1
