"""The files of ``dhian attention``: PNG pictures, per-head statistics and one HTML viewer.

Owns :func:`write_attention_report`, which turns an :class:`~dhian.inference.attention_maps.
AttentionResult` into, under ``out_dir``:

- ``cross_attention.png`` — :func:`dhian.viz.alignment_heatmap` of the cross attention (an
  RNN's only matrix; for a transformer ``--layer`` (default: last) and ``--head`` (default: the
  mean of the heads)); ``cross_heads.png`` the layer × head grid of it (transformers);
- ``<kind>_heads.png`` — :func:`dhian.viz.head_grid` of each self-attention kind (encoder,
  decoder), limited to ``layer``/``head`` when given; ``<kind>_entropy.png`` —
  :func:`dhian.viz.entropy_heatmap`; ``cross_entropy.png`` for multi-head cross attention;
- ``<kind>_sink.png`` — :func:`dhian.viz.sink_heatmap` (mean weight on the first token per
  layer × head: the attention sink) of the self attention of a causal LM;
- ``head_summary.json`` — :func:`dhian.viz.head_summary` of every self-attention kind;
- ``attention.html`` — :func:`dhian.viz.write_attention_html`, self-contained, no network.

Notation: L layers, H heads, Tq/Tk query/key length. Imports: numpy, the standard library,
:mod:`dhian.viz`, :mod:`dhian.inference.attention_maps`, :mod:`dhian.errors`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from dhian.errors import ConfigError
from dhian.inference.attention_maps import AttentionResult
from dhian.viz import (
    alignment_heatmap,
    entropy_heatmap,
    head_grid,
    head_summary,
    sink_heatmap,
    write_attention_html,
)

__all__ = ["write_attention_report"]


def _check_index(value: int | None, size: int, what: str, flag: str) -> int | None:
    """``value`` as a non-negative index into ``size`` (negative counts from the end)."""
    if value is None:
        return None
    if not -size <= value < size:
        raise ConfigError(
            f"{flag} {value} is out of range: this model has {size} {what} (0..{size - 1})"
        )
    return value % size


def _heads_and_layers(result: AttentionResult) -> tuple[int, int]:
    """(fewest layers, fewest heads) over the kinds, so one --layer/--head fits them all."""
    shapes = [w.shape for w in result.self_attention.values()]
    if result.cross_attention is not None:
        shapes.append(result.cross_attention.shape)
    return min(s[0] for s in shapes), min(s[1] for s in shapes)


def write_attention_report(
    result: AttentionResult,
    out_dir: str | Path,
    *,
    layer: int | None = None,
    head: int | None = None,
    title: str | None = None,
) -> list[Path]:
    """Write the pictures, ``head_summary.json`` and ``attention.html``; returns their paths.

    ``layer``/``head`` (0-based, negative from the end) select what the PNGs show; the HTML
    always holds every layer and head. Raises :class:`ConfigError` for an index out of range.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    num_layers, num_heads = _heads_and_layers(result)
    layer = _check_index(layer, num_layers, "layers", "--layer")
    head = _check_index(head, num_heads, "heads", "--head")
    written: list[Path] = []
    name = title or f"{result.model_type} attention"

    cross = result.cross_attention
    if cross is not None and result.tokens_tgt is not None:
        li = cross.shape[0] - 1 if layer is None else layer
        matrix = cross[li].mean(axis=0) if head is None else cross[li, head]  # (Tt, Ts)
        what = (
            ""
            if cross.shape[:2] == (1, 1)
            else f" — layer {li}, " + ("mean of heads" if head is None else f"head {head}")
        )
        path = out / "cross_attention.png"
        alignment_heatmap(matrix, result.tokens_src, result.tokens_tgt, path, title=f"{name}{what}")
        written.append(path)
        if cross.shape[:2] != (1, 1):
            path = out / "cross_heads.png"
            head_grid(
                cross,
                result.tokens_tgt,
                result.tokens_src,
                path,
                layers=None if layer is None else [layer],
                heads=None if head is None else [head],
                title=f"{name}: cross attention",
            )
            path2 = out / "cross_entropy.png"
            entropy_heatmap(cross, path2, title=f"{name}: cross-attention entropy")
            written += [path, path2]

    summary: dict[str, list[dict[str, object]]] = {}
    for kind, w in result.self_attention.items():
        tokens = result.tokens_for(kind)
        path = out / f"{kind}_heads.png"
        head_grid(
            w,
            tokens,
            None,
            path,
            layers=None if layer is None else [layer],
            heads=None if head is None else [head],
            title=f"{name}: {kind} self-attention",
            head_labels=result.head_labels,
        )
        path2 = out / f"{kind}_entropy.png"
        entropy_heatmap(
            w,
            path2,
            tokens=tokens,
            title=f"{name}: {kind} self-attention entropy",
            head_labels=result.head_labels,
        )
        written += [path, path2]
        if result.kind == "lm" and len(tokens) >= 2:
            path3 = out / f"{kind}_sink.png"
            sink_heatmap(
                w,
                path3,
                first_token=tokens[0],
                head_labels=result.head_labels,
                title=f"{name}: mean attention on the first token {tokens[0]!r}",
            )
            written.append(path3)
        summary[kind] = head_summary(w, tokens)
    if summary:
        path = out / "head_summary.json"
        text = json.dumps(_finite(summary), indent=1, allow_nan=False)
        path.write_text(text + "\n", encoding="utf-8")
        written.append(path)

    html = write_attention_html(
        out / "attention.html",
        tokens_src=result.tokens_src,
        tokens_tgt=result.tokens_tgt,
        self_attention=result.self_attention or None,
        cross_attention=cross,
        title=name,
        meta=result.meta,
        head_labels=result.labels_by_kind(),
    )
    written.append(html)
    return written


def _finite(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers and NaN/inf as None (strict JSON)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
