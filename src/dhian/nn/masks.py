"""Boolean attention masks: one convention everywhere.

Owns mask construction. Convention: a ``torch.bool`` tensor, **True = may attend**,
broadcastable to (B, H, Tq, Tk). A row with no True (a fully masked query) yields an all-zero
weight row and a zero output in :func:`dhian.nn.attention.scaled_dot_product` — never NaN.

Notation: B batch, H heads, T/Tq/Tk lengths.
Imports: torch only.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["as_key_mask", "causal_mask", "combine", "padding_mask"]


def padding_mask(
    lengths_or_ids: Tensor, pad_id: int | None = None, max_len: int | None = None
) -> Tensor:
    """Key-padding mask (B, 1, 1, Tk), True at real tokens.

    ``lengths_or_ids`` is either lengths (B,) (then ``Tk = max_len`` or ``lengths.max()``) or
    token ids (B, Tk) together with ``pad_id`` (True where ``ids != pad_id``).
    """
    if lengths_or_ids.dim() == 1:
        lengths = lengths_or_ids.long()
        tk = int(lengths.max().item()) if max_len is None else int(max_len)
        if lengths.numel() and max_len is not None and int(lengths.max().item()) > tk:
            raise ValueError(
                f"padding_mask: a length {int(lengths.max().item())} exceeds max_len={tk}"
            )
        pos = torch.arange(tk, device=lengths.device)  # (Tk,)
        mask = pos.unsqueeze(0) < lengths.unsqueeze(1)  # (B, Tk)
    elif lengths_or_ids.dim() == 2:
        if pad_id is None:
            raise ValueError(
                "padding_mask: ids of shape (B, T) need pad_id "
                f"(received ids of shape {tuple(lengths_or_ids.shape)})"
            )
        mask = lengths_or_ids != pad_id  # (B, Tk)
        if max_len is not None and mask.size(1) != max_len:
            raise ValueError(
                f"padding_mask: expected ids of length max_len={max_len}, "
                f"received shape {tuple(lengths_or_ids.shape)}"
            )
    else:
        raise ValueError(
            "padding_mask: expected lengths (B,) or ids (B, T), "
            f"received shape {tuple(lengths_or_ids.shape)}"
        )
    return mask[:, None, None, :]  # (B, 1, 1, Tk)


def as_key_mask(mask: Tensor) -> Tensor:
    """Turn a (B, Tk) bool token mask (True = real token) into a (B, 1, 1, Tk) key mask."""
    if mask.dim() != 2:
        raise ValueError(
            f"as_key_mask: expected a (B, Tk) mask, received shape {tuple(mask.shape)}"
        )
    return mask.bool()[:, None, None, :]  # (B, 1, 1, Tk)


def causal_mask(
    tq: int,
    device: torch.device | str | None = None,
    *,
    tk: int | None = None,
    offset: int | None = None,
) -> Tensor:
    """Causal mask (1, 1, Tq, Tk): query i (absolute position ``offset + i``) sees keys ≤ it.

    Defaults: ``tk = tq`` and ``offset = 0`` (the square mask). For cached decoding give the
    total key length ``tk`` (then ``offset = tk - tq``: the queries are the last ``tq``
    positions) or the ``offset`` (then ``tk = offset + tq``).
    """
    if tk is None and offset is None:
        tk, offset = tq, 0
    elif tk is None:
        assert offset is not None
        tk = offset + tq
    elif offset is None:
        offset = tk - tq
    if tq < 0 or tk < 0 or offset < 0:
        raise ValueError(f"causal_mask: need tq, tk, offset >= 0, got {tq}, {tk}, {offset}")
    qpos = torch.arange(tq, device=device) + offset  # (Tq,)
    kpos = torch.arange(tk, device=device)  # (Tk,)
    return (kpos.unsqueeze(0) <= qpos.unsqueeze(1))[None, None]  # (1, 1, Tq, Tk)


def combine(*masks: Tensor | None) -> Tensor | None:
    """Logical AND of masks with broadcasting; ``None`` entries are skipped (all None → None)."""
    out: Tensor | None = None
    for m in masks:
        if m is None:
            continue
        if m.dtype != torch.bool:
            raise ValueError(f"combine: masks must be torch.bool, received {m.dtype}")
        out = m if out is None else out & m
    return out
