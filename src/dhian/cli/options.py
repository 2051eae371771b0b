"""Options shared by several verbs, defined once: ``--dtype``, ``--force``, and the argparse
types that read numbers (NaN and infinity are refused where a number is read).

Imports: stdlib only.
"""

from __future__ import annotations

import argparse
import math

__all__ = ["add_dtype_argument", "add_force_argument", "finite_float"]


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
    """Add ``--dtype {fp32,bf16,int8}`` (see :func:`dhian.models.precision.apply_precision`)."""
    p.add_argument(
        "--dtype",
        choices=("fp32", "bf16", "int8"),
        default="fp32",
        help="inference precision: fp32, bf16 weights+activations, or int8 dynamic "
        "quantization of linear/recurrent layers (CPU only) (default fp32)",
    )


def add_force_argument(p: argparse.ArgumentParser, what: str = "OUT") -> None:
    """Add ``--force``: replace a non-empty ``what`` (written complete, then swapped in)."""
    p.add_argument(
        "--force",
        action="store_true",
        help=f"replace {what} if it exists and is not empty (default: refuse)",
    )
