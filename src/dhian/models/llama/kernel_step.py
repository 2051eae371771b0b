"""A LLaMA model's eager decoding step on dhian's CPU kernels, one op per piece.

Owns :func:`kernel_step`: the logits of one new token per row, computed with the very ops of
:meth:`LlamaModel.decode_step`'s eager float32 path (the same kernels, products and sums in the
same order: bit-identical logits and cache, tested) but called straight from one loop — no
module calls, shape checks, reshapes to (B, 1, E) and back, or per-layer availability checks.

Why: on a 2-core CPU an eager SmolLM2 step spends ~2.6–3.3 ms per token outside its products
(30 layers × ~25 small calls through Python and the dispatcher; docs/speed.md), the products
themselves 10–19 ms: the overhead was 15–25% of a step. ``torch.compile`` removes it too, but
costs a compile; this is the eager path's own answer.

It applies (:func:`kernel_step` returns ``None`` otherwise and the caller takes the general
path) when the step is eager, without gradient, on the CPU, float32 (the residual stream and
the cache), the kernels are built, q/k/v and gate/up are fused, the norms are ``nn.RMSNorm``,
and every projection is a float32 ``nn.Linear``, a :class:`~dhian.nn.bf16_linear.Bf16Linear`
or a :class:`~dhian.nn.block_quant.BlockQ4Linear` (modes fp32, bf16, int4-fp32; the int8/int4
modes on PyTorch's quantised kernels keep the general path). The plan — which op computes each
projection for this batch size — is built once per batch size and kept on the model until one
of its layers is replaced or a float32 weight's memory moves.
Shapes: B rows, E model dim, H query heads, Hkv key/value heads, G = H/Hkv, D head dim,
F MLP width, V vocabulary, Tmax cache slots.
Imports: torch, :mod:`dhian.nn` (cpu_kernels, bf16_linear, block_quant).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dhian.nn import bf16_linear, cpu_kernels
from dhian.nn.bf16_linear import Bf16Head, Bf16Linear
from dhian.nn.block_quant import TILE, BlockQ4Linear, BlockQ8Head

__all__ = ["kernel_step"]

Product = Callable[[Tensor], Tensor]


class _Layer(NamedTuple):
    """One block's pieces: the two norms (weight, eps) and four products."""

    norm1: nn.RMSNorm
    qkv: Product
    o: Product
    norm2: nn.RMSNorm
    gate_up: Product
    down: Product


class _Plan(NamedTuple):
    key: tuple[int, ...]
    layers: list[_Layer]
    head: Product
    #: float32 weights whose transposed views the products hold, and their addresses then
    watched: list[Tensor]
    addresses: list[int]


def _eps(norm: nn.RMSNorm) -> float:
    return torch.finfo(torch.float32).eps if norm.eps is None else float(norm.eps)


def _product(layer: nn.Module, rows: int, watched: list[Tensor]) -> Product | None:
    """The op computing ``layer`` for ``rows`` rows of (rows, K) float32 input — the one its
    own forward would take — or ``None`` for a layer kind this path does not handle. A float32
    weight whose transpose the op holds is appended to ``watched``."""
    ops = torch.ops.dhian_kernels
    if isinstance(layer, nn.Linear) and layer.bias is None:
        if layer.weight.dtype != torch.float32:
            return None
        watched.append(layer.weight)
        wt = layer.weight.t()  # (K, N): what F.linear hands to mm for 2-D input
        return lambda h: torch.mm(h, wt)
    if isinstance(layer, Bf16Linear | Bf16Head):
        table = layer.table if isinstance(layer, Bf16Head) else layer
        n = layer.out_features
        whole = table.tiles.shape[0] * bf16_linear.TILE == n and layer.in_features % 2 == 0
        if rows <= bf16_linear.KERNEL_ROWS and whole:
            return lambda h: ops.bf16_mm(h, table.tiles)
        return layer.forward
    if isinstance(layer, BlockQ4Linear):
        if rows <= cpu_kernels.KERNEL_ROWS and layer.packed.shape[-1] == TILE:
            return lambda h: ops.q4_mm(h, layer.packed, layer.d, layer.m)
        return layer.forward
    if isinstance(layer, BlockQ8Head):
        q8 = layer.table
        if rows <= cpu_kernels.KERNEL_ROWS and q8.codes.shape[-1] == TILE:
            return lambda h: ops.q8_mm(h, q8.codes, q8.scales)
        return layer.forward
    return None


def _pieces(model: Any) -> list[tuple[nn.Module | None, ...]]:
    """Per layer: (norm1, qkv, o, norm2, gate_up, down), read from the module dicts (cheap:
    this runs every step to see whether the plan still holds)."""
    out: list[tuple[nn.Module | None, ...]] = []
    for block in model.layers:
        attn, mlp = block._modules["self_attn"], block._modules["mlp"]
        am, mm = attn._modules, mlp._modules
        out.append(
            (
                block._modules["input_layernorm"],
                am.get("qkv_proj"),
                am["o_proj"],
                block._modules["post_attention_layernorm"],
                mm.get("gate_up_proj"),
                mm["down_proj"],
            )
        )
    return out


def _build(model: Any, rows: int, pieces: list[tuple[nn.Module | None, ...]]) -> _Plan | None:
    layers: list[_Layer] = []
    watched: list[Tensor] = []
    for norm1, qkv, o, norm2, gate_up, down in pieces:
        norms = (norm1, norm2)
        if not all(isinstance(n, nn.RMSNorm) and n.weight is not None for n in norms):
            return None
        if qkv is None or gate_up is None or o is None or down is None:
            return None  # unfused q/k/v or gate/up
        products = [_product(p, rows, watched) for p in (qkv, o, gate_up, down)]
        if any(p is None for p in products):
            return None
        assert isinstance(norm1, nn.RMSNorm) and isinstance(norm2, nn.RMSNorm)
        p_qkv, p_o, p_gu, p_down = products
        assert p_qkv is not None and p_o is not None and p_gu is not None and p_down is not None
        layers.append(_Layer(norm1, p_qkv, p_o, norm2, p_gu, p_down))
    head = _product(model.lm_head, rows, watched)
    if head is None or not isinstance(model.norm, nn.RMSNorm) or model.norm.weight is None:
        return None
    addresses = [w.data_ptr() for w in watched]
    return _Plan(_key(model, rows, pieces), layers, head, watched, addresses)


def _holds(plan: _Plan, key: tuple[int, ...]) -> bool:
    """Whether ``plan`` still describes the model: the same layers, and its float32 weights
    where they were (a ``.data`` swapped by ``.to`` or a loader leaves the held views stale)."""
    if plan.key != key:
        return False
    return all(w.data_ptr() == a for w, a in zip(plan.watched, plan.addresses, strict=True))


def _key(model: Any, rows: int, pieces: list[tuple[nn.Module | None, ...]]) -> tuple[int, ...]:
    flat = [id(m) for layer in pieces for m in layer]
    return (rows, id(model.lm_head), id(model.norm), id(model.embed_tokens), *flat)


def _applies(model: Any, token: Tensor, cache: Any) -> bool:
    k0 = cache.k[0]
    return (
        token.device.type == "cpu"
        and k0.is_contiguous()
        and k0.shape[-1] % 16 == 0  # the attention kernel's head dims
        and cpu_kernels.eager_float32(k0, model.norm.weight)
    )


def kernel_step(
    model: Any, token: Tensor, positions: Tensor, slot: Tensor, key_mask: Tensor, cache: Any
) -> Tensor | None:
    """Logits (B, V) float32 of one new token per row, or ``None`` where this path does not
    apply (see the module docstring). Arguments as :meth:`LlamaModel.decode_step`: ``token``,
    ``positions`` (B, 1) long, ``slot`` (1,) or (B,) long, ``key_mask`` (B, Tmax) bool,
    ``cache`` with per-layer ``k``/``v`` (B, Hkv, Tmax, D) buffers, written in place."""
    if not _applies(model, token, cache):
        return None
    b = token.size(0)
    pieces = _pieces(model)
    plans: dict[int, _Plan | None] = model.__dict__.setdefault("_kernel_plans", {})
    plan = plans.get(b)
    if plan is None or not _holds(plan, _key(model, b, pieces)):
        plan = plans[b] = _build(model, b, pieces)
        if plan is None:
            return None
    ops = torch.ops.dhian_kernels
    cfg = model.cfg
    h_n, hkv, d = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    x = model.embed_tokens(token).reshape(b, -1)  # (B, E)
    if x.dtype != torch.float32:
        x = x.float()
    pos = positions.reshape(-1)  # (B,)
    cos = model.rotary.cos[pos].float().contiguous()  # (B, D)
    sin = model.rotary.sin[pos].float().contiguous()  # (B, D)
    keep = key_mask.reshape(b, -1).contiguous()  # (B, Tmax)
    slot = slot.contiguous()
    for layer, k_buf, v_buf in zip(plan.layers, cache.k, cache.v, strict=True):
        h = ops.rms_norm(x, layer.norm1.weight, _eps(layer.norm1))  # (B, E)
        qkv = layer.qkv(h)  # (B, (H + 2·Hkv)·D)
        q = ops.rope_cache_write(qkv, cos, sin, slot, k_buf, v_buf, h_n)  # (B, H·D)
        out = ops.decode_attention(q.view(b, hkv, h_n // hkv, d), k_buf, v_buf, keep)
        x = x + layer.o(out.view(b, h_n * d))  # (B, Hkv, G, D) → (B, H·D) → (B, E)
        h = ops.rms_norm(x, layer.norm2.weight, _eps(layer.norm2))  # (B, E)
        gate, up = layer.gate_up(h).chunk(2, dim=-1)  # 2 x (B, F)
        x = x + layer.down(F.silu(gate) * up)  # (B, E)
    h = ops.rms_norm(x, model.norm.weight, _eps(model.norm))  # (B, E)
    return plan.head(h).reshape(b, -1).float()  # (B, V)
