"""The inference form of an encoder-decoder :class:`~dhian.nn.blocks.DecoderBlock` on fused
oneDNN linears, with the KV caches of incremental decoding.

Owns :class:`FusedDecoderBlock`: built from a float decoder block with cross attention
(post-norm as in Marian / the paper, or pre-norm), it computes the same function with five
:class:`~dhian.nn.fused_linear.FusedLinear` calls per layer and step — the fused q/k/v
projection of self attention, its output projection with the residual add fused in, the
cross-attention query projection, its output projection with the residual add fused in, the
first feed-forward linear with its activation fused in (GELU, ReLU, SiLU = oneDNN ``swish``)
and the second with the residual add fused in — plus attention
(:func:`~dhian.nn.mha.scaled_dot_product`) and the three LayerNorms. The cross-attention
keys/values are projected from the encoder output once per sentence (:meth:`static_kv`, one
GEMM per layer), never per step.

``int8``: the six per-step linears are int8 (dynamic per-tensor uint8 activations, per-row
int8 weights, :class:`~dhian.nn.fused_linear.FusedLinear`); the once-per-sentence
cross-attention key/value projection stays float32 (prepacked; it costs nothing per step and
keeps the keys exact), and attention, LayerNorms and the residual stream stay float32.
``bf16``: everything in bf16 (the model's own dtype after ``--dtype bf16``), the linears
prepacked for oneDNN (AMX where the CPU has it). ``fp32``: prepacked float32 linears. No
dropout, no rotary positions: inference only.

The self-attention cache is a :class:`~dhian.nn.mha.KVCache` exactly as the float block uses
it (k/v (B, H, T, D), grown by one position per step), so decoding code and ``reorder`` are
unchanged. (Preallocated caches written in place were measured and did not pay here: the
concatenation of (N, H, T, D) caches with T ≤ 30 is a few percent of a step, and beam search
gathers the whole cache every step anyway; see docs/speed.md.)

Notation: B batch, Tq query length, Tk key length (cached + new), Ts source length, H heads,
D head dim, E model dim, F feed-forward dim.
Imports: torch, :mod:`dhian.nn.blocks`, :mod:`dhian.nn.mha`, :mod:`dhian.nn.masks`,
:mod:`dhian.nn.fused_linear`, :mod:`dhian.nn.fused_encoder`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dhian.nn.blocks import DecoderBlock
from dhian.nn.fused_encoder import fusable_activation
from dhian.nn.fused_linear import FusedLinear
from dhian.nn.mha import KVCache, causal_attention_mask, scaled_dot_product

__all__ = ["FusedDecoderBlock"]


class FusedDecoderBlock(nn.Module):
    """A :class:`DecoderBlock` (with cross attention) for inference with fused ``mode`` linears
    (``int8`` | ``bf16`` | ``fp32``); same ``forward`` as the block it was made from, plus
    :meth:`static_kv` for the cross-attention cache (see the module docstring)."""

    def __init__(self, block: DecoderBlock, mode: str) -> None:
        super().__init__()
        attn, cross = block.self_attn, block.cross_attn
        if cross is None or block.norm3 is None:
            raise ValueError("FusedDecoderBlock: the block has no cross attention; keep it")
        if attn.rotary is not None:
            raise ValueError("FusedDecoderBlock: rotary attention is not supported; keep the block")
        e = block.embed_dim
        self.mode = mode
        self.embed_dim = e
        self.num_heads = attn.num_heads
        self.head_dim = attn.head_dim
        self.norm_first = block.norm_first
        self.qkv = FusedLinear(attn.in_proj_weight, attn.in_proj_bias, mode)
        self.out_proj = FusedLinear.from_float(attn.out_proj, mode)
        cw, cb = cross.in_proj_weight, cross.in_proj_bias  # (3E, E), (3E,)
        self.cross_q = FusedLinear(cw[:e], None if cb is None else cb[:e], mode)
        kv_mode = "fp32" if mode == "int8" else mode  # once per sentence: keep it exact
        self.cross_kv = FusedLinear(cw[e:], None if cb is None else cb[e:], kv_mode)
        self.cross_out = FusedLinear.from_float(cross.out_proj, mode)
        self.linear1 = FusedLinear.from_float(block.ff.linear1, mode)
        self.linear2 = FusedLinear.from_float(block.ff.linear2, mode)
        self.post_op = fusable_activation(block.ff.act)
        self.act = block.ff.act  # used only when post_op is None
        self.norm1, self.norm2, self.norm3 = block.norm1, block.norm2, block.norm3

    def _heads(self, x: Tensor, parts: int) -> tuple[Tensor, ...]:
        """x (B, T, parts·E) → ``parts`` tensors (B, H, T, D) (views, no copy)."""
        b, t, _ = x.shape
        x = x.view(b, t, parts, self.num_heads, self.head_dim)  # (B, T, parts, H, D)
        return tuple(x.permute(2, 0, 3, 1, 4).unbind(0))  # parts x (B, H, T, D)

    def _memory_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """``memory`` (B, Ts, E) → cross-attention keys, values (B, H, Ts, D)."""
        kv = self.cross_kv(memory.to(self.cross_kv.packed.dtype))  # (B, Ts, 2E)
        k, v = self._heads(kv.to(memory.dtype), 2)  # 2 x (B, H, Ts, D)
        return k, v

    def static_kv(self, memory: Tensor) -> KVCache:
        """The filled static cross-attention cache of ``memory`` (B, Ts, E): k/v (B, H, Ts, D)."""
        k, v = self._memory_kv(memory)
        return KVCache(k, v, static=True)

    def _ff_hidden(self, x: Tensor) -> Tensor:
        """x (B, T, E) → act(linear1(x)) (B, T, F)."""
        if self.post_op is not None:
            return self.linear1(x, activation=self.post_op)
        return self.act(self.linear1(x))

    def _self_attention(
        self,
        h: Tensor,
        mask: Tensor | None,
        need_weights: bool,
        cache: KVCache | None,
        causal: bool,
    ) -> tuple[Tensor, Tensor | None]:
        """h (B, Tq, E) → context (B, Tq, E) before the output projection, weights
        (B, H, Tq, Tk) | None; appends this step's k/v to ``cache``."""
        b, tq, e = h.shape
        q, k, v = self._heads(self.qkv(h, out_dtype=h.dtype), 3)  # 3 x (B, H, Tq, D)
        if cache is not None:
            if cache.k is not None and cache.v is not None:
                k = torch.cat([cache.k, k], dim=2)  # (B, H, T + Tq, D)
                v = torch.cat([cache.v, v], dim=2)  # (B, H, T + Tq, D)
            cache.k, cache.v = k, v
        mask, is_causal = causal_attention_mask(mask, tq, k.size(2), causal, need_weights, h.device)
        out, w = scaled_dot_product(q, k, v, mask, need_weights=need_weights, is_causal=is_causal)
        return out.transpose(1, 2).reshape(b, tq, e), w  # (B, Tq, H, D) -> (B, Tq, E)

    def _cross_attention(
        self,
        h: Tensor,
        memory: Tensor | None,
        mask: Tensor | None,
        need_weights: bool,
        cache: KVCache | None,
    ) -> tuple[Tensor, Tensor | None]:
        """h (B, Tq, E) → context (B, Tq, E) over the source, weights (B, H, Tq, Ts) | None."""
        b, tq, e = h.shape
        (q,) = self._heads(self.cross_q(h, out_dtype=h.dtype), 1)  # (B, H, Tq, D)
        if cache is not None and cache.k is not None and cache.v is not None:
            k, v = cache.k, cache.v
        else:
            if memory is None:
                raise ValueError(
                    "FusedDecoderBlock: cross attention needs memory (B, Ts, E) or a filled "
                    "cross_cache"
                )
            k, v = self._memory_kv(memory)
            if cache is not None:
                cache.k, cache.v = k, v
        if k.size(0) != b:
            raise ValueError(f"FusedDecoderBlock: cached keys have batch {k.size(0)}, query {b}")
        out, w = scaled_dot_product(q, k, v, mask, need_weights=need_weights)
        return out.transpose(1, 2).reshape(b, tq, e), w  # (B, Tq, H, D) -> (B, Tq, E)

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
        cross weights (B, H, Tt, Ts) | None), as :meth:`DecoderBlock.forward` in eval mode."""
        if x.dim() != 3 or x.size(-1) != self.embed_dim:
            raise ValueError(
                f"FusedDecoderBlock: expected x of shape (B, T, {self.embed_dim}), "
                f"received {tuple(x.shape)}"
            )
        pre = self.norm_first
        ctx, self_w = self._self_attention(
            self.norm1(x) if pre else x, self_mask, need_weights, self_cache, causal
        )
        x = self.out_proj(ctx, residual=x)  # x + attention
        x = x if pre else self.norm1(x)
        ctx, cross_w = self._cross_attention(
            self.norm2(x) if pre else x, memory, memory_mask, need_weights, cross_cache
        )
        x = self.cross_out(ctx, residual=x)  # x + cross attention
        x = x if pre else self.norm2(x)
        x = self.linear2(self._ff_hidden(self.norm3(x) if pre else x), residual=x)
        return (x if pre else self.norm3(x)), self_w, cross_w

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, heads={self.num_heads}, mode={self.mode}"
