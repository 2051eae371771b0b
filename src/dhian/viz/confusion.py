"""Confusion matrices of a classifier: a PNG heatmap and a Markdown table.

Owns :func:`confusion_plot` (gold classes on y, predictions on x; each cell coloured by its share
of the gold row, i.e. per-class recall on the diagonal, and annotated with the count) and
:func:`confusion_markdown` (the same counts as a GitHub Markdown table with row totals). Both
take a (C, C) count matrix ``m[gold][pred]`` (as :func:`dhian.metrics.confusion_matrix`
returns) plus the C class names; they never see a model.
Imports: numpy, matplotlib, :mod:`dhian.viz.style`, :mod:`dhian.viz._arrays` (no model code).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from dhian.viz import style
from dhian.viz._arrays import check_tokens, to_numpy

__all__ = ["CONFUSION_CMAP", "confusion_markdown", "confusion_plot", "row_shares"]

#: Shares of a gold row, 0 white to 1 dark blue (counts, not attention: a different map).
CONFUSION_CMAP = "Blues"


def _counts(matrix: Any, labels: Sequence[str], fn: str) -> tuple[np.ndarray, list[str]]:
    """``matrix`` as a (C, C) array of non-negative counts matching the C ``labels``."""
    names = check_tokens(labels, "labels", fn)
    arr = to_numpy(matrix)
    c = len(names)
    if arr.shape != (c, c):
        raise ValueError(
            f"{fn}: matrix must have shape (C, C) = {(c, c)} for the {c} labels given, "
            f"received {tuple(arr.shape)}"
        )
    if c == 0:
        raise ValueError(f"{fn}: no classes (labels is empty)")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{fn}: matrix must hold finite non-negative counts")
    return arr, names


def row_shares(matrix: Any) -> np.ndarray:
    """(C, C) counts → each row divided by its sum (an empty gold row stays all zero)."""
    arr = to_numpy(matrix)
    totals = arr.sum(axis=1, keepdims=True)  # (C, 1)
    return np.divide(arr, totals, out=np.zeros_like(arr), where=totals > 0)


def _count_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3g}"


def confusion_plot(
    matrix: Any,
    labels: Sequence[str],
    path: str | Path | None = None,
    *,
    title: str | None = None,
    ax: Axes | None = None,
    colorbar: bool = True,
) -> Figure:
    """Heatmap of the (C, C) counts ``matrix[gold][pred]``: gold on y, predicted on x.

    Colour = share of the gold row (the diagonal reads as per-class recall), text = the count.
    Saves to ``path`` when given (.png/.svg/.pdf by extension) and returns the figure
    (``ax``'s figure when an axes is passed in).
    """
    counts, names = _counts(matrix, labels, "confusion_plot")
    shares = row_shares(counts)  # (C, C)
    c = len(names)
    side = float(np.clip(1.8 + 0.55 * c, 3.0, 14.0))
    with style.style_context():
        fig, axis = style.target_axes(ax, (side + 0.8, side))
        image = axis.imshow(
            shares, cmap=CONFUSION_CMAP, vmin=0.0, vmax=1.0, interpolation="nearest"
        )
        fs = style.token_fontsize(c)
        axis.set_xticks(range(c))
        axis.set_xticklabels(
            names,
            rotation=45 if c > 4 else 0,
            ha="right" if c > 4 else "center",
            fontsize=fs,
            parse_math=False,
        )
        axis.set_yticks(range(c))
        axis.set_yticklabels(names, fontsize=fs, parse_math=False)
        axis.set_xlabel("predicted")
        axis.set_ylabel("gold")
        axis.tick_params(length=0)
        for spine in axis.spines.values():
            spine.set_visible(False)
        cell_fs = max(5.0, min(10.0, 80.0 / c))
        for i in range(c):
            for j in range(c):
                axis.text(
                    j,
                    i,
                    _count_text(float(counts[i, j])),
                    ha="center",
                    va="center",
                    fontsize=cell_fs,
                    color=style.text_color_for(float(shares[i, j]), CONFUSION_CMAP),
                    parse_math=False,
                )
        axis.set_title(title or f"confusion matrix ({_count_text(float(counts.sum()))} examples)")
        if colorbar:
            bar = fig.colorbar(image, ax=axis, fraction=0.046, pad=0.03, shrink=0.8)
            bar.set_label("share of gold row", fontsize=8)
            bar.ax.tick_params(labelsize=7)
            bar.outline.set_visible(False)
    style.save_figure(fig, path)
    return fig


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def confusion_markdown(matrix: Any, labels: Sequence[str]) -> str:
    """The (C, C) counts ``matrix[gold][pred]`` as a Markdown table: one row per gold class,
    one column per predicted class, then the row total; a last row sums the predictions."""
    counts, names = _counts(matrix, labels, "confusion_markdown")
    head = ["gold \\ predicted", *(_cell(n) for n in names), "total"]
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---", *(["---:"] * (len(names) + 1))]) + "|",
    ]
    for name, row in zip(names, counts, strict=True):
        cells = [f"**{_cell(name)}**", *(_count_text(float(v)) for v in row)]
        lines.append("| " + " | ".join([*cells, _count_text(float(row.sum()))]) + " |")
    col_totals = [_count_text(float(v)) for v in counts.sum(axis=0)]
    total = _count_text(float(counts.sum()))
    lines.append("| " + " | ".join(["total", *col_totals, total]) + " |")
    return "\n".join(lines) + "\n"
