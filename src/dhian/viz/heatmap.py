"""Cross-attention alignment heatmaps, as in Bahdanau et al. (2015), Fig. 3.

Owns :func:`alignment_heatmap`: one (Tt, Ts) weight matrix (an RNN's attention, or one
transformer layer/head, or a head average) with the source on x (labels on top, rotated), the
output on y, in grey scale (0 black, 1 white), optionally annotated with the values.
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
from dhian.viz._arrays import as_matrix, check_tokens

__all__ = ["alignment_heatmap", "draw_matrix", "format_weight"]


def format_weight(value: float) -> str:
    """Short cell text: ``"0"``, ``".37"``, ``"1"``."""
    if value < 0.005:
        return "0"
    if value >= 0.995:
        return "1"
    return f"{value:.2f}".lstrip("0")


def draw_matrix(
    ax: Axes,
    weights: np.ndarray,
    x_tokens: Sequence[str] | None,
    y_tokens: Sequence[str] | None,
    *,
    annotate: bool = False,
    x_on_top: bool = True,
    fontsize: float | None = None,
) -> Any:
    """Draw ``weights`` (rows y, cols x) on ``ax`` in the attention colormap; returns the image.

    Token tick labels are set when given (``None`` hides that axis's ticks). Text is never
    parsed as mathtext, so tokens like ``$`` print as themselves.
    """
    rows, cols = weights.shape
    vmin = min(0.0, float(weights.min()))
    vmax = max(1.0, float(weights.max()))
    image = ax.imshow(
        weights,
        cmap=style.ATTENTION_CMAP,
        vmin=vmin,
        vmax=vmax,
        interpolation="nearest",
        aspect="equal",
    )
    fs_x = fontsize or style.token_fontsize(cols)
    fs_y = fontsize or style.token_fontsize(rows)
    if x_tokens is not None:
        ax.set_xticks(range(cols))
        ax.set_xticklabels(list(x_tokens), rotation=90, fontsize=fs_x, parse_math=False)
    else:
        ax.set_xticks([])
    if y_tokens is not None:
        ax.set_yticks(range(rows))
        ax.set_yticklabels(list(y_tokens), fontsize=fs_y, parse_math=False)
    else:
        ax.set_yticks([])
    if x_on_top:
        ax.xaxis.tick_top()
        ax.xaxis.set_label_position("top")
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if annotate:
        cell_fs = max(4.0, min(8.0, 90.0 / max(rows, cols)))
        span = vmax - vmin or 1.0
        for i in range(rows):
            for j in range(cols):
                v = float(weights[i, j])
                ax.text(
                    j,
                    i,
                    format_weight(v),
                    ha="center",
                    va="center",
                    fontsize=cell_fs,
                    color=style.text_color_for((v - vmin) / span),
                    parse_math=False,
                )
    return image


def alignment_heatmap(
    weights: Any,
    src_tokens: Sequence[str],
    tgt_tokens: Sequence[str],
    path: str | Path | None = None,
    annotate: bool = False,
    title: str | None = None,
    ax: Axes | None = None,
    colorbar: bool = True,
) -> Figure:
    """Plot cross attention ``weights`` (Tt, Ts): source tokens on x (top), output on y.

    ``weights`` is a torch tensor or array of shape (Tt, Ts) (a leading batch of one is
    squeezed); row ``t`` is the attention of output token ``t`` over the source. ``annotate``
    writes each value in its cell. Saves to ``path`` when given (.png/.svg/.pdf by extension)
    and returns the figure (``ax``'s figure when an axes is passed in).
    """
    src = check_tokens(src_tokens, "src_tokens", "alignment_heatmap")
    tgt = check_tokens(tgt_tokens, "tgt_tokens", "alignment_heatmap")
    w = as_matrix(weights, "alignment_heatmap", (len(tgt), len(src)), "(Tt, Ts)")
    cell = 0.32 if not annotate else 0.42
    figsize = (
        float(np.clip(1.6 + cell * len(src), 3.0, 16.0)),
        float(np.clip(1.4 + cell * len(tgt), 2.5, 16.0)),
    )
    with style.style_context():
        fig, axis = style.target_axes(ax, figsize)
        image = draw_matrix(axis, w, src, tgt, annotate=annotate)
        axis.set_xlabel("source")
        axis.set_ylabel("output")
        if title:
            axis.set_title(title, pad=8)
        if colorbar:
            bar = fig.colorbar(image, ax=axis, fraction=0.035, pad=0.02, shrink=0.8)
            bar.ax.tick_params(labelsize=7)
            bar.outline.set_visible(False)
    style.save_figure(fig, path)
    return fig
