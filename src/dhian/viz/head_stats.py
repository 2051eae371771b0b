"""What each attention head does, in numbers: entropy, distance, positional fractions, a label.

Owns :func:`head_entropy`, :func:`head_summary` (per-head statistics and a label to spot
positional or broad heads, in the spirit of Clark et al. 2019 "What does BERT look at?") and
:func:`entropy_heatmap` (the L × H entropy map with labels).

Rows whose weights sum to 0 (fully masked queries, see docs/design.md) are excluded, as are
padding tokens (``[PAD]``, ``<pad>``) and positions where ``mask`` is False.
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
from dhian.viz._arrays import as_layers, check_tokens, to_numpy

__all__ = [
    "HEAD_LABELS",
    "PAD_TOKENS",
    "SEPARATOR_TOKENS",
    "entropy_heatmap",
    "head_entropy",
    "head_summary",
]

SEPARATOR_TOKENS = frozenset({"[SEP]", "</s>", "<sep>", "<eos>", "[EOS]", "<|endoftext|>"})
PAD_TOKENS = frozenset({"[PAD]", "<pad>", "<PAD>"})
#: A positional label needs at least this fraction of attention on that position.
POSITIONAL_THRESHOLD = 0.5
#: "broad": mean row entropy at least this fraction of the maximum log(#keys).
BROAD_THRESHOLD = 0.8
#: "local": mean attention distance at most this many tokens.
LOCAL_DISTANCE = 1.5
#: Label → short form used in the entropy heatmap.
HEAD_LABELS = {
    "previous-token": "prev",
    "next-token": "next",
    "diagonal": "diag",
    "first-token": "first",
    "separator": "sep",
    "broad": "broad",
    "local": "local",
    "mixed": "",
}
_EPS = 1e-6


def _normalised_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of (L, H, Tq, Tk) rescaled to sum 1, and the (L, H, Tq) mask of non-empty rows."""
    sums = w.sum(-1)
    valid = sums > _EPS
    p = np.where(valid[..., None], w / np.where(valid, sums, 1.0)[..., None], 0.0)
    return p, valid


def _row_entropy(p: np.ndarray) -> np.ndarray:
    """Entropy in nats of each row of ``p`` (0 log 0 = 0), shape ``p.shape[:-1]``."""
    logs = np.log(np.where(p > 0, p, 1.0))
    return -(p * logs).sum(-1)


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of ``values`` over the last axis where ``mask``; NaN where nothing is selected."""
    count = mask.sum(-1)
    total = np.where(mask, values, 0.0).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def head_entropy(weights: Any, mask: Any = None) -> np.ndarray:
    """Mean row entropy (nats) of every head: an (L, H) array.

    ``weights``: (L, H, Tq, Tk) or a list of (H, Tq, Tk). Each query row is rescaled to sum 1;
    rows summing to 0 (masked) and queries where ``mask`` (Tq,) is False are excluded.
    Uniform rows over T keys give log(T); one-hot rows give 0. A head with no valid row is NaN.
    """
    w = as_layers(weights, "head_entropy")
    p, valid = _normalised_rows(w)
    if mask is not None:
        valid = valid & _as_mask(mask, w.shape[2], "head_entropy")
    return _masked_mean(_row_entropy(p), valid)


def _as_mask(mask: Any, size: int, fn: str) -> np.ndarray:
    arr = to_numpy(mask).astype(bool)
    if arr.shape != (size,):
        raise ValueError(f"{fn}: mask must have shape (T,) = ({size},), received {arr.shape}")
    return arr


def head_summary(
    weights: Any,
    tokens: Sequence[str] | None = None,
    *,
    mask: Any = None,
    causal: bool | None = None,
    separators: Sequence[str] = tuple(SEPARATOR_TOKENS),
) -> list[dict[str, Any]]:
    """Per-head statistics of self attention, one dict per (layer, head) in order.

    ``weights``: (L, H, T, T) or a list of (H, T, T); ``tokens`` (T,) enables the separator
    fraction and padding detection. ``causal`` (default: detected from an all-zero upper
    triangle) limits the keys each query may see when normalising entropy.

    Keys of each dict: ``layer``, ``head``, ``label``, ``entropy`` (nats), ``normalized_entropy``
    (entropy / log(#visible keys), 1 = uniform), ``mean_distance`` (expected |i - j|),
    ``prev_token``, ``next_token``, ``same_token``, ``first_token`` (the [CLS] position, rows
    i >= 1), ``separator`` (fraction on separator tokens), ``max_weight`` (mean row maximum).
    Labels: previous-token, next-token, diagonal, first-token, separator (>= 50% there),
    broad (normalized entropy >= 0.8), local (mean distance <= 1.5), else mixed.
    """
    fn = "head_summary"
    w = as_layers(weights, fn)
    num_layers, num_heads, tq, tk = w.shape
    if tq != tk:
        raise ValueError(
            f"{fn}: self attention needs square weights (L, H, T, T); received {w.shape}"
        )
    t = tq
    toks = None if tokens is None else check_tokens(tokens, "tokens", fn)
    if toks is not None and len(toks) != t:
        raise ValueError(
            f"{fn}: weights must be (L, H, T, T) with T = {len(toks)} tokens given, "
            f"received {w.shape}"
        )
    real = np.ones(t, dtype=bool)
    if toks is not None:
        real &= np.array([tok not in PAD_TOKENS for tok in toks])
    if mask is not None:
        real &= _as_mask(mask, t, fn)
    if causal is None:
        causal = t > 1 and bool(np.all(np.triu(w, k=1) <= _EPS))
    p, valid = _normalised_rows(w)
    valid = valid & real  # (L, H, T)
    i = np.arange(t)
    visible = np.broadcast_to(real[None, :], (t, t)).copy()  # (Tq, Tk): keys a query may see
    if causal:
        visible &= i[None, :] <= i[:, None]
    n_visible = visible.sum(-1)  # (T,)
    ent = _row_entropy(p)  # (L, H, T)
    norm_ent = ent / np.log(np.maximum(n_visible, 2))
    dist = (p * np.abs(i[:, None] - i[None, :])).sum(-1)
    diag = p[..., i, i]
    prev = np.zeros_like(diag)
    nxt = np.zeros_like(diag)
    prev[..., 1:] = p[..., i[1:], i[1:] - 1]
    nxt[..., :-1] = p[..., i[:-1], i[:-1] + 1]
    first = p[..., :, 0]
    seps = np.array([tok in set(separators) for tok in toks]) if toks is not None else None
    sep = (p * seps).sum(-1) if seps is not None and seps.any() else np.zeros_like(diag)
    not_first = valid & (i > 0)
    stats = {
        "entropy": _masked_mean(ent, valid),
        "normalized_entropy": _masked_mean(norm_ent, valid & (n_visible > 1)),
        "mean_distance": _masked_mean(dist, valid),
        "prev_token": _masked_mean(prev, not_first),
        "next_token": _masked_mean(nxt, valid & (i < t - 1)),
        "same_token": _masked_mean(diag, valid),
        "first_token": _masked_mean(first, not_first),
        "separator": _masked_mean(sep, valid),
        "max_weight": _masked_mean(p.max(-1), valid),
    }
    out: list[dict[str, Any]] = []
    for layer in range(num_layers):
        for head in range(num_heads):
            row: dict[str, Any] = {"layer": layer, "head": head}
            row.update({k: _clean(v[layer, head]) for k, v in stats.items()})
            row["label"] = _label(row)
            out.append(row)
    return out


def _clean(value: Any) -> float:
    """A plain float (NaN stays NaN) rounded to 6 decimals, for JSON/printing."""
    v = float(value)
    return v if np.isnan(v) else round(v, 6)


def _label(row: dict[str, Any]) -> str:
    """The head's label from its statistics (see :func:`head_summary`)."""
    positional = {
        "previous-token": row["prev_token"],
        "next-token": row["next_token"],
        "diagonal": row["same_token"],
        "first-token": row["first_token"],
        "separator": row["separator"],
    }
    scored = {k: v for k, v in positional.items() if not np.isnan(v)}
    if scored:
        best = max(scored, key=lambda k: scored[k])
        if scored[best] >= POSITIONAL_THRESHOLD:
            return best
    if not np.isnan(row["normalized_entropy"]) and row["normalized_entropy"] >= BROAD_THRESHOLD:
        return "broad"
    if not np.isnan(row["mean_distance"]) and row["mean_distance"] <= LOCAL_DISTANCE:
        return "local"
    return "mixed"


def entropy_heatmap(
    weights: Any,
    path: str | Path | None = None,
    *,
    tokens: Sequence[str] | None = None,
    title: str | None = None,
    ax: Axes | None = None,
    head_labels: Sequence[str] | None = None,
) -> Figure:
    """Layers × heads map of mean row entropy (nats), each cell annotated with its value and
    the head's label (prev, first, sep, broad, ...) from :func:`head_summary`.

    ``weights``: self attention (L, H, T, T) or a list of (H, T, T); ``tokens`` as in
    :func:`head_summary`. Cross attention (Tq != Tk) is shown without labels.
    ``head_labels``: column names (e.g. ``h3 (kv1)``), default the head numbers.
    """
    w = as_layers(weights, "entropy_heatmap")
    num_layers, num_heads = w.shape[:2]
    if head_labels is not None and len(head_labels) != num_heads:
        raise ValueError(
            f"entropy_heatmap: head_labels needs {num_heads} names, received {len(head_labels)}"
        )
    ent = head_entropy(w)
    labels = [[""] * num_heads for _ in range(num_layers)]
    if w.shape[2] == w.shape[3]:
        for row in head_summary(w, tokens):
            labels[row["layer"]][row["head"]] = HEAD_LABELS[row["label"]]
    top = float(np.log(w.shape[3])) or 1.0
    figsize = (1.4 + 0.55 * num_heads, 1.0 + 0.45 * num_layers)
    with style.style_context():
        fig, axis = style.target_axes(ax, figsize)
        image = axis.imshow(ent, cmap=style.ENTROPY_CMAP, vmin=0.0, vmax=top, aspect="auto")
        axis.set_xticks(range(num_heads))
        if head_labels is not None:
            axis.set_xticklabels(list(head_labels), fontsize=7, rotation=45)
        axis.set_yticks(range(num_layers))
        axis.set_xlabel("head")
        axis.set_ylabel("layer")
        axis.tick_params(length=0)
        for spine in axis.spines.values():
            spine.set_visible(False)
        for layer in range(num_layers):
            for head in range(num_heads):
                value = float(ent[layer, head])
                text = "-" if np.isnan(value) else f"{value:.2f}"
                if labels[layer][head]:
                    text += "\n" + labels[layer][head]
                color = "#ffffff" if np.isnan(value) or value < 0.6 * top else "#000000"
                axis.text(head, layer, text, ha="center", va="center", fontsize=6, color=color)
        axis.set_title(title or "mean attention entropy (nats) per head")
        bar = fig.colorbar(image, ax=axis, fraction=0.04, pad=0.02)
        bar.set_label(f"nats (max log {w.shape[3]} = {top:.2f})", fontsize=7)
        bar.ax.tick_params(labelsize=7)
        bar.outline.set_visible(False)
    style.save_figure(fig, path)
    return fig
