"""Transformer blocks: position-wise feed-forward, encoder block, decoder block.

Owns :class:`FeedForward`, :class:`EncoderBlock` and :class:`DecoderBlock` (post-norm as in
Vaswani et al. 2017 / BERT, or pre-norm as in GPT-2 via ``norm_first=True``). Built from plain
ints and floats, or from injected submodules; never from a config. Parameter names are stable
because HF importers map onto them: ``self_attn``, ``cross_attn``, ``ff.linear1``,
``ff.linear2``, ``norm1``, ``norm2``, ``norm3``. Layouts match
``torch.nn.TransformerEncoderLayer`` / ``TransformerDecoderLayer`` (tested by copying weights).

Notation: B batch, T/Tq/Tk lengths (Tt target, Ts source), H heads, E model dim.
Imports: torch, :mod:`dhian.nn.attention`, :mod:`dhian.nn.positional`.
"""

from __future__ import annotations

from torch import Tensor, nn

from dhian.nn.attention import KVCache, MultiHeadAttention
from dhian.nn.positional import RotaryEmbedding

__all__ = ["ACTIVATIONS", "DecoderBlock", "EncoderBlock", "FeedForward", "get_activation"]

ACTIVATIONS = ("relu", "gelu", "gelu_new", "silu")


def get_activation(name: str) -> nn.Module:
    """The activation module called ``name`` (relu | gelu | gelu_new = tanh-approximate | silu)."""
    if name == "relu":
        return nn.ReLU()
    if name == "gelu":
        return nn.GELU()
    if name == "gelu_new":
        return nn.GELU(approximate="tanh")
    if name == "silu":
        return nn.SiLU()
    raise ValueError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")


class FeedForward(nn.Module):
    """linear2(dropout(act(linear1(x)))): (B, T, E) → (B, T, E) through ``hidden`` units."""

    def __init__(
        self, dim: int, hidden: int, dropout: float = 0.0, activation: str = "relu"
    ) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.act = get_activation(activation)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, T, E) → (B, T, E)."""
        return self.linear2(self.dropout(self.act(self.linear1(x))))


def _check_x(name: str, x: Tensor, dim: int) -> None:
    if x.dim() != 3 or x.size(-1) != dim:
        raise ValueError(f"{name}: expected x of shape (B, T, {dim}), received {tuple(x.shape)}")


class EncoderBlock(nn.Module):
    """Self attention + feed-forward, each with residual, dropout and LayerNorm.

    Post-norm (default): x = norm1(x + drop(attn(x))); x = norm2(x + drop(ff(x))).
    Pre-norm (``norm_first``): x = x + drop(attn(norm1(x))); x = x + drop(ff(norm2(x))).
    ``attn_dropout`` defaults to ``dropout``.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        ff_dim: int,
        dropout: float = 0.1,
        norm_first: bool = False,
        activation: str = "relu",
        layer_norm_eps: float = 1e-5,
        attn_dropout: float | None = None,
        *,
        bias: bool = True,
        rotary: RotaryEmbedding | None = None,
        self_attn: MultiHeadAttention | None = None,
        ff: FeedForward | None = None,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.norm_first = norm_first
        adrop = dropout if attn_dropout is None else attn_dropout
        self.self_attn = self_attn or MultiHeadAttention(embed_dim, num_heads, adrop, bias, rotary)
        self.ff = ff or FeedForward(embed_dim, ff_dim, dropout, activation)
        self.norm1 = nn.LayerNorm(embed_dim, eps=layer_norm_eps)
        self.norm2 = nn.LayerNorm(embed_dim, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, mask: Tensor | None = None, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """x (B, T, E), mask bool broadcastable to (B, H, T, T) (e.g. padding (B, 1, 1, T)) →
        (x (B, T, E), self-attention weights (B, H, T, T) | None)."""
        _check_x("EncoderBlock", x, self.embed_dim)
        if self.norm_first:
            a, w = self.self_attn(self.norm1(x), mask=mask, need_weights=need_weights)
            x = x + self.dropout(a)
            x = x + self.dropout(self.ff(self.norm2(x)))
        else:
            a, w = self.self_attn(x, mask=mask, need_weights=need_weights)
            x = self.norm1(x + self.dropout(a))
            x = self.norm2(x + self.dropout(self.ff(x)))
        return x, w


class DecoderBlock(nn.Module):
    """Causal self attention, cross attention over ``memory`` (optional) and feed-forward.

    ``cross_attention=False`` builds no ``cross_attn``/``norm3`` (decoder-only LMs: GPT); then
    the feed-forward norm is ``norm2``. With cross attention the norms are norm1 (self),
    norm2 (cross), norm3 (feed-forward). Post-norm or pre-norm as in :class:`EncoderBlock`.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        ff_dim: int,
        dropout: float = 0.1,
        norm_first: bool = False,
        activation: str = "relu",
        layer_norm_eps: float = 1e-5,
        attn_dropout: float | None = None,
        cross_attention: bool = True,
        *,
        bias: bool = True,
        rotary: RotaryEmbedding | None = None,
        self_attn: MultiHeadAttention | None = None,
        cross_attn: MultiHeadAttention | None = None,
        ff: FeedForward | None = None,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.norm_first = norm_first
        adrop = dropout if attn_dropout is None else attn_dropout
        self.self_attn = self_attn or MultiHeadAttention(embed_dim, num_heads, adrop, bias, rotary)
        self.cross_attn: MultiHeadAttention | None = None
        if cross_attention:
            self.cross_attn = cross_attn or MultiHeadAttention(embed_dim, num_heads, adrop, bias)
        self.ff = ff or FeedForward(embed_dim, ff_dim, dropout, activation)
        self.norm1 = nn.LayerNorm(embed_dim, eps=layer_norm_eps)
        self.norm2 = nn.LayerNorm(embed_dim, eps=layer_norm_eps)
        self.norm3 = nn.LayerNorm(embed_dim, eps=layer_norm_eps) if cross_attention else None
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        self_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        need_weights: bool = False,
        self_cache: KVCache | None = None,
        cross_cache: KVCache | None = None,
        causal: bool = True,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """x (B, Tt, E), memory (B, Ts, E) → (x (B, Tt, E), self weights (B, H, Tt, Tk) | None,
        cross weights (B, H, Tt, Ts) | None).

        ``causal`` (default True) applies the causal mask inside self attention, offset by the
        cache length; ``self_mask`` (e.g. target padding) is ANDed with it. ``memory_mask``:
        source padding (B, 1, 1, Ts). ``self_cache`` (non-static) / ``cross_cache`` (static)
        enable incremental decoding; once ``cross_cache`` holds k/v, ``memory`` may be None.
        """
        _check_x("DecoderBlock", x, self.embed_dim)
        cross_w: Tensor | None = None
        if self.cross_attn is None and memory is not None:
            raise ValueError("DecoderBlock: built with cross_attention=False but memory was given")
        if (
            self.cross_attn is not None
            and memory is None
            and (cross_cache is None or cross_cache.k is None)
        ):
            raise ValueError(
                "DecoderBlock: cross attention needs memory (B, Ts, E) or a filled cross_cache"
            )
        h = self.norm1(x) if self.norm_first else x
        a, self_w = self.self_attn(
            h, mask=self_mask, need_weights=need_weights, cache=self_cache, causal=causal
        )
        x = x + self.dropout(a) if self.norm_first else self.norm1(x + self.dropout(a))
        if self.cross_attn is not None:
            h = self.norm2(x) if self.norm_first else x
            a, cross_w = self.cross_attn(
                h, memory, mask=memory_mask, need_weights=need_weights, cache=cross_cache
            )
            x = x + self.dropout(a) if self.norm_first else self.norm2(x + self.dropout(a))
        ff_norm = self.norm3 if self.norm3 is not None else self.norm2
        if self.norm_first:
            x = x + self.dropout(self.ff(ff_norm(x)))
        else:
            x = ff_norm(x + self.dropout(self.ff(x)))
        return x, self_w, cross_w
