"""The inference form of an :class:`~dhian.nn.blocks.EncoderBlock` on fused oneDNN linears.

Owns :class:`FusedEncoderBlock`: built from a float encoder block (post-norm as in BERT, or
pre-norm), it computes the same function with four :class:`~dhian.nn.fused_linear.FusedLinear`
calls per layer — the fused q/k/v projection, the output projection with the residual add
fused in, the first feed-forward linear with its GELU/ReLU/SiLU fused in, the second with the
residual add fused in — plus attention (:func:`~dhian.nn.mha.scaled_dot_product`: one SDPA
call, or the eager weights path when asked for weights) and the two LayerNorms.

``int8``: the four linears are int8 (dynamic per-tensor uint8 activations, per-row int8
weights); attention, LayerNorms and the residual stream stay float32 (attention in bf16 was
measured too: 10% less work on BERT-base, but 0.3 points of test accuracy lost on Rotten
Tomatoes, see docs/speed.md). ``bf16``: the linears,
attention and norms run in bf16 (the model's own dtype after ``--dtype bf16``); ``fp32``:
prepacked float32 linears. No dropout, no KV cache, no rotary positions: encoder inference only.

Notation: B batch, T length, H heads, D head dim, E model dim, F feed-forward dim.
Imports: torch, :mod:`dhian.nn.blocks`, :mod:`dhian.nn.mha`, :mod:`dhian.nn.fused_linear`.
"""

from __future__ import annotations

from torch import Tensor, nn

from dhian.nn.blocks import EncoderBlock
from dhian.nn.fused_linear import FusedLinear
from dhian.nn.mha import scaled_dot_product

__all__ = ["FusedEncoderBlock", "fusable_activation"]


def fusable_activation(act: nn.Module) -> str | None:
    """The :class:`FusedLinear` post-op of a feed-forward activation module (``gelu``,
    ``gelu_tanh``, ``relu``, ``silu``), or None when it has none (applied separately)."""
    if isinstance(act, nn.GELU):
        return "gelu_tanh" if act.approximate == "tanh" else "gelu"
    if isinstance(act, nn.ReLU):
        return "relu"
    if isinstance(act, nn.SiLU):
        return "silu"
    return None


class FusedEncoderBlock(nn.Module):
    """An :class:`EncoderBlock` for inference with fused ``mode`` linears (``int8`` | ``bf16``
    | ``fp32``); same ``forward`` as the block it was made from (see the module docstring)."""

    def __init__(self, block: EncoderBlock, mode: str) -> None:
        super().__init__()
        attn = block.self_attn
        if attn.rotary is not None:
            raise ValueError("FusedEncoderBlock: rotary attention is not supported; keep the block")
        self.mode = mode
        self.embed_dim = block.embed_dim
        self.num_heads = attn.num_heads
        self.head_dim = attn.head_dim
        self.norm_first = block.norm_first
        self.qkv = FusedLinear(attn.in_proj_weight, attn.in_proj_bias, mode)
        self.out_proj = FusedLinear.from_float(attn.out_proj, mode)
        self.linear1 = FusedLinear.from_float(block.ff.linear1, mode)
        self.linear2 = FusedLinear.from_float(block.ff.linear2, mode)
        self.post_op = fusable_activation(block.ff.act)
        self.act = block.ff.act  # used only when post_op is None
        self.norm1, self.norm2 = block.norm1, block.norm2

    def _ff_hidden(self, x: Tensor) -> Tensor:
        """x (B, T, E) → act(linear1(x)) (B, T, F)."""
        if self.post_op is not None:
            return self.linear1(x, activation=self.post_op)
        return self.act(self.linear1(x))

    def _attention(
        self, x: Tensor, mask: Tensor | None, need_weights: bool
    ) -> tuple[Tensor, Tensor | None]:
        """x (B, T, E) → context (B, T, E) before the output projection, weights."""
        b, t, e = x.shape
        qkv = self.qkv(x, out_dtype=x.dtype)  # (B, T, 3E)
        qkv = qkv.view(b, t, 3, self.num_heads, self.head_dim)  # (B, T, 3, H, D)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, T, D)
        out, weights = scaled_dot_product(q, k, v, mask=mask, need_weights=need_weights)
        return out.transpose(1, 2).reshape(b, t, e), weights  # (B, T, H, D) -> (B, T, E)

    def forward(
        self, x: Tensor, mask: Tensor | None = None, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """x (B, T, E), mask bool broadcastable to (B, H, T, T) → (x (B, T, E), weights
        (B, H, T, T) | None), as :meth:`EncoderBlock.forward` in eval mode."""
        if x.dim() != 3 or x.size(-1) != self.embed_dim:
            raise ValueError(
                f"FusedEncoderBlock: expected x of shape (B, T, {self.embed_dim}), "
                f"received {tuple(x.shape)}"
            )
        if self.norm_first:
            ctx, w = self._attention(self.norm1(x), mask, need_weights)
            x = self.out_proj(ctx, residual=x)
            x = self.linear2(self._ff_hidden(self.norm2(x)), residual=x)
        else:
            ctx, w = self._attention(x, mask, need_weights)
            x = self.norm1(self.out_proj(ctx, residual=x))
            x = self.norm2(self.linear2(self._ff_hidden(x), residual=x))
        return x, w

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, heads={self.num_heads}, mode={self.mode}"
