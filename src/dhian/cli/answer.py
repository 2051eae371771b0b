"""``dhian answer --model DIR --context FILE "question"``: the answer span of a context.

Wiring only: load an extractive QA model (dhian model dir, run dir, or HF
``BertForQuestionAnswering`` dir — a checkpoint without that head is refused, see
:func:`dhian.inference.load.load_for_task`), read the context file (``-`` = stdin), call
:func:`dhian.inference.answer.answer` and print the answer text (``(no answer)`` when the
no-answer score wins with ``--null-threshold``), or one JSON object with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from dhian.cli.options import add_dtype_argument
from dhian.errors import ConfigError


def register(sub: Any) -> None:
    """Add the ``answer`` verb."""
    p = sub.add_parser(
        "answer",
        help="answer a question from a context with an extractive QA model",
        description="Print the span of the --context text that best answers QUESTION; long "
        "contexts are read in overlapping windows.",
    )
    p.add_argument("--model", required=True, metavar="DIR", help="dhian or HF QA model dir")
    p.add_argument(
        "--context", required=True, metavar="FILE", help="text file to answer from (- = stdin)"
    )
    p.add_argument("question", metavar="QUESTION", help='e.g. "Where does Anna live?"')
    p.add_argument(
        "--max-answer-len", type=int, default=30, metavar="N", help="tokens (default 30)"
    )
    p.add_argument(
        "--stride", type=int, default=128, metavar="N", help="window overlap in tokens (128)"
    )
    p.add_argument(
        "--null-threshold",
        type=float,
        default=None,
        metavar="X",
        help="SQuAD v2: answer nothing when the no-answer score beats the best span by more "
        "than X (default: always answer)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON object")
    add_dtype_argument(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Load the model, read the context and print the answer."""
    if args.max_answer_len < 1:
        raise ConfigError(f"--max-answer-len must be >= 1, got {args.max_answer_len}")
    if args.stride < 0:
        raise ConfigError(f"--stride must be >= 0, got {args.stride}")
    from dhian.cli.convert_hf import show_interop_logs
    from dhian.inference.answer import answer
    from dhian.inference.load import load_for_task

    context = sys.stdin.read() if args.context == "-" else Path(args.context).read_text("utf-8")
    show_interop_logs()
    loaded = load_for_task(args.model, "answer", "question_answering", dtype=args.dtype)
    res = answer(
        loaded.model,
        loaded.tokenizers["src"],
        args.question,
        context,
        max_answer_len=args.max_answer_len,
        stride=args.stride,
        null_threshold=args.null_threshold,
    )
    if args.json:
        print(json.dumps({"question": args.question, **res.as_dict()}, ensure_ascii=False))
    else:
        print(res.text if res.text else "(no answer)")
    return 0
