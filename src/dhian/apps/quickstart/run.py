"""``dhian quickstart``: the main job — fetch a corpus, train a small attention translator for a
fixed time, translate the test split, and write a report with curves and alignment heatmaps.

Owns :func:`quickstart_config` (the packaged recipes
``dhian/configs/quickstart-{transformer,rnn}.yaml`` read with :mod:`importlib.resources`, plus
the ``--fast`` smoke-test shrink), :func:`run_quickstart` (reuse a finished run or train one
under a time bar with an ETA, then evaluate and report). The run dir (marker, reuse, clearing)
is :mod:`dhian.apps.quickstart.run_dir` and the options :mod:`dhian.apps.quickstart.options`,
both re-exported here. The test-split evaluation, the report content and the console summary
live in :mod:`dhian.apps.quickstart.evaluate`, the report layout in :mod:`dhian.apps.report`.

A finished run is marked by ``OUT/quickstart.json`` (written last); re-running with the same
model/corpus/mode offers to reuse it, ``retrain`` starts over (only files a quickstart writes
are deleted).
Imports: stdlib, PyYAML, tqdm, :mod:`dhian.config`, :mod:`dhian.errors`, :mod:`dhian.models.model_dir`,
:mod:`dhian.train` modules.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.resources
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from dhian.apps.quickstart.evaluate import (
    BATCH,
    TRANSLATIONS,
    evaluate_test,
    quickstart_report,
    write_translations,
)
from dhian.apps.quickstart.options import (
    FAST,
    FAST_DATA,
    FAST_TRAIN,
    MODELS,
    QuickstartOptions,
)
from dhian.apps.quickstart.run_dir import (
    CURVE_DIR,
    MARKER,
    Confirm,
    Log,
    clear_run,
    read_marker,
    reuse_or_clear,
)
from dhian.config import RunConfig, merge, parse_overrides, run_config_from_dict
from dhian.errors import ConfigError, DhianError
from dhian.inference.translate import load_translation_model
from dhian.models.device import choose_device
from dhian.train.evaluation import evaluate_translation
from dhian.train.trainer import Trainer

__all__ = [
    "MARKER",
    "MODELS",
    "QuickstartOptions",
    "QuickstartResult",
    "clear_run",
    "quickstart_config",
    "read_marker",
    "recipe_text",
    "reuse_or_clear",
    "run_quickstart",
]


@dataclasses.dataclass
class QuickstartResult:
    """What a quickstart did: the run dir, the model dir, whether the model was reused, the
    training facts (``train``: status, steps, epochs, minutes, parameters, best dev score), the
    test evaluation and the two report files."""

    out_dir: Path
    model_dir: Path
    reused: bool
    train: dict[str, Any]
    test: Any  # dhian.apps.quickstart.evaluate.TestResult
    report_md: Path
    report_html: Path


# --------------------------------------------------------------------------- config


def recipe_text(model: str) -> str:
    """The packaged quickstart recipe (YAML text) for ``model`` (transformer | rnn)."""
    if model not in MODELS:
        raise ConfigError(f"--model must be one of {', '.join(MODELS)}, got {model!r}")
    res = importlib.resources.files("dhian") / "configs" / MODELS[model]
    return res.read_text(encoding="utf-8")


def quickstart_config(opts: QuickstartOptions) -> RunConfig:
    """The run config of a quickstart: the packaged recipe, then ``--fast``, then the options
    (corpus, minutes, out) and last the ``overrides``."""
    opts.check()
    data: dict[str, Any] = yaml.safe_load(recipe_text(opts.model))
    if opts.fast:
        data = merge(data, {"model": FAST[opts.model], "data": FAST_DATA, "train": FAST_TRAIN})
    data = merge(
        data,
        {
            "data": {"corpus": opts.corpus},
            "train": {"max_minutes": float(opts.minutes), "out_dir": str(opts.out)},
        },
    )
    return run_config_from_dict(merge(data, parse_overrides(opts.overrides)))


# --------------------------------------------------------------------------- training


class TimeBar:
    """A tqdm bar over the training time budget: elapsed/total seconds with an ETA, the step,
    tokens/s and the last dev BLEU. Call it after each step (a :class:`Trainer` callback)."""

    def __init__(self, seconds: float, enabled: bool = True) -> None:
        self.bar: Any = None
        if enabled:
            self.bar = tqdm(
                total=max(1, round(seconds)),
                desc="training",
                unit="s",
                file=sys.stderr,
                dynamic_ncols=True,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total}s "
                "[{elapsed}<{remaining}{postfix}]",
            )

    def __call__(self, trainer: Any) -> None:
        if self.bar is None:
            return
        elapsed = min(float(trainer.elapsed), float(self.bar.total))
        self.bar.update(max(0.0, elapsed - float(self.bar.n)))
        stats = {"step": trainer.step, "tok/s": f"{trainer.tokens_seen / max(elapsed, 1e-9):.0f}"}
        if "bleu" in trainer.last_eval:
            stats["dev BLEU"] = f"{trainer.last_eval['bleu']:.1f}"
        self.bar.set_postfix(stats, refresh=False)

    def write(self, message: str) -> None:
        """One log line, above the bar."""
        if self.bar is None:
            print(message, flush=True)
        else:
            self.bar.write(message, file=sys.stdout)

    def close(self) -> None:
        """Finish the bar."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class CurveMarks:
    """A :class:`Trainer` callback: at each earlier budget ``M`` of ``minutes``, the moment a run
    of ``train.max_minutes = M`` would stop, save the model it would end with as
    ``OUT/curve/<M>min`` (:meth:`Trainer.stop_point`, off the clock). ``points`` collects them."""

    def __init__(self, minutes: Sequence[float]) -> None:
        self.todo = sorted(minutes)
        self.points: list[dict[str, Any]] = []

    def __call__(self, trainer: Any) -> None:
        while self.todo and trainer.would_stop(self.todo[0]):
            m = self.todo.pop(0)
            point = trainer.stop_point(f"{CURVE_DIR}/{m:g}min")
            self.points.append({"budget_minutes": m, **point})


def _train(
    cfg: RunConfig, progress: bool, log: Log | None, curve: Sequence[float] = ()
) -> dict[str, Any]:

    bar = TimeBar(cfg.train.max_minutes * 60, enabled=progress)
    write = log or bar.write
    t0 = time.monotonic()
    marks = CurveMarks(curve)
    trainer = Trainer(cfg, progress=False, log=write, callbacks=[marks, bar])
    try:
        result = trainer.fit()
    finally:
        bar.close()
    params = sum(p.numel() for p in trainer.model.parameters())
    return {
        "status": result.status,
        "steps": result.step,
        "epochs": result.epoch,
        "train_minutes": round(trainer.elapsed / 60, 2),
        "total_minutes": round((time.monotonic() - t0) / 60, 2),
        "parameters": int(params),
        "tokens": int(trainer.tokens_seen),
        "bf16": bool(trainer.bf16),
        "best": result.best,
        "last_eval": result.last_eval,
        "curve": marks.points,
    }


# --------------------------------------------------------------------------- the job


def run_quickstart(
    opts: QuickstartOptions,
    *,
    log: Log | None = None,
    confirm: Confirm | None = None,
    progress: bool = True,
) -> QuickstartResult:
    """Run the quickstart described by ``opts`` (see the module docstring).

    ``confirm(question) -> bool`` is asked before reusing a finished run (None: reuse);
    ``log`` gets every console line (default: printed above the progress bars).
    """
    say: Log = log or (lambda m: print(m, flush=True))
    cfg = quickstart_config(opts)
    device = choose_device(cfg.train.device, "train.device")
    out = Path(opts.out)
    marker = reuse_or_clear(opts, say, confirm)
    if marker is None:
        say(
            f"quickstart: {opts.model} on {opts.corpus}, {opts.minutes:g} min of training"
            f"{' (fast smoke test)' if opts.fast else ''} -> {out}"
        )
        facts = _train(cfg, progress, log, opts.curve)
        if facts["status"] in ("SIGINT", "SIGTERM"):
            say(
                f"training stopped by {facts['status']} at step {facts['steps']}; evaluating the "
                "model so far (Ctrl-C again aborts)"
            )
        model_dir = out / "best" if (out / "best").is_dir() else out / "last"
    else:
        facts = dict(marker.get("train", {}))
        model_dir = out / str(marker.get("model_dir", "best"))
    loaded = load_translation_model(model_dir, verb="quickstart", device=str(device))
    test = evaluate_test(
        loaded,
        limit=opts.test_limit,
        beam=opts.beam,
        samples=opts.samples,
        heatmaps=opts.heatmaps,
        fig_dir=out / "figures",
        progress=progress,
        fast=opts.fast,
    )
    write_translations(test, out / TRANSLATIONS)
    if facts.get("curve") and not all("test_bleu" in p for p in facts["curve"]):
        facts["curve"] = _score_curve(facts["curve"], out, opts, str(device), say, progress)
    md, page = quickstart_report(opts, loaded.config, facts, test, out, model_dir)
    doc = {
        "identity": opts.identity(),
        "model_dir": model_dir.name,
        "train": facts,
        "test": test.summary(),
        "date": datetime.date.today().isoformat(),
    }
    tmp = out / f".{MARKER}.tmp"
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(out / MARKER)
    return QuickstartResult(out, model_dir, marker is not None, facts, test, md, page)


def _score_curve(
    points: Sequence[dict[str, Any]],
    out: Path,
    opts: QuickstartOptions,
    device: str,
    say: Log,
    progress: bool,
) -> list[dict[str, Any]]:
    """Test BLEU/chrF of each curve point's model, decoded as the final model was."""
    rows = []
    for point in points:
        loaded = load_translation_model(out / point["name"], verb="quickstart", device=device)
        ev = evaluate_translation(
            loaded,
            name=point["name"],
            split="test",
            beam=opts.beam,
            max_examples=opts.test_limit,
            batch_size=BATCH,
            progress=progress,
        )
        row = {**point, "test_bleu": round(ev.bleu.score, 2), "test_chrf": round(ev.chrf.score, 2)}
        say(
            f"curve: {point['budget_minutes']:g} min ({point['step']} steps): test BLEU "
            f"{row['test_bleu']:.2f}  chrF {row['test_chrf']:.2f}"
        )
        rows.append(row)
    return rows


def check_interactive_answer(answer: str) -> bool:
    """``confirm`` helper for a [Y/n] prompt: empty or y/yes means yes."""
    text = answer.strip().lower()
    if text in ("", "y", "yes"):
        return True
    if text in ("n", "no"):
        return False
    raise DhianError(f"answer y or n, got {answer!r}")
