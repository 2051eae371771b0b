"""``dhian tag --model DIR < lines.txt``: named entities (or any BIO tags) of each stdin line.

Wiring only: load a token classifier (dhian model dir, run dir, or HF
``BertForTokenClassification`` dir — a checkpoint without that head is refused, see
:func:`dhian.inference.load.load_for_task`), call :func:`dhian.inference.tag.tag`
``--batch-size`` lines at a time and print per line ``word/LABEL word/LABEL ...`` then a tab and
the entity spans ``TYPE[start:end]="text"`` (``--json``: one JSON object a line with the
tokens, their labels, probabilities and character spans, and the entities).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from dhian.cli.options import add_dtype_argument
from dhian.errors import ConfigError


def register(sub: Any) -> None:
    """Add the ``tag`` verb."""
    p = sub.add_parser(
        "tag",
        help="tag each line of stdin with a token classifier (named entities, BIO tags)",
        description="Read texts from stdin (one per line) and print each word with its label "
        "and the entity spans the labels make.",
    )
    p.add_argument("--model", required=True, metavar="DIR", help="dhian or HF token-classifier dir")
    p.add_argument("--batch-size", type=int, default=32, metavar="N", help="default 32")
    p.add_argument("--json", action="store_true", help="print one JSON object per line")
    add_dtype_argument(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Tag stdin lines in batches and print one result per line."""
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    from dhian.cli.convert_hf import show_interop_logs
    from dhian.inference.load import load_for_task
    from dhian.inference.tag import tag

    show_interop_logs()
    loaded = load_for_task(args.model, "tag", "token_classification", dtype=args.dtype)
    tok = loaded.tokenizers["src"]
    batch: list[str] = []

    def flush() -> None:
        for res in tag(loaded.model, tok, batch, args.batch_size):
            if args.json:
                print(json.dumps(res.as_dict(), ensure_ascii=False))
            else:
                words = " ".join(f"{w.text}/{w.label}" for w in res.words)
                spans = " ".join(
                    f"{e.type}[{e.start}:{e.end}]={json.dumps(e.text, ensure_ascii=False)}"
                    for e in res.entities
                )
                print(f"{words}\t{spans}")
        sys.stdout.flush()
        batch.clear()

    for line in sys.stdin:
        batch.append(line.rstrip("\n"))
        if len(batch) >= args.batch_size:
            flush()
    if batch:
        flush()
    return 0
