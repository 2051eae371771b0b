"""Line plots of results: BLEU by sentence length and learning curves.

Owns :func:`bleu_by_length_plot` (several systems on shared length buckets, like Bahdanau et
al. 2015, Fig. 2) and :func:`learning_curves` (``metrics.jsonl`` rows: one panel per metric
family, train and dev together). Both use :mod:`dhian.viz.style` for their look.
Imports: numpy, matplotlib, :mod:`dhian.viz.style` (no model code).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Real
from pathlib import Path
from typing import Any, Literal

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from dhian.viz import style

__all__ = ["bleu_by_length_plot", "learning_curves", "metric_family"]

_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_LINESTYLES = ("-", "--", "-.", ":")
#: Keys of a metrics row that are axes or bookkeeping, never plotted as a metric.
NON_METRIC_KEYS = frozenset({"step", "epoch", "time", "wall_time", "elapsed", "timestamp"})
_SPLIT_PREFIXES = ("train_", "dev_", "val_", "valid_", "test_", "eval_")


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None (missing, NaN, bool or not a number)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def bleu_by_length_plot(
    table: Mapping[str, Sequence[tuple[str, float | None]]],
    path: str | Path | None = None,
    *,
    title: str | None = None,
    ax: Axes | None = None,
    kind: Literal["line", "bar"] = "line",
    xlabel: str = "sentence length (source tokens)",
    ylabel: str = "BLEU",
) -> Figure:
    """BLEU per length bucket for several systems on one axes.

    ``table`` maps a system name to ``[(bucket_label, bleu), ...]``; buckets are the union of
    all systems' labels in first-seen order, and a missing or None score leaves a gap.
    ``kind`` "line" (markers and line styles per system, as in Bahdanau et al. Fig. 2) or
    "bar" (grouped bars).
    """
    if not table:
        raise ValueError("bleu_by_length_plot: table is empty; expected {system: [(bucket, bleu)]}")
    if kind not in ("line", "bar"):
        raise ValueError(f"bleu_by_length_plot: kind must be 'line' or 'bar', received {kind!r}")
    buckets: list[str] = []
    for system, rows in table.items():
        for row in rows:
            if not isinstance(row, Sequence) or isinstance(row, str) or len(row) != 2:
                raise ValueError(
                    f"bleu_by_length_plot: rows of {system!r} must be (bucket_label, bleu) "
                    f"pairs, received {row!r}"
                )
            if str(row[0]) not in buckets:
                buckets.append(str(row[0]))
    x = np.arange(len(buckets), dtype=float)
    n = len(table)
    width = 0.8 / n
    with style.style_context():
        fig, axis = style.target_axes(ax, (max(4.5, 0.9 * len(buckets) + 2.0), 3.4))
        for k, (system, rows) in enumerate(table.items()):
            scores = dict((str(b), _number(v)) for b, v in rows)
            y = np.array([np.nan if scores.get(b) is None else scores[b] for b in buckets])
            color = style.head_color(k)
            if kind == "line":
                axis.plot(
                    x,
                    y,
                    marker=_MARKERS[k % len(_MARKERS)],
                    linestyle=_LINESTYLES[k % len(_LINESTYLES)],
                    color=color,
                    label=system,
                    markersize=5,
                    linewidth=1.6,
                )
            else:
                axis.bar(x - 0.4 + width * (k + 0.5), y, width, color=color, label=system)
        axis.set_xticks(x)
        axis.set_xticklabels(buckets, parse_math=False)
        axis.set_xlabel(xlabel)
        axis.set_ylabel(ylabel)
        axis.grid(axis="y")
        axis.set_axisbelow(True)
        axis.legend(loc="best")
        if title:
            axis.set_title(title)
    style.save_figure(fig, path)
    return fig


def _split_index(key: str) -> int:
    """Colour index by split, the same in every panel: train 0, dev 1, test 2, other 3."""
    for index, prefixes in enumerate(
        (("train_",), ("dev_", "val_", "valid_", "eval_"), ("test_",))
    ):
        if key.startswith(prefixes):
            return index
    return 3


def metric_family(key: str) -> str:
    """The panel a metric goes to: its name without a split prefix (``dev_bleu`` → ``bleu``)."""
    for prefix in _SPLIT_PREFIXES:
        if key.startswith(prefix) and len(key) > len(prefix):
            return key[len(prefix) :]
    return key


def learning_curves(
    records: Sequence[Mapping[str, Any]],
    path: str | Path | None = None,
    *,
    x: str = "step",
    metrics: Sequence[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Learning curves from ``metrics.jsonl`` rows (dicts with ``step`` and metrics).

    Every numeric key except ``x`` and bookkeeping keys (epoch, time, ...) is plotted, or only
    ``metrics`` when given; keys sharing a family (``train_loss``/``dev_loss``) share a panel.
    A row without a metric (dev metrics only at evaluation steps) is skipped for that metric;
    rows without ``x`` use their index.
    """
    if not records:
        raise ValueError("learning_curves: records is empty; expected metrics.jsonl rows (dicts)")
    keys: list[str] = []
    for row in records:
        if not isinstance(row, Mapping):
            raise ValueError(f"learning_curves: records must be dicts, received {type(row)}")
        for key, value in row.items():
            if key not in keys and key != x and _number(value) is not None:
                keys.append(key)
    if metrics is not None:
        missing = [m for m in metrics if m not in keys]
        if missing:
            raise ValueError(
                f"learning_curves: metrics {missing} have no numeric value in any record; "
                f"available: {keys}"
            )
        keys = list(metrics)
    else:
        keys = [k for k in keys if k not in NON_METRIC_KEYS]
    if not keys:
        raise ValueError(f"learning_curves: no numeric metric besides {x!r} in the records")
    families: dict[str, list[str]] = {}
    for key in keys:
        families.setdefault(metric_family(key), []).append(key)
    panels = len(families)
    cols = min(panels, 3)
    rows = math.ceil(panels / cols)
    with style.style_context():
        fig, axes = style.new_figure((3.6 * cols, 2.8 * rows), rows, cols)
        flat = list(np.asarray(axes, dtype=object).reshape(-1))
        for ax, (family, members) in zip(flat, families.items(), strict=False):
            for key in members:
                k = _split_index(key)
                xs, ys = [], []
                for idx, row in enumerate(records):
                    value = _number(row.get(key))
                    if value is None:
                        continue
                    pos = _number(row.get(x))
                    xs.append(idx if pos is None else pos)
                    ys.append(value)
                sparse = len(xs) <= 30
                ax.plot(
                    xs,
                    ys,
                    color=style.head_color(k),
                    marker=_MARKERS[k % len(_MARKERS)] if sparse else None,
                    markersize=3.5,
                    linewidth=1.4,
                    label=key,
                )
            ax.set_title(family)
            ax.set_xlabel(x)
            ax.grid(True)
            ax.legend(loc="best")
        for ax in flat[panels:]:
            ax.set_axis_off()
        if title:
            fig.suptitle(title)
    style.save_figure(fig, path)
    return fig
