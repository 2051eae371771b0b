"""``dhian translate --model DIR``: translate lines of stdin (or ``--input``) to stdout (or
``--output``), one line out per line in, in the same order.

Wiring only: load the model (:func:`dhian.inference.translate.load_translation_model`: a dhian
model dir, a run dir → its ``best/`` else ``last/``, or an HF Marian dir), call
:func:`dhian.inference.translate.translate_texts` (sorted by length internally, order restored),
write the lines, and with ``--attention-out`` one alignment PNG + JSON per sentence
(:func:`dhian.viz.alignments.write_alignments`).

Empty input lines give empty output lines; an input with no line at all is an error (exit 2).
With ``--n-best N`` > 1 each input gives N lines ``INDEX ||| TRANSLATION ||| SCORE`` (Moses
n-best format, INDEX 0-based). Warnings (truncated sources) and the progress bar go to stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dhian.cli.options import (
    add_dtype_argument,
    add_force_argument,
    add_no_repeat_argument,
    check_no_repeat,
    check_output_dir,
    check_output_file,
    finite_float,
)
from dhian.errors import ConfigError, DataError

PROGRESS_MIN_LINES = 100


def register(sub: Any) -> None:
    """Add the ``translate`` verb."""
    p = sub.add_parser(
        "translate",
        help="translate lines of text with a trained translation model",
        description="Translate stdin (or --input) line by line to stdout (or --output). Empty "
        "lines stay empty. --attention-out writes one alignment heatmap per sentence.",
    )
    p.add_argument(
        "--model", required=True, metavar="DIR", help="model dir, run dir (uses best/) or HF dir"
    )
    p.add_argument("--beam", type=int, default=5, metavar="K", help="beam size; 1 = greedy (5)")
    p.add_argument(
        "--length-penalty",
        type=finite_float,
        default=None,
        metavar="A",
        help="GNMT length penalty alpha (default: the model's train.eval_length_penalty)",
    )
    add_no_repeat_argument(p)
    p.add_argument("--batch-size", type=int, default=32, metavar="N", help="sentences (32)")
    p.add_argument(
        "--max-len-ratio",
        type=finite_float,
        default=1.5,
        metavar="R",
        help="output ≤ R·src + 10 (1.5)",
    )
    p.add_argument("--n-best", type=int, default=1, metavar="N", help="hypotheses per line (1)")
    p.add_argument("--input", metavar="FILE", help="read this file instead of stdin")
    p.add_argument("--output", metavar="FILE", help="write this file instead of stdout")
    p.add_argument(
        "--attention-out", metavar="DIR", help="write NNNN.png + NNNN.json alignments here"
    )
    p.add_argument(
        "--layer", type=int, default=None, help="transformer decoder layer to plot (last)"
    )
    p.add_argument(
        "--head", type=int, default=None, help="transformer head to plot (mean of heads)"
    )
    p.add_argument(
        "--max-src-len",
        type=int,
        default=0,
        metavar="N",
        help="truncate longer sources (0 = the model's own limit, if any)",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    add_dtype_argument(p)
    add_force_argument(p, "a non-empty --attention-out DIR")
    p.set_defaults(handler=run)


def read_lines(path: str | None) -> list[str]:
    """Lines of ``path`` (or stdin) as UTF-8, without line ends; an empty input is an error."""
    where = path or "stdin"
    try:
        raw = Path(path).read_bytes() if path else sys.stdin.buffer.read()
    except OSError as exc:
        raise DataError(f"cannot read --input {path}: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{where} is not UTF-8 text (byte {exc.start}); convert it first") from exc
    if not text:
        raise DataError(
            f"no input: {where} is empty; give sentences one per line "
            "(e.g. echo 'Im Anfang war das Wort' | dhian translate --model DIR)"
        )
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _check(args: argparse.Namespace) -> None:
    for name in ("beam", "batch_size", "n_best"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    check_no_repeat(args.no_repeat_ngram)
    if args.n_best > args.beam:
        raise ConfigError(f"--n-best {args.n_best} cannot exceed --beam {args.beam}")
    if args.max_len_ratio <= 0:
        raise ConfigError(f"--max-len-ratio must be > 0, got {args.max_len_ratio}")
    if args.max_src_len < 0:
        raise ConfigError(f"--max-src-len must be >= 0 (0 = model limit), got {args.max_src_len}")
    if args.output:  # bad output paths are found before the model runs
        check_output_file(args.output, "--output")
    if args.attention_out:
        check_output_dir(args.attention_out, "--attention-out", args.force)


def run(args: argparse.Namespace) -> int:
    """Translate the input lines and write them (and the alignments when asked)."""
    _check(args)
    from dhian.inference.capabilities import has_attention, model_type
    from dhian.inference.translate import (
        default_src_eos,
        load_translation_model,
        translate_texts,
    )

    loaded = load_translation_model(args.model, "translate", args.device, args.dtype)
    if args.attention_out and not has_attention(loaded):
        raise ConfigError(
            f"{model_type(loaded)} has no attention to plot (it reads a fixed context); drop "
            "--attention-out or use an rnnsearch/transformer model"
        )
    lines = read_lines(args.input)
    alpha = args.length_penalty
    if alpha is None:
        alpha = float(loaded.config.train.eval_length_penalty)

    def warn(msg: str) -> None:
        print(f"warning: {msg}", file=sys.stderr)

    out = translate_texts(
        loaded,
        lines,
        beam=args.beam,
        length_penalty=alpha,
        batch_size=args.batch_size,
        max_len_ratio=args.max_len_ratio,
        n_best=args.n_best,
        need_weights=bool(args.attention_out),
        layer=args.layer,
        head=args.head,
        src_eos=default_src_eos(args.model),
        max_src_len=args.max_src_len or None,
        progress=sys.stderr.isatty() and len(lines) >= PROGRESS_MIN_LINES,
        warn=warn,
        no_repeat_ngram=args.no_repeat_ngram,
    )
    if args.n_best > 1:
        rows = [
            f"{i} ||| {t} ||| {s:.4f}"
            for i, tr in enumerate(out)
            for t, s in (tr.nbest or [("", 0.0)])
        ]
    else:
        rows = [tr.text for tr in out]
    text = "".join(r + "\n" for r in rows)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    if args.attention_out:
        from dhian.models.model_dir import atomic_dir
        from dhian.viz.alignments import write_alignments

        with atomic_dir(args.attention_out) as tmp:  # complete, then swapped in: never a mix
            pngs = write_alignments(out, tmp)
        print(f"wrote {len(pngs)} alignment plots to {args.attention_out}", file=sys.stderr)
    return 0
