"""Where decoding time goes: torch.profiler over one decoding run of the Marian-shaped model.

``python -m bench.profile_decode [--beam 4] [--dtype int8] [--threads 1] [--quick]`` decodes
the ``decode-*-16x30`` workload (:mod:`bench.decode`: 16 sentences x 30 tokens -> 30 tokens,
random weights) once to warm up, then once under ``torch.profiler``, and prints a Markdown
table of self CPU time per category of operator (the output layer, the other linear layers,
the vocabulary-sized softmax / top-k / additions, attention, KV-cache copies, the rest), with
the top operators by input shape below it. Used for the before/after profile in
``docs/speed.md``; the shares are what matter (the profiler itself adds overhead).
"""

from __future__ import annotations

import argparse
import copy
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch

from bench.decode import FULL, QUICK, build_pair, dhian_decode
from dhian.models.precision import apply_precision

#: the GEMM operators of the three paths: fp32 eager, dynamic int8, fused oneDNN int8 / bf16
LINEAR_OPS = (
    "quantized::linear_dynamic",
    "aten::addmm",
    "aten::mm",
    "onednn::qlinear_pointwise",
    "onednn::qlinear_pointwise.binary",
    "mkldnn::_linear_pointwise",
    "mkldnn::_linear_pointwise.binary",
)

CATEGORIES = (
    "output layer (E -> V)",
    "other linear layers",
    "quantizing activations (aminmax / quantize)",
    "vocabulary-sized softmax / top-k / add",
    "attention (SDPA)",
    "KV cache copies (index_select / cat / copy_)",
    "layer norm, activations, residual adds",
    "everything else",
)


def category(name: str, shapes: Sequence[Any], vocab: int) -> str:
    """The :data:`CATEGORIES` entry of one profiler event (operator ``name``, input shapes)."""
    first = list(shapes[0]) if shapes and isinstance(shapes[0], list) else []
    wide = any(isinstance(x, list) and x and x[-1] >= vocab // 2 for x in shapes)
    if name in LINEAR_OPS:
        return CATEGORIES[0] if _is_output(name, first, shapes, vocab) else CATEGORIES[1]
    if name in ("aten::aminmax", "aten::quantize_per_tensor", "aten::_local_scalar_dense"):
        return CATEGORIES[2]
    if wide and name in (
        "aten::_log_softmax",
        "aten::topk",
        "aten::add",
        "aten::sort",
        "aten::max",
    ):
        return CATEGORIES[3]
    if "scaled_dot_product" in name or name in ("aten::bmm", "aten::_softmax"):
        return CATEGORIES[4]
    if name in ("aten::index_select", "aten::cat", "aten::copy_"):
        return CATEGORIES[5]
    if name in ("aten::native_layer_norm", "aten::silu", "aten::relu", "aten::add", "aten::gelu"):
        return CATEGORIES[6]
    return CATEGORIES[7]


def _is_output(name: str, first: list[int], shapes: Sequence[Any], vocab: int) -> bool:
    """The output layer: fp32 ``addmm``/``mm`` and the fused oneDNN ops show its (E, V) or
    (V, E) weight; the dynamic int8 op hides its packed weight, but it is the only linear
    called on 2-D (N, E) rows while decoding (the decoder layers see (N, 1, E), the encoder
    (B, Ts, E))."""
    if name == "quantized::linear_dynamic":
        return len(first) == 2
    return any(isinstance(s, list) and vocab in s for s in shapes[1:])


def profile(beam: int, dtype: str, threads: int, quick: bool, fused: bool = True) -> str:
    """The Markdown report of one profiled decoding run."""
    torch.set_num_threads(threads)
    s = QUICK if quick else FULL
    model, _, _ = build_pair(s)
    if dtype != "fp32":
        model = apply_precision(copy.deepcopy(model), dtype, fused=fused)
    dhian_decode(model, s, beam)  # warm-up
    t0 = time.perf_counter()
    dhian_decode(model, s, beam)
    wall = time.perf_counter() - t0
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        dhian_decode(model, s, beam)
    events = prof.key_averages(group_by_input_shape=True)
    per_cat: dict[str, float] = defaultdict(float)
    rows = []
    for ev in events:
        shapes = list(ev.input_shapes or [])
        cat = category(ev.key, shapes, s.vocab)
        per_cat[cat] += ev.self_cpu_time_total
        rows.append((ev.self_cpu_time_total, ev.key, shapes[:3], ev.count, cat))
    total = sum(per_cat.values())
    mode = "greedy" if beam == 1 else f"beam {beam}"
    out = [
        f"### {dtype}{'' if fused else ' (unfused)'} {mode}, {threads} thread(s)",
        "",
        f"Unprofiled run: {wall:.2f} s = {s.batch * s.out_len / wall:.1f} tok/s; profiled self "
        f"CPU time {total / 1e6:.2f} s.",
        "",
        "| where | self CPU s | share |",
        "|---|---:|---:|",
    ]
    for cat in CATEGORIES:
        if per_cat.get(cat):
            out.append(f"| {cat} | {per_cat[cat] / 1e6:.2f} | {100 * per_cat[cat] / total:.1f}% |")
    out += [
        "",
        "| top operators (by input shape) | calls | self CPU s | where |",
        "|---|---:|---:|---|",
    ]
    for us, key, shapes, count, cat in sorted(rows, key=lambda r: -r[0])[:8]:
        out.append(f"| `{key}` {shapes} | {count} | {us / 1e6:.2f} | {cat} |")
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.profile_decode", description=__doc__.split("\n")[0]
    )
    p.add_argument("--beam", type=int, default=4, help="1 = greedy (4)")
    p.add_argument("--dtype", default="int8", choices=("fp32", "bf16", "int8"), help="(int8)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    p.add_argument("--quick", action="store_true", help="tiny shape (a smoke run)")
    p.add_argument(
        "--unfused", action="store_true", help="int8/bf16 without the fused oneDNN layers"
    )
    args = p.parse_args(argv)
    print(profile(args.beam, args.dtype, args.threads, args.quick, not args.unfused))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
