"""``dhian fill-mask --model DIR "The [MASK] of France is Paris." [--top-k 5]``.

Wiring only: load the model dir (dhian or HuggingFace BERT, see
:func:`dhian.inference.load.load_model`), call
:func:`dhian.inference.fill_mask.fill_mask`, print one block per [MASK]: rank, token, probability.
"""

from __future__ import annotations

import argparse
from typing import Any

from dhian.cli.options import add_dtype_argument
from dhian.errors import ConfigError


def register(sub: Any) -> None:
    """Add the ``fill-mask`` verb."""
    p = sub.add_parser(
        "fill-mask",
        help="predict the tokens behind [MASK] with a BERT masked-LM",
        description="Print the --top-k most probable tokens (with probabilities) for every "
        "[MASK] in TEXT.",
    )
    p.add_argument("--model", required=True, metavar="DIR", help="dhian or HF BERT MLM dir")
    p.add_argument("text", metavar="TEXT", help='e.g. "The [MASK] of France is Paris."')
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="default 5")
    add_dtype_argument(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Load the model and print the top-k fillers of each mask."""
    if args.top_k < 1:
        raise ConfigError(f"--top-k must be >= 1, got {args.top_k}")
    from dhian.cli.convert_hf import show_interop_logs
    from dhian.inference.fill_mask import fill_mask
    from dhian.inference.load import load_for_task

    show_interop_logs()  # e.g. "checkpoint weight ... dropped"
    loaded = load_for_task(args.model, "fill-mask", "mlm", dtype=args.dtype)
    results = fill_mask(loaded.model, loaded.tokenizers["src"], args.text, args.top_k)
    for m, top in enumerate(results):
        if len(results) > 1:
            print(f"[MASK] #{m + 1}")
        for rank, (token, prob) in enumerate(top, 1):
            print(f"{rank:>3}  {token:<20} {prob:.4f}")
    return 0
