"""Logits processors for sampling: small pure functions on (B, V) scores.

Owns :func:`apply_temperature`, :func:`top_k_filter`, :func:`top_p_filter` (with its float
slack :data:`TOP_P_TOLERANCE`) and :func:`apply_repetition_penalty`;
:func:`dhian.decoding.sampling.generate` applies them (and re-exports them). Scores in, scores out; ``-inf`` = never picked.

Notation: B batch, T length, V vocab.
Imports: torch only.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "TOP_P_TOLERANCE",
    "apply_repetition_penalty",
    "apply_temperature",
    "top_k_filter",
    "top_p_filter",
]

#: Relative slack of :func:`top_p_filter` for float rounding of cumulative probabilities.
TOP_P_TOLERANCE = 1e-6


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """``logits / temperature`` (B, V); temperature must be > 0 (0 means greedy: use argmax)."""
    if temperature <= 0.0:
        raise ValueError(f"apply_temperature: temperature must be > 0, got {temperature}")
    return logits if temperature == 1.0 else logits / temperature


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep the ``k`` highest scores per row (ties with the k-th are kept), others → -inf.

    logits (B, V) → (B, V). ``k <= 0`` or ``k >= V`` keeps everything.
    """
    if k <= 0 or k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Nucleus filter: keep the smallest set of highest-probability tokens whose total
    probability is ≥ ``p`` (at least one token); others → -inf.

    logits (B, V) → (B, V). A token is kept when the probability of the tokens ranked above it
    is < p (with a relative slack of :data:`TOP_P_TOLERANCE` for float rounding), e.g. probs
    [0.5, 0.3, 0.15, 0.05] keep 2 tokens for p = 0.8 and 3 for p = 0.81. ``p >= 1`` keeps all.
    """
    if not p > 0.0:
        raise ValueError(f"top_p_filter: p must be in (0, 1], got {p}")
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
    probs = torch.softmax(sorted_logits.double(), dim=-1)  # (B, V)
    before = torch.cumsum(probs, dim=-1) - probs  # (B, V): mass ranked strictly above
    keep_sorted = before < p * (1.0 - TOP_P_TOLERANCE)  # (B, V); first column always True
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)  # (B, V)
    return logits.masked_fill(~keep, float("-inf"))


def apply_repetition_penalty(
    logits: Tensor, previous: Tensor, penalty: float, mask: Tensor | None = None
) -> Tensor:
    """CTRL-style penalty (Keskar et al., 2019) on tokens already seen.

    logits (B, V); ``previous`` (B, T) long ids of the prompt and the tokens generated so far;
    ``mask`` (B, T) bool, True = a real token (pads of left-padded rows are ignored). For every
    seen token a positive score is divided by ``penalty`` and a negative one multiplied by it,
    so ``penalty > 1`` makes repeats less likely. ``penalty == 1`` is the identity.
    """
    if penalty <= 0.0:
        raise ValueError(f"apply_repetition_penalty: penalty must be > 0, got {penalty}")
    if penalty == 1.0 or previous.numel() == 0:
        return logits
    weight = torch.ones_like(previous, dtype=torch.long) if mask is None else mask.long()
    counts = torch.zeros(logits.shape, dtype=torch.long, device=logits.device)  # (B, V)
    counts.scatter_add_(-1, previous.long(), weight)  # (B, V)
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)  # (B, V)
    return torch.where(counts > 0, penalised, logits)
