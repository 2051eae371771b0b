"""A float :class:`LlamaModel` converted in place for inference in ``fp32``, ``bf16``,
``int8`` or ``int4`` (the ``--dtype`` of a LLaMA model that was not read from a GGUF file's own
blocks, e.g. an HF directory; :mod:`dhian.interop.gguf_quant` builds the same layout straight
from a GGUF file).

Owns :func:`quantize_llama`: q/k/v and gate/up fused (:meth:`LlamaModel.fuse_projections`);
``int4``: every projection an :class:`~dhian.nn.quantized_linear.Int4Linear` (group size 32,
Q4_1 rule), ``int8``: an :class:`~dhian.nn.quantized_linear.Int8Linear` (per output row);
both: the token embedding as :class:`~dhian.nn.quantized_embedding.BlockInt8Embedding`
(symmetric int8 per block of 32) and the LM head as per-row int8; ``int4-fp32``: the same
int4 codes as :class:`~dhian.nn.block_quant.BlockQ4Linear` (float32 math) and the embedding as
a :class:`~dhian.nn.block_quant.BlockQ8Embedding` that a tied head reads too; norms and the
residual stream stay float32. ``bf16``: bf16 weights with float32 math — every projection a
:class:`~dhian.nn.bf16_linear.Bf16Linear`, the embedding a
:class:`~dhian.nn.bf16_linear.Bf16Embedding` that a tied head reads too, norms, activations,
the KV cache and the residual stream float32; ``fp32`` keeps the float32 weights, stored
column-major (:meth:`LlamaModel.column_major_weights`: faster GEMMs).
Imports: torch, :mod:`dhian.errors`, :mod:`dhian.nn.block_quant`, :mod:`dhian.nn.bf16_linear`,
:mod:`dhian.nn.quantized_linear`, :mod:`dhian.nn.quantized_embedding`,
:mod:`dhian.models.llama.model`.
"""

from __future__ import annotations

import torch
from torch import nn

from dhian.errors import ConfigError
from dhian.models.llama.model import LlamaBlock, LlamaModel
from dhian.nn.bf16_linear import Bf16Embedding, Bf16Head, Bf16Linear
from dhian.nn.block_quant import BlockQ4Linear, BlockQ8Embedding, BlockQ8Head
from dhian.nn.quantized_embedding import BLOCK, BlockInt8Embedding
from dhian.nn.quantized_linear import Int4Linear, Int8Linear, quantize_int4

__all__ = ["quantize_llama"]


def _quantized(layer: nn.Module, mode: str) -> nn.Module:
    if not isinstance(layer, nn.Linear):
        return layer  # already quantised
    w = layer.weight.detach().float()
    if mode == "int4-fp32":
        return BlockQ4Linear.from_codes(*quantize_int4(w))
    return Int4Linear.from_float(w) if mode == "int4" else Int8Linear.from_float(w)


def _block_int8(w: torch.Tensor) -> BlockInt8Embedding:
    """Symmetric int8 per block of 32 of a (V, E) float table."""
    blocks = w.float().unflatten(-1, (-1, BLOCK))  # (V, G, 32)
    scales = (blocks.abs().amax(-1) / 127.0).clamp_min(1e-12)  # (V, G)
    codes = (blocks / scales[..., None]).round().clamp(-127, 127).to(torch.int8).flatten(1)
    return BlockInt8Embedding(codes, scales)


def _to_bf16(model: LlamaModel) -> LlamaModel:
    """Every projection a :class:`Bf16Linear`, the embedding a :class:`Bf16Embedding` and the
    LM head its tied :class:`Bf16Head` (or a :class:`Bf16Linear` of its own); layers that
    already are stay as they are."""
    for block in model.layers:
        assert isinstance(block, LlamaBlock)
        attn, mlp = block.self_attn, block.mlp
        for owner, name in (
            (attn, "qkv_proj"),
            (attn, "o_proj"),
            (mlp, "gate_up_proj"),
            (mlp, "down_proj"),
        ):
            layer = getattr(owner, name)
            if isinstance(layer, nn.Linear):
                setattr(owner, name, Bf16Linear.from_float(layer))
    emb, head = model.embed_tokens, model.lm_head
    if isinstance(emb, nn.Embedding):
        tied = isinstance(head, nn.Linear) and head.weight is emb.weight
        model.embed_tokens = Bf16Embedding(emb.weight)
        if tied:  # one copy of the table: the head reads the embedding's tiles
            model.lm_head = Bf16Head(model.embed_tokens)
    if isinstance(model.lm_head, nn.Linear):
        model.lm_head = Bf16Linear.from_float(model.lm_head)
    return model


def quantize_llama(model: LlamaModel, mode: str) -> LlamaModel:
    """``model`` (float) in ``mode`` (``fp32`` | ``bf16`` | ``int8`` | ``int4`` | ``int4-fp32``), in place,
    eval mode, projections fused; returns it."""
    bf16 = any(isinstance(m, Bf16Linear | Bf16Embedding) for m in model.modules())
    if bf16 and mode != "bf16":
        raise ConfigError(
            f"this model holds bf16 weights for inference and cannot become {mode}; load it again"
        )
    if not bf16:
        model.float()  # float32 norms and residual stream in every mode (bf16: exact widening)
    model.eval().fuse_projections()
    if mode == "fp32":
        return model.column_major_weights()
    if mode == "bf16":
        return _to_bf16(model)
    for block in model.layers:
        assert isinstance(block, LlamaBlock)
        attn, mlp = block.self_attn, block.mlp
        assert attn.qkv_proj is not None and mlp.gate_up_proj is not None
        attn.qkv_proj = _quantized(attn.qkv_proj, mode)
        attn.o_proj = _quantized(attn.o_proj, mode)
        mlp.gate_up_proj = _quantized(mlp.gate_up_proj, mode)
        mlp.down_proj = _quantized(mlp.down_proj, mode)
    if mode == "int4-fp32":
        emb, head = model.embed_tokens, model.lm_head
        if isinstance(emb, nn.Embedding) and isinstance(head, nn.Linear):
            table = _block_int8(emb.weight.detach())
            tied = head.weight is emb.weight
            model.embed_tokens = BlockQ8Embedding.from_rows(table.codes, table.scales)
            if tied:  # one copy of the table: the head reads the embedding's codes
                model.lm_head = BlockQ8Head(model.embed_tokens)
            else:
                out = _block_int8(head.weight.detach())
                model.lm_head = BlockQ8Head(BlockQ8Embedding.from_rows(out.codes, out.scales))
        return model
    if isinstance(model.lm_head, nn.Linear):
        model.lm_head = Int8Linear.from_float(model.lm_head.weight.detach())
    if isinstance(model.embed_tokens, nn.Embedding):
        model.embed_tokens = _block_int8(model.embed_tokens.weight.detach())
    return model
