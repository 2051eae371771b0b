"""``dhian attention --model DIR "text" [--target "..." | --context FILE] --out DIR [--layer L
--head H]``.

Wiring only: load the model dir (dhian or HuggingFace, see
:func:`dhian.inference.load.load_model`), call
:func:`dhian.inference.attention_maps.extract_attention` and
:func:`dhian.inference.attention_report.write_attention_report`, print the files written.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from dhian.cli.options import add_force_argument, check_output_dir
from dhian.errors import ConfigError


def register(sub: Any) -> None:
    """Add the ``attention`` verb."""
    p = sub.add_parser(
        "attention",
        help="draw a model's attention for one text (PNGs + an offline HTML viewer)",
        description="Run TEXT through the model and write its attention: cross attention "
        "heatmaps (translation), layer × head grids and entropy maps of self attention, "
        "head_summary.json and one self-contained attention.html. Translation models decode "
        "TEXT greedily unless --target gives the output to teacher-force.",
    )
    p.add_argument("--model", required=True, metavar="DIR", help="dhian or HF model dir")
    p.add_argument("text", metavar="TEXT", help="the input text (source sentence, prompt, ...)")
    p.add_argument("--target", default=None, help="translation only: output to teacher-force")
    p.add_argument(
        "--context",
        default=None,
        metavar="FILE",
        help="question answering only: the passage read after the question TEXT",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the files")
    p.add_argument("--layer", type=int, default=None, metavar="L", help="PNGs: only layer L")
    p.add_argument("--head", type=int, default=None, metavar="H", help="PNGs: only head H")
    p.add_argument("--title", default=None, help="title of the pictures and the page")
    add_force_argument(p, "a non-empty --out DIR")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Extract the attention of ``args.text`` and write the report files."""
    if not args.text.strip():
        raise ConfigError("TEXT is empty; give the sentence whose attention to draw")
    check_output_dir(args.out, "--out", args.force)  # before the model runs
    from dhian.cli.convert_hf import show_interop_logs
    from dhian.inference.attention_maps import extract_attention
    from dhian.inference.attention_report import write_attention_report
    from dhian.inference.load import load_model, model_name

    show_interop_logs()
    loaded = load_model(args.model)
    if args.target is not None and loaded.kind != "translation":
        raise ConfigError(
            f"--target is for translation models; {args.model} holds a {loaded.kind!r} model"
        )
    if args.context is not None and loaded.kind != "question_answering":
        raise ConfigError(
            f"--context is for question-answering models; {args.model} holds a "
            f"{loaded.kind!r} model"
        )
    context = Path(args.context).read_text(encoding="utf-8") if args.context else None
    result = extract_attention(loaded, args.text, args.target, context=context)
    if result.output is not None:
        print(f"output: {result.output}")
    title = args.title or f"{model_name(args.model)} · {result.model_type}"
    from dhian.models.model_dir import atomic_dir

    with atomic_dir(args.out) as tmp:  # complete, then swapped in: never a mix of two reports
        paths = write_attention_report(result, tmp, layer=args.layer, head=args.head, title=title)
        names = [Path(p).relative_to(tmp) for p in paths]
    for name in names:
        print(Path(args.out) / name)
    return 0
