"""``dhian evaluate --model DIR``: score a trained model on a corpus split.

Wiring only. The model is loaded once (:func:`dhian.inference.load.load_model`: model dir,
run dir → ``best/`` else ``last/``, or HF dir) and handed to the evaluator registered for its
kind in :data:`EVALUATORS`; add a kind with ``@evaluator("kind")`` on a function
``(loaded, args) -> exit status``.

- ``translation``: BLEU, chrF and BLEU by source-length bucket
  (:func:`dhian.train.evaluation.evaluate_translation`), several models side by side with
  ``--compare``; writes ``OUT/eval.<split>.md`` / ``.json``, ``OUT/bleu_by_length.<split>.png``,
  ``OUT/hyps.<split>.txt`` and ``OUT/refs.<split>.txt``
  (:func:`~dhian.train.evaluation.write_report`).
- ``token_classification``: seqeval entity precision / recall / F1 and word accuracy on a
  CoNLL split; ``question_answering``: SQuAD exact match / F1 on a SQuAD split (``test``
  falls back to ``dev``). Both through the library evaluators below.
- ``classification`` / ``lm`` / ``mlm``: call ``dhian.train.evaluate_<kind>`` when the training
  package exposes it (keyword arguments it accepts among ``corpus``, ``split``,
  ``max_examples``/``max_docs``, ``file``, ``progress``), print its result and, with ``--out``,
  save it as ``OUT/eval.<split>.json``; otherwise a one-line "not available yet" error.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dhian.cli.options import (
    add_no_repeat_argument,
    check_no_repeat,
    check_output_dir,
    finite_float,
)
from dhian.errors import ConfigError, DhianError

Evaluator = Callable[[Any, argparse.Namespace], int]
EVALUATORS: dict[str, Evaluator] = {}


def evaluator(*kinds: str) -> Callable[[Evaluator], Evaluator]:
    """Register the decorated function as the evaluator of models of ``kinds``."""

    def deco(fn: Evaluator) -> Evaluator:
        for kind in kinds:
            EVALUATORS[kind] = fn
        return fn

    return deco


def register(sub: Any) -> None:
    """Add the ``evaluate`` verb."""
    from dhian.cli.options import add_dtype_argument
    from dhian.train.evaluation import DEFAULT_BUCKETS

    p = sub.add_parser(
        "evaluate",
        help="score a trained model on a test/dev split (BLEU, chrF, BLEU by length)",
        description="Evaluate a model on a split of the corpus it was trained on (or --corpus). "
        "Translation: BLEU/chrF with sacrebleu signatures and BLEU by source length, as a "
        "Markdown table, JSON and PNG in --out; --compare puts more models beside it.",
    )
    p.add_argument(
        "--model", required=True, metavar="DIR", help="model dir, run dir (uses best/) or HF dir"
    )
    p.add_argument("--split", default="test", choices=("test", "dev", "train"), help="(test)")
    p.add_argument("--corpus", metavar="SPEC", help="corpus spec (default: the model's own)")
    p.add_argument("--beam", type=int, default=5, metavar="K", help="beam size; 1 = greedy (5)")
    p.add_argument(
        "--length-penalty",
        type=finite_float,
        default=None,
        metavar="A",
        help="GNMT alpha (default: the model's train.eval_length_penalty)",
    )
    add_no_repeat_argument(p)
    p.add_argument(
        "--max-examples", type=int, default=0, metavar="N", help="first N only (0 = all)"
    )
    p.add_argument("--batch-size", type=int, default=32, metavar="N", help="sentences (32)")
    p.add_argument(
        "--buckets",
        default=DEFAULT_BUCKETS,
        metavar="SPEC",
        help=f"source-length buckets in words, half-open (default {DEFAULT_BUCKETS})",
    )
    p.add_argument(
        "--compare",
        nargs="+",
        default=[],
        metavar="DIR",
        help="more translation models to evaluate side by side",
    )
    p.add_argument(
        "--file", metavar="PATH", help="language models: perplexity of this text file instead"
    )
    p.add_argument("--out", metavar="DIR", help="report dir (default: MODEL/eval)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    add_dtype_argument(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Load ``--model`` and run the evaluator of its kind."""
    if args.max_examples < 0:
        raise ConfigError(f"--max-examples must be >= 0 (0 = all), got {args.max_examples}")
    if args.out:  # a bad report dir is found before the model runs (it collects one file per
        check_output_dir(args.out, "--out", force=None)  # split, so it may hold some already)
    from dhian.inference.load import load_model

    loaded = load_model(args.model, args.device, args.dtype)
    fn = EVALUATORS.get(loaded.kind)
    if fn is None:
        raise DhianError(f"evaluate for {loaded.kind} models is not available yet")
    return fn(loaded, args)


def system_name(path: str) -> str:
    """A short model name for tables: the run dir's name for ``runs/X`` / ``runs/X/best``."""
    p = Path(path).resolve()
    return p.parent.name if p.name in ("best", "last") else p.name


@evaluator("translation")
def evaluate_translation_cli(loaded: Any, args: argparse.Namespace) -> int:
    """BLEU / chrF / BLEU-by-length of ``--model`` and each ``--compare`` model; report files."""
    from dhian.inference.translate import default_src_eos, load_translation_model
    from dhian.train.evaluation import evaluate_translation, parse_buckets, write_report

    for name in ("beam", "batch_size"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    check_no_repeat(args.no_repeat_ngram)
    buckets = parse_buckets(args.buckets)
    corpus = args.corpus or str(loaded.config.data.corpus)
    device = str(next(loaded.model.parameters()).device)
    # load every compared model first: a bad dir fails before any decoding
    models = [(args.model, loaded)] + [
        (path, load_translation_model(path, "evaluate", device, args.dtype))
        for path in args.compare
    ]
    names: list[str] = []
    for path, _ in models:
        name = system_name(path)
        names.append(name if name not in names else f"{name}-{len(names) + 1}")

    def log(msg: str) -> None:
        print(f"warning: {msg}", file=sys.stderr)

    evals = []
    for name, (path, model) in zip(names, models, strict=True):
        res = evaluate_translation(
            model,
            name=name,
            model_path=str(path),
            corpus=corpus,
            split=args.split,
            beam=args.beam,
            length_penalty=args.length_penalty,
            max_examples=args.max_examples,
            buckets=buckets,
            batch_size=args.batch_size,
            src_eos=default_src_eos(path),
            progress=sys.stderr.isatty(),
            log=log,
            no_repeat_ngram=args.no_repeat_ngram,
        )
        print(
            f"{name}: {res.bleu}\n{name}: {res.chrf}\n"
            f"{name}: {len(res.hyps)} sentences in {res.seconds:.1f} s "
            f"({res.sents_per_s:.1f} sentences/s, beam {res.beam}, "
            f"length penalty {res.length_penalty:g})"
        )
        evals.append(res)
    out = Path(args.out) if args.out else Path(args.model) / "eval"
    paths = write_report(evals, out)
    print()
    print(paths["markdown"].read_text(encoding="utf-8"))
    for role in ("markdown", "json", "png", "refs"):
        print(f"wrote {paths[role]}")
    for name in names:
        print(f"wrote {paths['hyps:' + name]}")
    return 0


def library_evaluator(get: Callable[[], Callable[..., Any]]) -> Evaluator:
    """An evaluator calling the task's library evaluator ``get()`` with the options it accepts."""

    def run_kind(loaded: Any, args: argparse.Namespace) -> int:
        fn = get()
        offered = {
            "corpus": args.corpus,
            "split": args.split,
            "max_examples": args.max_examples,
            "max_docs": args.max_examples,
            "file": getattr(args, "file", None),
            "progress": sys.stderr.isatty(),
        }
        accepted = inspect.signature(fn).parameters
        result = fn(loaded, **{k: v for k, v in offered.items() if k in accepted})
        if isinstance(result, dict):
            for key, value in result.items():
                print(f"{key}: {value}")
            if args.out:
                path = Path(args.out) / f"eval.{args.split}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(result, indent=2, default=str) + "\n", "utf-8")
                print(f"wrote {path}")
        else:
            print(result)
        return 0

    return run_kind


def _evaluate_lm() -> Callable[..., Any]:
    from dhian.train.tasks.lm_eval import evaluate_lm  # heavy: see dhian.cli

    return evaluate_lm


def _evaluate_mlm() -> Callable[..., Any]:
    from dhian.train.tasks.mlm_eval import evaluate_mlm  # heavy: see dhian.cli

    return evaluate_mlm


def _evaluate_tagger() -> Callable[..., Any]:
    from dhian.train.tasks.token_classification import (  # heavy: see dhian.cli
        evaluate_token_classification,
    )

    return evaluate_token_classification


def _evaluate_qa() -> Callable[..., Any]:
    from dhian.train.tasks.question_answering import (  # heavy: see dhian.cli
        evaluate_question_answering,
    )

    return evaluate_question_answering


EVALUATORS["lm"] = library_evaluator(_evaluate_lm)
EVALUATORS["mlm"] = library_evaluator(_evaluate_mlm)
EVALUATORS["token_classification"] = library_evaluator(_evaluate_tagger)
EVALUATORS["question_answering"] = library_evaluator(_evaluate_qa)


@evaluator("classification")
def evaluate_classification_cli(loaded: Any, args: argparse.Namespace) -> int:
    """Accuracy, macro-F1 and the confusion matrix (Markdown table + PNG) of a classifier."""
    from dhian.train.tasks.classification import evaluate_classification

    corpus = args.corpus or str(loaded.config.data.corpus)
    out = Path(args.out) if args.out else Path(args.model) / "eval"
    res = evaluate_classification(
        loaded,
        corpus,
        args.split,
        out,
        device=next(loaded.model.parameters()).device,
        max_examples=args.max_examples,
    )
    print(
        f"{corpus} {args.split}: {res['examples']} examples  accuracy {res['accuracy']:.4f}  "
        f"macro-F1 {res['macro_f1']:.4f}  loss {res['loss']:.4f}\n"
    )
    print(res["markdown"])
    for path in res["files"].values():
        print(f"wrote {path}")
    return 0
