"""The attention viewer's data format: tokens plus quantised, compressed weight tensors.

Owns :func:`attention_payload` (build the JSON-ready dict the HTML viewer renders, also what a
web API should return) and :func:`decode_weights` (its inverse, for tests and servers).

Format (version 1)::

    {"version": 1, "title": str, "meta": {...}, "tokens": {"src": [...], "tgt": [...] | None},
     "kinds": [{"id", "label", "query": "src"|"tgt", "key": "src"|"tgt",
                "layers": L, "heads": H, "tq": Tq, "tk": Tk,
                "encoding": "u16"|"u8sqrt", "compression": "zlib"|"none", "data": base64,
                "head_labels": [H names] (optional, e.g. "h3 (kv1)" for grouped-query heads)}]}

``data`` holds the (L, H, Tq, Tk) weights in C order: ``u16`` = round(w * 65535) little-endian
(error < 1e-5), ``u8sqrt`` = round(sqrt(w) * 255) (error < 0.004, finer near 0; used for large
tensors: 6 layers × 12 heads × 512² tokens). zlib streams are inflated in the browser with the
built-in ``DecompressionStream('deflate')``, so no library is needed.
Imports: numpy, the standard library, :mod:`dhian.viz._arrays` (no model code).
"""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from dhian.viz._arrays import as_layers, check_tokens, to_numpy

__all__ = ["AUTO_U16_MAX_VALUES", "PAYLOAD_VERSION", "attention_payload", "decode_weights"]

PAYLOAD_VERSION = 1
#: "auto" precision keeps 16 bits up to this many values per kind, then 8 bits (sqrt scale).
AUTO_U16_MAX_VALUES = 4_000_000
Precision = Literal["auto", "u16", "u8sqrt"]


def _side_for(name: str, has_tgt: bool) -> str:
    lowered = name.lower()
    if has_tgt and any(word in lowered for word in ("dec", "tgt", "target")):
        return "tgt"
    return "src"


def _kind_label(name: str) -> str:
    lowered = name.lower()
    return name if ("self" in lowered or "attention" in lowered) else f"{name} self-attention"


def _encode(w: np.ndarray, precision: Precision, compress: bool, fn: str) -> dict[str, str]:
    lo, hi = float(w.min()), float(w.max())
    if lo < -1e-6 or hi > 1 + 1e-3:
        raise ValueError(
            f"{fn}: attention weights must lie in [0, 1], received values in [{lo:.4g}, {hi:.4g}]"
        )
    np.clip(w, 0.0, 1.0, out=w)
    if precision == "auto":
        precision = "u16" if w.size <= AUTO_U16_MAX_VALUES else "u8sqrt"
    if precision == "u16":
        raw = np.rint(w * np.float32(65535.0)).astype("<u2").tobytes()
    elif precision == "u8sqrt":
        raw = np.rint(np.sqrt(w) * np.float32(255.0)).astype(np.uint8).tobytes()
    else:
        raise ValueError(
            f"{fn}: precision must be 'auto', 'u16' or 'u8sqrt', received {precision!r}"
        )
    # level 1 on big tensors: ~8% larger, 6x faster than level 6
    data = zlib.compress(raw, 6 if len(raw) < 8_000_000 else 1) if compress else raw
    return {
        "encoding": precision,
        "compression": "zlib" if compress else "none",
        "data": base64.b64encode(data).decode("ascii"),
    }


def decode_weights(kind: Mapping[str, Any]) -> np.ndarray:
    """The (L, H, Tq, Tk) float32 weights of one ``kinds`` entry of a payload."""
    raw = base64.b64decode(kind["data"])
    if kind["compression"] == "zlib":
        raw = zlib.decompress(raw)
    elif kind["compression"] != "none":
        raise ValueError(f"decode_weights: unknown compression {kind['compression']!r}")
    shape = (int(kind["layers"]), int(kind["heads"]), int(kind["tq"]), int(kind["tk"]))
    if kind["encoding"] == "u16":
        values = np.frombuffer(raw, dtype="<u2").astype(np.float32) / 65535.0
    elif kind["encoding"] == "u8sqrt":
        values = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) / 255.0) ** 2
    else:
        raise ValueError(f"decode_weights: unknown encoding {kind['encoding']!r}")
    return values.reshape(shape)


def _as_cross(weights: Any, fn: str, tt: int, ts: int) -> np.ndarray:
    """Cross attention as (L, H, Tt, Ts); a bare (Tt, Ts) matrix (an RNN) becomes (1, 1, Tt, Ts)."""
    if not isinstance(weights, list | tuple):
        arr = to_numpy(weights, np.float32)
        if arr.ndim == 2:
            arr = arr[None, None]
        return as_layers(arr, fn, tt, ts, dtype=np.float32)
    return as_layers(weights, fn, tt, ts, dtype=np.float32)


def attention_payload(
    *,
    tokens_src: Sequence[str],
    tokens_tgt: Sequence[str] | None = None,
    self_attention: Mapping[str, Any] | None = None,
    cross_attention: Any = None,
    title: str = "Attention",
    meta: Mapping[str, Any] | None = None,
    precision: Precision = "auto",
    compress: bool = True,
    head_labels: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """The viewer's data: tokens and every attention kind given, quantised and compressed.

    ``self_attention`` maps a name ("encoder", "decoder", ...) to (L, H, T, T) weights (torch
    or numpy, or a list of (H, T, T)); names containing "dec"/"tgt"/"target" use
    ``tokens_tgt`` when it is given, others ``tokens_src``. ``cross_attention`` is
    (L, H, Tt, Ts), a list of (H, Tt, Ts), or an RNN's (Tt, Ts), and needs ``tokens_tgt``.
    ``meta`` (JSON-serialisable) is shown above the viewer. ``head_labels`` maps a kind name
    (``"cross"`` for cross attention) to one display name per head (the viewer shows them
    instead of "head h"; e.g. which KV head a grouped-query head reads).
    """
    fn = "attention_payload"
    src = check_tokens(tokens_src, "tokens_src", fn)
    tgt = None if tokens_tgt is None else check_tokens(tokens_tgt, "tokens_tgt", fn)
    sides = {"src": src, "tgt": tgt}
    kinds: list[dict[str, Any]] = []
    for name, weights in (self_attention or {}).items():
        side = _side_for(name, tgt is not None)
        toks = sides[side] or src
        where = f"{fn} (self_attention[{name!r}])"
        w = as_layers(weights, where, len(toks), len(toks), dtype=np.float32)
        kinds.append(_kind(name, _kind_label(name), side, side, w, precision, compress, fn))
        _label_heads(kinds[-1], (head_labels or {}).get(name), fn)
    if cross_attention is not None:
        if tgt is None:
            raise ValueError(f"{fn}: cross_attention needs tokens_tgt (the output tokens)")
        w = _as_cross(cross_attention, f"{fn} (cross_attention)", len(tgt), len(src))
        label = "cross-attention (output → source)"
        kinds.append(_kind("cross", label, "tgt", "src", w, precision, compress, fn))
        _label_heads(kinds[-1], (head_labels or {}).get("cross"), fn)
    if not kinds:
        raise ValueError(f"{fn}: give self_attention and/or cross_attention; received neither")
    meta_dict = json.loads(json.dumps(dict(meta or {}), default=str))  # JSON-safe copy
    return {
        "version": PAYLOAD_VERSION,
        "title": str(title),
        "meta": meta_dict,
        "tokens": {"src": src, "tgt": tgt},
        "kinds": kinds,
    }


def _label_heads(entry: dict[str, Any], labels: Sequence[str] | None, fn: str) -> None:
    """Add ``head_labels`` to a kind entry (one string per head)."""
    if labels is None:
        return
    if isinstance(labels, str) or len(labels) != entry["heads"]:
        raise ValueError(
            f"{fn}: head_labels[{entry['id']!r}] needs {entry['heads']} names (one per head), "
            f"received {labels!r}"
        )
    entry["head_labels"] = [str(x) for x in labels]


def _kind(
    kind_id: str,
    label: str,
    query: str,
    key: str,
    w: np.ndarray,
    precision: Precision,
    compress: bool,
    fn: str,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": str(kind_id),
        "label": label,
        "query": query,
        "key": key,
        "layers": int(w.shape[0]),
        "heads": int(w.shape[1]),
        "tq": int(w.shape[2]),
        "tk": int(w.shape[3]),
    }
    entry.update(_encode(w, precision, compress, fn))
    return entry
