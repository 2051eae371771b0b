"""``dhian train CONFIG [--set k=v ...] [--resume [auto]] [--out DIR]``: wiring for the engine.

Loads and validates the recipe (unknown keys → one-line error naming the nearest key), applies
``--set`` overrides and ``--out``, runs :func:`dhian.train.train`, and prints where the run went.
``--resume`` continues the run in the output dir (an error when there is none); ``--resume auto``
continues it when there is one and starts fresh otherwise (for ``torchrun --max-restarts``).
Exit status: 0 finished (any limit or early stop), 130 / 143 stopped by SIGINT / SIGTERM after
saving a checkpoint (continue with ``--resume``), 2 on a user error.
"""

from __future__ import annotations

import argparse
from typing import Any

EXIT = {"SIGINT": 130, "SIGTERM": 143}


def register(sub: Any) -> None:
    """Add the ``train`` verb."""
    p = sub.add_parser(
        "train",
        help="train a model from a YAML recipe (checkpoints, metrics, curves in train.out_dir)",
        description="Train the model of a YAML recipe (see configs/). Writes OUT/config.yaml, "
        "OUT/metrics.jsonl, OUT/curves.png, OUT/tokenizer/, and the model dirs OUT/best and "
        "OUT/last (resumable). Ctrl-C saves a checkpoint and stops cleanly.",
    )
    p.add_argument("config", metavar="CONFIG", help="recipe YAML (model / data / train sections)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.lr=3e-4 (repeatable)",
    )
    p.add_argument("--out", metavar="DIR", help="output directory (overrides train.out_dir)")
    p.add_argument(
        "--resume",
        nargs="?",
        const="must",
        default=False,
        choices=["auto", "must"],  # "must" = bare --resume
        metavar="auto",
        help="continue the run in the output directory exactly; '--resume auto': continue it "
        "if it has a checkpoint, else start a new run (for torchrun --max-restarts)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Train; print a summary; return the exit status."""
    from dhian.config import load_run_config, replace
    from dhian.train.trainer import train
    from dhian.train.warmstart import resolve_resume

    cfg = load_run_config(args.config, args.overrides)
    if args.out:
        cfg = replace(cfg, train=replace(cfg.train, out_dir=args.out))
    resume = resolve_resume(args.resume, cfg.train.out_dir)
    result = train(cfg, resume=resume, progress=not args.quiet)
    if result.rank != 0:  # under torchrun only rank 0 reports
        return EXIT.get(result.status, 0)
    print(f"stopped: {result.status} at step {result.step} (epoch {result.epoch:.2f})")
    if result.best is not None:
        print(
            f"best dev {result.best['metric']}: {result.best['value']:.4g} "
            f"at step {result.best['step']} -> {result.out_dir / 'best'}"
        )
    print(f"last checkpoint: {result.out_dir / 'last'}")
    if result.curves is not None:
        print(f"learning curves: {result.curves}")
    if result.status in EXIT:
        sets = "".join(f" --set {o}" for o in args.overrides)
        print(f"resume with: dhian train {args.config}{sets} --resume --out {result.out_dir}")
        return EXIT[result.status]
    return 0
