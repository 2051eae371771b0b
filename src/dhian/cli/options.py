"""Options shared by several verbs, defined once.

Imports: stdlib only.
"""

from __future__ import annotations

import argparse

__all__ = ["add_dtype_argument"]


def add_dtype_argument(p: argparse.ArgumentParser) -> None:
    """Add ``--dtype {auto,fp32,bf16,int8,int4}`` (see
    :func:`dhian.models.precision.apply_precision`; ``auto`` = the model family's
    ``default_dtype``: the fastest mode that passes its quality bound, fp32 for every family
    today, see docs/speed.md)."""
    p.add_argument(
        "--dtype",
        choices=("auto", "fp32", "bf16", "int8", "int4"),
        default="auto",
        help="inference precision: fp32, bf16 weights+activations, int8 (dynamic quantization "
        "of linear/recurrent layers; weight-only for LLaMA models), int4 (LLaMA models: "
        "weight-only, the GGUF file's own 4-bit blocks), CPU only for int8/int4; "
        "default auto = the family's fastest mode within its quality bound (fp32 today)",
    )
