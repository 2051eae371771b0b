"""``dhian classify --model DIR < texts.txt``: one line in, one label and probabilities out.

Wiring only: load the model dir (dhian or HuggingFace BERT classifier, see
:func:`dhian.inference.load.load_model`), read stdin lines, call
:func:`dhian.inference.classify.classify` ``--batch-size`` lines at a time, print
``LABEL<TAB>name=prob name=prob ...`` per input line (``--json`` prints one JSON object a line).
Like ``dhian translate``, an empty stdin or one that is not UTF-8 is a one-line error (exit 2);
lines are still classified as they arrive.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import Any

from dhian.cli.options import add_dtype_argument
from dhian.errors import ConfigError, DataError


def register(sub: Any) -> None:
    """Add the ``classify`` verb."""
    p = sub.add_parser(
        "classify",
        help="label each line of stdin with a trained text classifier",
        description="Read texts from stdin (one per line) and print the predicted label and "
        "the class probabilities of each.",
    )
    p.add_argument("--model", required=True, metavar="DIR", help="dhian or HF classifier dir")
    p.add_argument("--batch-size", type=int, default=32, metavar="N", help="default 32")
    p.add_argument("--json", action="store_true", help="print one JSON object per line")
    add_dtype_argument(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Classify stdin lines in batches and print one result per line."""
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    from dhian.cli.convert_hf import show_interop_logs
    from dhian.inference.classify import classify
    from dhian.inference.load import load_for_task

    show_interop_logs()  # e.g. "checkpoint weight ... dropped"
    loaded = load_for_task(args.model, "classify", "classification", dtype=args.dtype)
    tok = loaded.tokenizers["src"]
    batch: list[str] = []

    def flush() -> None:
        for text, res in zip(
            batch, classify(loaded.model, tok, batch, args.batch_size), strict=True
        ):
            if args.json:
                print(json.dumps({"text": text, "label": res.label, "probs": res.probs}))
            else:
                probs = " ".join(f"{k}={v:.4f}" for k, v in res.probs.items())
                print(f"{res.label}\t{probs}")
        sys.stdout.flush()
        batch.clear()

    for line in stdin_lines():
        batch.append(line)
        if len(batch) >= args.batch_size:
            flush()
    if batch:
        flush()
    return 0


def stdin_lines() -> Iterator[str]:
    """The lines of stdin as they arrive (UTF-8, no line ends); DataError for bytes that are
    not UTF-8 (naming the line) or for an empty stdin."""
    count = 0
    source = getattr(sys.stdin, "buffer", None) or sys.stdin  # bytes, or already text
    for count, raw in enumerate(source, 1):
        try:
            line = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        except UnicodeDecodeError as exc:
            raise DataError(
                f"stdin is not UTF-8 text (line {count}, byte {exc.start}); convert it first"
            ) from exc
        yield line.removesuffix("\n").removesuffix("\r")
    if count == 0:
        raise DataError(
            "no input: stdin is empty; give texts one per line "
            "(e.g. echo 'a fine film' | dhian classify --model DIR)"
        )
