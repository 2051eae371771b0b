"""Learning curves: read ``metrics.jsonl`` and draw train loss, dev loss and dev BLEU to a PNG.

Owns the metrics-log reader (:func:`read_metrics`) and the picture (:func:`plot_curves`), drawn
with matplotlib's object API on the Agg canvas (no global backend, no display needed).
Imports: stdlib, matplotlib.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


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


def _series(events: list[dict[str, Any]], event: str, key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for e in events:
        if e.get("event") == event and isinstance(e.get(key), int | float):
            xs.append(int(e["step"]))
            ys.append(float(e[key]))
    return xs, ys


def plot_curves(metrics_path: str | Path, png_path: str | Path, title: str = "") -> Path | None:
    """Write the learning curves of ``metrics_path`` to ``png_path``; None if nothing to draw.

    Left panel: train loss (per log event) and dev loss (per evaluation) against the step.
    Right panel (when the log has one): the first dev score found among BLEU, chrF, accuracy,
    macro-F1.
    """
    events = read_metrics(metrics_path)
    train = _series(events, "train", "loss")
    dev = _series(events, "eval", "dev_loss")
    score_key = next(
        (
            k
            for k in ("dev_bleu", "dev_chrf", "dev_accuracy", "dev_f1")
            if _series(events, "eval", k)[0]
        ),
        None,
    )
    if not train[0] and not dev[0]:
        return None
    fig = Figure(figsize=(10 if score_key else 6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 2 if score_key else 1, 1)
    if train[0]:
        ax.plot(*train, label="train loss", color="tab:blue", linewidth=1)
    if dev[0]:
        ax.plot(*dev, label="dev loss", color="tab:orange", marker="o", markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    if score_key:
        ax2 = fig.add_subplot(1, 2, 2)
        xs, ys = _series(events, "eval", score_key)
        name = {"dev_bleu": "BLEU", "dev_chrf": "chrF"}.get(score_key, score_key[4:])
        ax2.plot(xs, ys, color="tab:green", marker="o", markersize=3, label=f"dev {name}")
        ax2.set_xlabel("step")
        ax2.set_ylabel(name)
        ax2.grid(alpha=0.3)
        ax2.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    png_path = Path(png_path)
    tmp = png_path.with_name(png_path.name + ".tmp.png")
    fig.savefig(tmp, format="png")
    tmp.replace(png_path)
    return png_path
