"""What ``torch.compile`` would buy dhian's BERT encoder: compile time and work per batch of
eager vs compiled (x86 Inductor, ``freezing`` on) fp32, bf16 and a PT2E-style int8 graph.

``python -m bench.compile_bert [--batch 8] [--threads 1] [--rounds 3] [--quick]``. torch 2.13
no longer ships the PT2E quantizer (``prepare_pt2e`` / ``X86InductorQuantizer`` live in
torchao), but Inductor still lowers the graph it produces; :class:`DynamicInt8Linear` writes that
graph by hand — dynamic per-tensor uint8 activations (``quantized_decomposed.choose_qparams`` →
``quantize_per_tensor`` → ``dequantize_per_tensor``) times per-channel int8 weights
(``dequantize_per_channel``) — which Inductor's freezing passes turn into
``onednn::qlinear_pointwise`` calls. Each variant's first call (compilation included) is timed
on its own; then all run ``--rounds`` times in alternating order, and the report gives the
minimum CPU time (``time.process_time``: the work, robust on a shared machine) and wall time
per batch, with the relative error of the last hidden states against eager fp32. For the
break-even in ``docs/speed.md``; dhian's shipped modes do not compile
(:mod:`dhian.nn.fused_linear` calls the same oneDNN operators eagerly).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.bert import FULL, QUICK, build_pair, dhian_encode, rel_error
from dhian.models.bert.model import BertBackbone
from dhian.models.precision import apply_precision

qd = torch.ops.quantized_decomposed


class DynamicInt8Linear(nn.Module):
    """``x @ dequant(W_int8)ᵀ + b`` with x quantized per call, in the PT2E decomposed form."""

    def __init__(self, weight: Tensor, bias: Tensor | None) -> None:
        super().__init__()
        w = weight.detach().float()
        scale = (w.abs().amax(dim=1) / 127.0).clamp_min(1e-12)  # (N,)
        codes = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)  # (N, K)
        self.register_buffer("codes", codes)
        self.register_buffer("scale", scale)
        self.register_buffer("zero", torch.zeros(w.size(0), dtype=torch.int64))
        self.bias = None if bias is None else nn.Parameter(bias.detach().float(), False)

    def forward(self, x: Tensor) -> Tensor:
        """x (..., K) float32 → (..., N)."""
        eps = torch.finfo(torch.float32).eps
        s, z = qd.choose_qparams.tensor(x, 0, 255, eps, torch.uint8)
        xq = qd.quantize_per_tensor.tensor(x, s, z, 0, 255, torch.uint8)
        xd = qd.dequantize_per_tensor.tensor(xq, s, z, 0, 255, torch.uint8)
        w = qd.dequantize_per_channel(self.codes, self.scale, self.zero, 0, -127, 127, torch.int8)
        return F.linear(xd, w, self.bias)


class DynamicInt8Attention(nn.Module):
    """Self attention with :class:`DynamicInt8Linear` projections (BERT encoder, no cache)."""

    def __init__(self, attn: Any) -> None:
        super().__init__()
        self.num_heads, self.embed_dim = attn.num_heads, attn.embed_dim
        self.qkv = DynamicInt8Linear(attn.in_proj_weight, attn.in_proj_bias)
        self.out_proj = DynamicInt8Linear(attn.out_proj.weight, attn.out_proj.bias)

    def forward(
        self, x: Tensor, mask: Tensor | None = None, need_weights: bool = False
    ) -> tuple[Tensor, None]:
        """x (B, T, E), mask (B, 1, 1, T) bool → (B, T, E)."""
        b, t, e = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.num_heads, e // self.num_heads)  # (B, T, 3, H, D)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, T, D)
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, T, D)
        return self.out_proj(ctx.transpose(1, 2).reshape(b, t, e)), None


def pt2e_int8(model: BertBackbone) -> BertBackbone:
    """A copy of ``model`` whose encoder linears are :class:`DynamicInt8Linear`."""
    m = copy.deepcopy(model)
    for block in m.layers:
        block.self_attn = DynamicInt8Attention(block.self_attn)
        for name in ("linear1", "linear2"):
            lin = getattr(block.ff, name)
            setattr(block.ff, name, DynamicInt8Linear(lin.weight, lin.bias))
    return m


def variants(model: BertBackbone) -> dict[str, Callable[[], Any]]:
    """name → a builder of the module to time (compiled ones compile on their first call)."""
    return {
        "eager-fp32": lambda: model,
        "eager-int8-fused": lambda: apply_precision(copy.deepcopy(model), "int8"),
        "eager-bf16": lambda: apply_precision(copy.deepcopy(model), "bf16"),
        "compiled-fp32": lambda: torch.compile(copy.deepcopy(model), dynamic=False),
        "compiled-bf16": lambda: torch.compile(
            copy.deepcopy(model).to(torch.bfloat16), dynamic=False
        ),
        "compiled-int8-pt2e": lambda: torch.compile(pt2e_int8(model), dynamic=False),
    }


def run(batch: int, threads: int, rounds: int, quick: bool) -> str:
    """The Markdown report (see the module docstring)."""
    torch.set_num_threads(threads)
    torch._inductor.config.freezing = True
    s = dataclasses.replace(QUICK if quick else FULL, batch=batch)
    model, _, _ = build_pair(s)
    ref, _ = dhian_encode(model, s)
    built: dict[str, Any] = {}
    lines = [
        f"### torch.compile vs eager, {s.batch} x {s.length} tokens, {threads} thread(s)",
        "",
        "| variant | first call s (wall) | min CPU s / batch | min wall s / batch | rel. error |",
        "|---|---:|---:|---:|---:|",
    ]
    first: dict[str, float] = {}
    errors: dict[str, float] = {}
    for name, make in variants(model).items():
        t0 = time.perf_counter()
        built[name] = make()
        hidden, _ = dhian_encode(built[name], s)
        first[name] = time.perf_counter() - t0
        errors[name] = rel_error(hidden, ref)
    cpu: dict[str, list[float]] = {n: [] for n in built}
    wall: dict[str, list[float]] = {n: [] for n in built}
    names = list(built)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            c0, w0 = time.process_time(), time.perf_counter()
            dhian_encode(built[name], s)
            cpu[name].append(time.process_time() - c0)
            wall[name].append(time.perf_counter() - w0)
    for name in names:
        lines.append(
            f"| {name} | {first[name]:.1f} | {min(cpu[name]):.3f} | {min(wall[name]):.3f} | "
            f"{errors[name]:.4f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.compile_bert", description=__doc__.split("\n")[0]
    )
    p.add_argument("--batch", type=int, default=8, help="sentences of 128 tokens (8)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (3)")
    p.add_argument("--quick", action="store_true", help="tiny shape (a smoke run)")
    args = p.parse_args(argv)
    print(run(args.batch, args.threads, args.rounds, args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
