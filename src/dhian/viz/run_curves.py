"""Learning curves of a run: read ``metrics.jsonl``, draw train loss, dev loss and a dev score.

Owns the metrics-log reader (:func:`read_metrics`) and the run's picture (:func:`plot_curves`):
``train``/``eval`` events become rows ``train_loss`` / ``dev_loss`` (one panel) and the first
dev score found among BLEU, chrF, accuracy, macro-F1 (a second panel), drawn by
:func:`dhian.viz.curves.learning_curves` (matplotlib Agg, no display needed).
Imports: stdlib, :mod:`dhian.viz.curves`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dhian.viz.curves import learning_curves

SCORES = ("dev_bleu", "dev_chrf", "dev_accuracy", "dev_f1")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The events of a ``metrics.jsonl`` (a torn last line, e.g. after a crash, is ignored)."""
    events: list[dict[str, Any]] = []
    p = Path(path)
    if not p.is_file():
        return events
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            events.append(obj)
    return events


def curve_rows(events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """(rows for ``learning_curves``, the metric keys to draw) from metrics events."""
    rows: list[dict[str, Any]] = []
    for e in events:
        if e.get("event") == "train" and "loss" in e:
            rows.append({"step": e["step"], "train_loss": e["loss"]})
        elif e.get("event") == "eval":
            rows.append({"step": e["step"], **{k: v for k, v in e.items() if k.startswith("dev_")}})
    present = {k for r in rows for k, v in r.items() if isinstance(v, int | float) and k != "step"}
    keys: list[str] = [k for k in ("train_loss", "dev_loss") if k in present]
    keys += [k for k in SCORES if k in present][:1]
    return rows, keys


def plot_curves(metrics_path: str | Path, png_path: str | Path, title: str = "") -> Path | None:
    """Write the learning curves of ``metrics_path`` to ``png_path``; None if nothing to draw."""
    rows, keys = curve_rows(read_metrics(metrics_path))
    if not keys:
        return None
    png_path = Path(png_path)
    tmp = png_path.with_name(f".{png_path.stem}.tmp.png")
    learning_curves(rows, tmp, metrics=keys, title=title or None)
    tmp.replace(png_path)
    return png_path
