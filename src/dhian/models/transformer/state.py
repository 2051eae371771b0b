"""The decoder state of :class:`~dhian.models.transformer.TransformerSeq2Seq` and its two
operations: :func:`static_kv` (project the encoder output to one layer's cross-attention
keys/values once) and :func:`reorder_state` (beam search following beams, finished sentences
leaving the batch).

Notation: N decoder rows, Ts/t source length / tokens fed, H heads, D head dim, E model dim.
Imports: torch, :mod:`dhian.nn`.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor

from dhian.nn.attention import KVCache, MultiHeadAttention

__all__ = ["TransformerState", "reorder_state", "static_kv"]


@dataclasses.dataclass
class TransformerState:
    """Decoder state of N rows (sentences × beams).

    ``self_caches``: one growing self-attention :class:`KVCache` per decoder layer, k/v
    (N, H, t, D) after t steps; ``cross_caches``: one static cache per layer, k/v (N, H, Ts, D)
    projected from the encoder output in ``start``; ``memory_mask`` (N, 1, 1, Ts) bool (True =
    real source token) or None when no source is padded; ``src_lengths`` (N,); ``length`` = t,
    the number of target tokens fed so far (= the position of the next one); ``sources`` (N,)
    the encoded sentence each row's cross cache, mask and length belong to (None: unknown).
    Rows of the same sentence hold identical copies, so a reorder that keeps every row's
    sentence (beam search following its beams) leaves them alone instead of copying.
    """

    self_caches: list[KVCache]
    cross_caches: list[KVCache]
    memory_mask: Tensor | None
    src_lengths: Tensor
    length: int = 0
    sources: Tensor | None = None


def static_kv(attn: MultiHeadAttention, memory: Tensor) -> KVCache:
    """Project ``memory`` (N, Ts, E) to cross-attention keys/values once: a filled static cache.

    Uses the documented fused layout ``in_proj_weight`` = [W_q; W_k; W_v] (3E, E), i.e. exactly
    what :class:`MultiHeadAttention` computes on its first call with an empty static cache.
    """
    n, ts, e = memory.shape
    bias = None if attn.in_proj_bias is None else attn.in_proj_bias[e:]  # (2E,)
    k, v = F.linear(memory, attn.in_proj_weight[e:], bias).split(e, dim=-1)  # 2 x (N, Ts, E)
    h, d = attn.num_heads, attn.head_dim
    k = k.view(n, ts, h, d).transpose(1, 2)  # (N, Ts, H, D) -> (N, H, Ts, D)
    v = v.view(n, ts, h, d).transpose(1, 2)  # (N, Ts, H, D) -> (N, H, Ts, D)
    return KVCache(k, v, static=True)


def reorder_state(state: TransformerState, index: Tensor) -> TransformerState:
    """Keep rows ``index`` (N',) of every cache, the memory mask and the lengths.

    The self caches are gathered in place every time; the source side (cross caches, memory
    mask, lengths) only when some row changes sentence (see :class:`TransformerState`)."""
    index = index.to(state.src_lengths.device)
    for cache in state.self_caches:
        cache.reorder(index)  # (N', H, t, D)
    if state.sources is not None:
        sources = state.sources.index_select(0, index)  # (N',)
        if torch.equal(sources, state.sources):
            return state  # every row keeps its sentence: the source side is already right
    else:
        sources = None
    for cache in state.cross_caches:
        cache.reorder(index)  # (N', H, Ts, D)
    mask = None if state.memory_mask is None else state.memory_mask.index_select(0, index)
    lengths = state.src_lengths.index_select(0, index)  # (N',)
    return TransformerState(
        state.self_caches, state.cross_caches, mask, lengths, state.length, sources
    )
