"""Attention: single-query RNN attention (Bahdanau, Luong) and the re-exported multi-head core.

Owns :class:`AdditiveAttention` (Bahdanau et al., 2015), :class:`DotAttention` and
:class:`GeneralAttention` (Luong et al., 2015) — one decoder query against all encoder states —
and re-exports :func:`scaled_dot_product`, :class:`MultiHeadAttention`, :class:`KVCache` and
:func:`kv_caches` from :mod:`dhian.nn.mha` so callers import everything from here.

Shared interface of the single-query attentions:
``precompute_keys(keys (B, Tk, Dk)) -> proj_keys`` (done once per source sentence) and
``forward(query (B, Dq), keys (B, Tk, Dk), values (B, Tk, Dv), mask (B, Tk) bool | None,
proj_keys=None) -> (context (B, Dv), weights (B, Tk))``. Mask: True = real token; masked keys
get weight exactly 0; a fully masked row gives zero weights and a zero context.

Notation: B batch, Tk source length, Dq/Dk/Dv query/key/value sizes.
Imports: torch, :mod:`dhian.nn.mha`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dhian.nn.mha import KVCache, MultiHeadAttention, kv_caches, scaled_dot_product

__all__ = [
    "AdditiveAttention",
    "DotAttention",
    "GeneralAttention",
    "KVCache",
    "MultiHeadAttention",
    "kv_caches",
    "masked_softmax",
    "scaled_dot_product",
]


def masked_softmax(scores: Tensor, mask: Tensor | None, dim: int = -1) -> Tensor:
    """Softmax of ``scores`` over ``dim`` where ``mask`` (bool, True = keep, broadcastable) is
    True; masked entries get exactly 0 and fully masked rows are all zero (no NaN)."""
    if mask is None:
        return torch.softmax(scores, dim=dim)
    keep = mask.any(dim=dim, keepdim=True)
    mask = mask | ~keep  # fully masked rows: softmax over everything, zeroed below
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=dim)
    return weights.masked_fill(~(mask & keep), 0.0)


class _SingleQueryAttention(nn.Module):
    """Shared checks and the weighted sum; subclasses define the score."""

    def precompute_keys(self, keys: Tensor) -> Tensor:
        """Project keys (B, Tk, Dk) once per source; pass the result back as ``proj_keys``."""
        raise NotImplementedError

    def _scores(self, query: Tensor, proj_keys: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(
        self,
        query: Tensor,
        keys: Tensor,
        values: Tensor,
        mask: Tensor | None = None,
        proj_keys: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """query (B, Dq), keys (B, Tk, Dk), values (B, Tk, Dv), mask (B, Tk) bool →
        context (B, Dv), weights (B, Tk)."""
        name = type(self).__name__
        if query.dim() != 2:
            raise ValueError(f"{name}: expected query (B, Dq), received {tuple(query.shape)}")
        b = query.size(0)
        if keys.dim() != 3 or keys.size(0) != b:
            raise ValueError(f"{name}: expected keys ({b}, Tk, Dk), received {tuple(keys.shape)}")
        tk = keys.size(1)
        if values.dim() != 3 or values.shape[:2] != (b, tk):
            raise ValueError(
                f"{name}: expected values ({b}, {tk}, Dv), received {tuple(values.shape)}"
            )
        if mask is not None and (mask.shape != (b, tk) or mask.dtype != torch.bool):
            raise ValueError(
                f"{name}: expected a bool mask ({b}, {tk}), received "
                f"{tuple(mask.shape)} {mask.dtype}"
            )
        if proj_keys is None:
            proj_keys = self.precompute_keys(keys)
        elif proj_keys.shape[:2] != (b, tk):
            raise ValueError(
                f"{name}: expected proj_keys ({b}, {tk}, ...), received {tuple(proj_keys.shape)}"
            )
        weights = masked_softmax(self._scores(query, proj_keys), mask)  # (B, Tk)
        context = torch.bmm(weights.unsqueeze(1), values).squeeze(1)  # (B, 1, Dv) -> (B, Dv)
        return context, weights


class AdditiveAttention(_SingleQueryAttention):
    """Bahdanau attention: score(q, k) = vᵀ tanh(W_q q + W_k k + b).

    ``query_proj`` (Dq → hidden, no bias), ``key_proj`` (Dk → hidden, with bias),
    ``energy`` (hidden → 1, no bias). ``precompute_keys`` returns W_k k + b (B, Tk, hidden).
    """

    def __init__(self, query_dim: int, key_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.query_proj = nn.Linear(query_dim, hidden_dim, bias=False)
        self.key_proj = nn.Linear(key_dim, hidden_dim)
        self.energy = nn.Linear(hidden_dim, 1, bias=False)

    def precompute_keys(self, keys: Tensor) -> Tensor:
        """keys (B, Tk, Dk) → W_k keys + b (B, Tk, hidden)."""
        return self.key_proj(keys)

    def _scores(self, query: Tensor, proj_keys: Tensor) -> Tensor:
        hidden = torch.tanh(self.query_proj(query).unsqueeze(1) + proj_keys)  # (B, Tk, hidden)
        return self.energy(hidden).squeeze(-1)  # (B, Tk, 1) -> (B, Tk)


class DotAttention(_SingleQueryAttention):
    """Luong "dot": score(q, k) = qᵀ k (needs Dq == Dk). No parameters."""

    def precompute_keys(self, keys: Tensor) -> Tensor:
        """Identity: keys (B, Tk, Dk)."""
        return keys

    def _scores(self, query: Tensor, proj_keys: Tensor) -> Tensor:
        if proj_keys.size(-1) != query.size(-1):
            raise ValueError(
                f"DotAttention: query (B, {query.size(-1)}) and keys (B, Tk, "
                f"{proj_keys.size(-1)}) must have the same size"
            )
        return torch.bmm(proj_keys, query.unsqueeze(-1)).squeeze(-1)  # (B, Tk, 1) -> (B, Tk)


class GeneralAttention(_SingleQueryAttention):
    """Luong "general": score(q, k) = qᵀ W k, with ``proj`` = W (Dk → Dq, no bias)."""

    def __init__(self, query_dim: int, key_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(key_dim, query_dim, bias=False)

    def precompute_keys(self, keys: Tensor) -> Tensor:
        """keys (B, Tk, Dk) → W keys (B, Tk, Dq)."""
        return self.proj(keys)

    def _scores(self, query: Tensor, proj_keys: Tensor) -> Tensor:
        return torch.bmm(proj_keys, query.unsqueeze(-1)).squeeze(-1)  # (B, Tk, 1) -> (B, Tk)
