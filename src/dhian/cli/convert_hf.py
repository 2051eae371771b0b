"""``dhian import-hf DIR OUT`` and ``dhian export-hf MODEL OUT``: HuggingFace conversion.

Wiring only: :func:`dhian.interop.hf_dirs.import_hf_dir` / :func:`export_hf_dir` pick the
family by the HF ``config.json`` ``model_type`` (import) or the dhian ``model.type`` (export).
Import and export log lines (heads initialised, weights dropped) go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from dhian.cli.options import add_force_argument, check_output_dir


def register(sub: Any) -> None:
    """Add the ``import-hf`` and ``export-hf`` verbs."""
    p = sub.add_parser(
        "import-hf",
        help="convert a HuggingFace model dir (BERT, Marian) into a dhian model dir",
        description="Read DIR (config.json + model.safetensors or pytorch_model.bin + "
        "tokenizer files) and write a dhian model dir OUT (config.yaml, model.safetensors, "
        "tokenizer/).",
    )
    p.add_argument("dir", metavar="DIR", help="HuggingFace model directory")
    p.add_argument("out", metavar="OUT", help="dhian model directory to write")
    p.add_argument(
        "--task",
        choices=(
            "backbone",
            "mlm",
            "classification",
            "token_classification",
            "question_answering",
        ),
        default=None,
        help="BERT: which head to build (default: from config.json architectures)",
    )
    p.add_argument(
        "--num-labels", type=int, default=None, metavar="C", help="BERT (token) classifier"
    )
    p.add_argument(
        "--labels", default=None, metavar="A,B,...", help="BERT (token) classifier: class names"
    )
    p.add_argument(
        "--allow-missing",
        action="store_true",
        help="initialise missing non-head weights randomly instead of failing",
    )
    add_force_argument(p)
    p.set_defaults(handler=run_import)

    q = sub.add_parser(
        "export-hf",
        help="write a dhian model dir as a HuggingFace model dir",
        description="Write MODEL (a dhian model dir) as a HuggingFace directory OUT that "
        "transformers' from_pretrained reads (BERT: BertModel / BertForMaskedLM / "
        "BertForSequenceClassification / BertForTokenClassification / BertForQuestionAnswering; "
        "transformer: MarianMTModel).",
    )
    q.add_argument("model", metavar="MODEL", help="dhian model dir")
    q.add_argument("out", metavar="OUT", help="HuggingFace directory to write")
    add_force_argument(q)
    q.set_defaults(handler=run_export)


class _StderrLines(logging.Handler):
    """Writes each record's message to the *current* ``sys.stderr``."""

    def emit(self, record: logging.LogRecord) -> None:
        print(record.getMessage(), file=sys.stderr)


def show_interop_logs() -> None:
    """Print the INFO lines of :mod:`dhian.interop` (heads initialised, weights dropped) on
    stderr (installed once per process)."""
    log = logging.getLogger("dhian.interop")
    if not any(isinstance(h, _StderrLines) for h in log.handlers):
        log.addHandler(_StderrLines())
    log.setLevel(logging.INFO)


def run_import(args: argparse.Namespace) -> int:
    """Convert ``args.dir`` into a dhian model dir ``args.out``."""
    from dhian.interop.hf_dirs import hf_model_type, import_hf_dir  # heavy: see dhian.cli

    check_output_dir(args.out, "OUT", args.force)  # written to a temp dir, then swapped in
    show_interop_logs()
    options: dict[str, Any] = {}
    if hf_model_type(args.dir) == "bert":
        labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
        options = {
            "task": args.task,
            "num_labels": args.num_labels,
            "labels": labels,
            "allow_missing": args.allow_missing,
        }
    out = import_hf_dir(args.dir, args.out, **options)
    print(f"wrote dhian model dir {out}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Write the model in ``args.model`` (a model, run or HF dir) as an HF dir ``args.out``."""
    from dhian.inference.load import load_model  # heavy: see dhian.cli
    from dhian.interop.hf_dirs import export_hf_dir

    check_output_dir(args.out, "OUT", args.force)
    show_interop_logs()
    loaded = load_model(args.model)
    out = export_hf_dir(loaded, args.out)  # complete, then swapped in: never a mix
    print(f"wrote HuggingFace model dir {out}")
    return 0
