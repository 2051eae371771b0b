"""Neural building blocks, torch only: masks, attention, positions, transformer blocks.

Takes plain ints and floats, never a config. Notation: B batch, T/Tq/Tk lengths, H heads,
D head dim, E model dim, V vocab. Imports: torch and :mod:`dhian.errors` only.
"""

from __future__ import annotations

from dhian.nn.attention import (
    AdditiveAttention,
    DotAttention,
    GeneralAttention,
    KVCache,
    MultiHeadAttention,
    kv_caches,
    masked_softmax,
    scaled_dot_product,
)
from dhian.nn.blocks import DecoderBlock, EncoderBlock, FeedForward, get_activation
from dhian.nn.masks import as_key_mask, causal_mask, combine, padding_mask
from dhian.nn.positional import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    TokenAndPositionEmbedding,
)

__all__ = [
    "AdditiveAttention",
    "DecoderBlock",
    "DotAttention",
    "EncoderBlock",
    "FeedForward",
    "GeneralAttention",
    "KVCache",
    "LearnedPositionalEmbedding",
    "MultiHeadAttention",
    "RotaryEmbedding",
    "SinusoidalPositionalEncoding",
    "TokenAndPositionEmbedding",
    "as_key_mask",
    "causal_mask",
    "combine",
    "get_activation",
    "kv_caches",
    "masked_softmax",
    "padding_mask",
    "scaled_dot_product",
]
