"""Attention sinks: how much of its attention each head puts on the very first token.

Owns :func:`first_token_share` (the L × H mean weight on key 0, over the queries that have
another token to attend to) and :func:`sink_heatmap` (that map as an annotated layers × heads
picture). In trained causal LLMs many heads park most of their weight on the first token when
they have nothing better to do — the "attention sink" of Xiao et al. 2023, "Efficient
Streaming Language Models with Attention Sinks".
Notation: L layers, H heads, T tokens. Imports: numpy, matplotlib, :mod:`dhian.viz.style`,
:mod:`dhian.viz._arrays` (no model code).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from dhian.viz import style
from dhian.viz._arrays import as_layers

__all__ = ["first_token_share", "sink_heatmap"]


def first_token_share(weights: Any) -> np.ndarray:
    """(L, H) mean attention weight on the first key token, over queries 1 .. T-1 (query 0
    of a causal model can only attend to itself). ``weights``: self attention (L, H, T, T) or
    a list of (H, T, T), T >= 2."""
    w = as_layers(weights, "first_token_share")
    if w.shape[2] != w.shape[3] or w.shape[2] < 2:
        raise ValueError(
            "first_token_share: needs self attention over at least 2 tokens, received "
            f"(Tq, Tk) = {w.shape[2:]}"
        )
    return np.asarray(w[:, :, 1:, 0].mean(axis=-1), dtype=np.float64)  # (L, H)


def sink_heatmap(
    weights: Any,
    path: str | Path | None = None,
    *,
    first_token: str | None = None,
    head_labels: Sequence[str] | None = None,
    title: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Layers × heads map of :func:`first_token_share`, each cell annotated with its value.

    ``first_token``: the first token's text for the title; ``head_labels``: column names (e.g.
    ``h3 (kv1)``, default the head numbers).
    """
    share = first_token_share(weights)
    num_layers, num_heads = share.shape
    if head_labels is not None and len(head_labels) != num_heads:
        raise ValueError(
            f"sink_heatmap: head_labels needs {num_heads} names, received {len(head_labels)}"
        )
    figsize = (1.6 + 0.62 * num_heads, 1.0 + 0.3 * num_layers)
    with style.style_context():
        fig, axis = style.target_axes(ax, figsize)
        image = axis.imshow(share, cmap=style.ATTENTION_CMAP, vmin=0.0, vmax=1.0, aspect="auto")
        axis.set_xticks(range(num_heads))
        axis.set_xticklabels(
            [str(h) for h in range(num_heads)] if head_labels is None else list(head_labels),
            fontsize=7,
            rotation=0 if head_labels is None else 45,
        )
        axis.set_yticks(range(num_layers))
        axis.tick_params(length=0, labelsize=7)
        axis.set_xlabel("head")
        axis.set_ylabel("layer")
        for spine in axis.spines.values():
            spine.set_visible(False)
        for layer in range(num_layers):
            for head in range(num_heads):
                value = float(share[layer, head])
                color = style.text_color_for(value)
                axis.text(head, layer, f"{value:.2f}", ha="center", va="center", fontsize=5.5,
                          color=color)  # fmt: skip
        what = "the first token" if first_token is None else f"the first token {first_token!r}"
        axis.set_title(title or f"mean attention weight on {what}", fontsize=9)
        bar = fig.colorbar(image, ax=axis, fraction=0.04, pad=0.02)
        bar.set_label("share of each query's attention", fontsize=7)
        bar.ax.tick_params(labelsize=7)
        bar.outline.set_visible(False)
    style.save_figure(fig, path)
    return fig
