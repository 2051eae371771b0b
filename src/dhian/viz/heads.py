"""Multi-head self-attention pictures: the layers × heads grid and the one-token head view.

Owns :func:`head_grid` (every layer/head as a small heatmap) and :func:`head_view` (for one
query token, where each head of a layer looks: lines to the keys, bertviz-style, one panel per
head). Layers and heads are numbered from 0, as in the HTML viewer and :func:`head_summary`.
Imports: numpy, matplotlib, :mod:`dhian.viz.style`, :mod:`dhian.viz.heatmap`,
:mod:`dhian.viz._arrays` (no model code).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from dhian.viz import style
from dhian.viz._arrays import as_layers, check_tokens
from dhian.viz.heatmap import draw_matrix

__all__ = ["head_grid", "head_view", "resolve_index"]

#: Tick labels are drawn on the grid's edge panels only up to this many tokens.
GRID_LABEL_MAX_TOKENS = 32


def resolve_index(index: int, size: int, what: str, fn: str) -> int:
    """``index`` in ``range(size)``, negative counting from the end; ValueError otherwise."""
    if not -size <= index < size:
        raise ValueError(f"{fn}: {what} {index} is out of range; expected 0..{size - 1}")
    return index % size


def head_grid(
    weights: Any,
    tokens_q: Sequence[str],
    tokens_k: Sequence[str] | None = None,
    path: str | Path | None = None,
    *,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    title: str | None = None,
    head_labels: Sequence[str] | None = None,
) -> Figure:
    """Grid of attention maps, one row per layer and one column per head.

    ``weights``: (L, H, Tq, Tk) or a list of L arrays (H, Tq, Tk) (torch or numpy).
    ``tokens_k`` defaults to ``tokens_q`` (self attention). ``layers``/``heads`` select a
    subset. Token labels appear on the left column and top row when Tq, Tk <= 32.
    ``head_labels``: a column title per head (default ``head h``), e.g. ``h3 (kv1)``.
    """
    fn = "head_grid"
    tq = check_tokens(tokens_q, "tokens_q", fn)
    tk = tq if tokens_k is None else check_tokens(tokens_k, "tokens_k", fn)
    w = as_layers(weights, fn, len(tq), len(tk))
    layer_ids = [resolve_index(i, w.shape[0], "layer", fn) for i in (layers or range(w.shape[0]))]
    head_ids = [resolve_index(i, w.shape[1], "head", fn) for i in (heads or range(w.shape[1]))]
    if head_labels is not None and len(head_labels) != w.shape[1]:
        raise ValueError(
            f"{fn}: head_labels needs {w.shape[1]} names (one per head), "
            f"received {len(head_labels)}"
        )
    rows, cols = len(layer_ids), len(head_ids)
    labelled = max(len(tq), len(tk)) <= GRID_LABEL_MAX_TOKENS
    panel = 1.7 if labelled else 1.2
    scale = min(1.0, 22.0 / (panel * cols), 22.0 / (panel * rows))
    fontsize = max(3.5, min(7.0, 110.0 / max(len(tq), len(tk)))) if labelled else None
    with style.style_context():
        fig, axes = style.new_figure(
            (panel * cols * scale + 1.0, panel * rows * scale + 0.8), rows, cols
        )
        grid = np.asarray(axes, dtype=object).reshape(rows, cols)
        for r, layer in enumerate(layer_ids):
            for c, head in enumerate(head_ids):
                ax = grid[r, c]
                show_x = labelled and r == 0
                show_y = labelled and c == 0
                draw_matrix(
                    ax,
                    w[layer, head],
                    tk if show_x else None,
                    tq if show_y else None,
                    fontsize=fontsize,
                )
                if r == 0:
                    name = f"head {head}" if head_labels is None else head_labels[head]
                    ax.set_title(name, fontsize=8, pad=4)
                if c == 0:
                    ax.set_ylabel(f"layer {layer}", fontsize=8)
        if title:
            fig.suptitle(title)
    style.save_figure(fig, path)
    return fig


def head_view(
    weights: Any,
    tokens: Sequence[str],
    token_index: int,
    layer: int,
    path: str | Path | None = None,
    *,
    tokens_k: Sequence[str] | None = None,
    heads: Sequence[int] | None = None,
    title: str | None = None,
) -> Figure:
    """Where every head of ``layer`` looks from query token ``token_index``.

    One panel per head: query tokens on the left (the chosen one highlighted), key tokens on
    the right, a line from the chosen token to each key with width and opacity proportional to
    its weight, and each key shaded by its weight. ``weights``: (L, H, Tq, Tk) or a list of
    (H, Tq, Tk); ``tokens_k`` defaults to ``tokens`` (self attention).
    """
    fn = "head_view"
    tq = check_tokens(tokens, "tokens", fn)
    tk = tq if tokens_k is None else check_tokens(tokens_k, "tokens_k", fn)
    w = as_layers(weights, fn, len(tq), len(tk))
    layer = resolve_index(layer, w.shape[0], "layer", fn)
    qi = resolve_index(token_index, len(tq), "token_index", fn)
    head_ids = [resolve_index(i, w.shape[1], "head", fn) for i in (heads or range(w.shape[1]))]
    n = len(head_ids)
    cols = min(n, 6)
    rows = math.ceil(n / cols)
    longest = max(len(max(tq, key=len)), len(max(tk, key=len)), 1)
    fontsize = style.token_fontsize(max(len(tq), len(tk)), base=8.0)
    height = float(np.clip(0.17 * max(len(tq), len(tk)) + 0.6, 2.0, 14.0))
    width = float(np.clip(1.2 + 0.1 * longest, 1.6, 3.0))
    with style.style_context():
        fig, axes = style.new_figure((width * cols, height * rows), rows, cols)
        flat = list(np.asarray(axes, dtype=object).reshape(-1))
        for ax, head in zip(flat, head_ids, strict=False):
            _draw_head_lines(ax, w[layer, head, qi], tq, tk, qi, style.head_color(head), fontsize)
            ax.set_title(f"head {head}", fontsize=9, color=style.head_color(head))
        for ax in flat[n:]:
            ax.set_axis_off()
        fig.suptitle(title or f"layer {layer}, query token {qi} {tq[qi]!r}", fontsize=10)
    style.save_figure(fig, path)
    return fig


def _draw_head_lines(
    ax: Any,
    row: np.ndarray,
    tq: list[str],
    tk: list[str],
    qi: int,
    color: str,
    fontsize: float,
) -> None:
    """One head-view panel: tokens in two columns, lines from ``tq[qi]`` to every key."""
    n = max(len(tq), len(tk))
    ax.set_xlim(-0.9, 1.9)
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_axis_off()
    weights = np.clip(row, 0.0, None)
    peak = float(weights.max()) or 1.0
    segments = [[(0.05, qi), (0.95, j)] for j in range(len(tk))]
    rgba = np.array([to_rgba(color, alpha=float(a)) for a in weights / peak])
    lines = LineCollection(segments, colors=rgba, linewidths=0.3 + 2.5 * weights, capstyle="round")
    lines.set_gid("head-lines")
    ax.add_collection(lines)
    for i, tok in enumerate(tq):
        chosen = i == qi
        ax.text(
            0.0,
            i,
            tok,
            ha="right",
            va="center",
            fontsize=fontsize,
            parse_math=False,
            color="#000000" if chosen else "#9a9a9a",
            fontweight="bold" if chosen else "normal",
            bbox={"boxstyle": "round,pad=0.15", "fc": style.ACCENT, "ec": "none"}
            if chosen
            else None,
        )
    for j, tok in enumerate(tk):
        ax.text(
            1.0,
            j,
            tok,
            ha="left",
            va="center",
            fontsize=fontsize,
            parse_math=False,
            bbox={
                "boxstyle": "round,pad=0.15",
                "fc": to_rgba(color, 0.6 * weights[j] / peak),
                "ec": "none",
            },
        )
