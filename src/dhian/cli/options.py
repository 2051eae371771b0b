"""Options shared by several verbs, defined once.

Imports: stdlib only.
"""

from __future__ import annotations

import argparse

__all__ = ["add_dtype_argument"]


def add_dtype_argument(p: argparse.ArgumentParser) -> None:
    """Add ``--dtype {fp32,bf16,int8}`` (see :func:`dhian.models.precision.apply_precision`)."""
    p.add_argument(
        "--dtype",
        choices=("fp32", "bf16", "int8"),
        default="fp32",
        help="inference precision: fp32, bf16 weights+activations, or int8 dynamic "
        "quantization of linear/recurrent layers (CPU only) (default fp32)",
    )
