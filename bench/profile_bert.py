"""Where BERT encoder time goes: torch.profiler over one forward of the ``bert-base-32x128``
workload (:mod:`bench.bert`) in a given precision.

``python -m bench.profile_bert [--dtype int8] [--unfused] [--batch 32] [--threads 2] [--quick]``
builds the random BERT-base backbone, converts it with
:func:`dhian.models.precision.apply_precision` (``--unfused``: ``fused=False``, the generic
paths the fused encoder layers replaced),
encodes the batch once to warm up, then once under ``torch.profiler``, and prints a Markdown
table of self CPU time per category of operator (the linear layers' GEMMs, quantizing
activations, attention, layer norm, GELU and residual adds, copies, the rest) with the top
operators below it. Used for the profiles in ``docs/speed.md``; on a shared machine only the
shares are meaningful (the profiler itself adds overhead). The batch runs as one batch on the
intra-op threads (``batch_parallel`` off: the split forward runs the same operators per part,
on worker threads the profile would not attribute).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time
from collections import defaultdict
from collections.abc import Sequence

import torch

from bench.bert import FULL, QUICK, build_pair, dhian_encode
from dhian.models.precision import apply_precision

CATEGORIES = (
    "linear layers (GEMM)",
    "quantizing activations",
    "attention (SDPA)",
    "layer norm, GELU, residual adds",
    "copies (transpose / reshape / cast)",
    "everything else",
)

_GEMM = (
    "aten::addmm",
    "aten::mm",
    "aten::linear",
    "quantized::linear_dynamic",
    "onednn::qlinear_pointwise",
    "mkldnn::_linear_pointwise",
    "mkl::_mkl_linear",
)
_QUANT = ("aten::quantize_per_tensor_dynamic", "aten::int_repr", "aten::quantize_per_tensor")
_ELEMENTWISE = ("aten::native_layer_norm", "aten::gelu", "aten::add", "aten::add_", "aten::tanh")
_COPIES = ("aten::copy_", "aten::clone", "aten::contiguous", "aten::_to_copy", "aten::cat")


def category(name: str) -> str:
    """The :data:`CATEGORIES` entry of the profiler event ``name``."""
    if name.startswith(_GEMM):
        return CATEGORIES[0]
    if name in _QUANT:
        return CATEGORIES[1]
    if "scaled_dot_product" in name or name in ("aten::bmm", "aten::_softmax"):
        return CATEGORIES[2]
    if name in _ELEMENTWISE:
        return CATEGORIES[3]
    if name in _COPIES:
        return CATEGORIES[4]
    return CATEGORIES[5]


def profile(dtype: str, batch: int, threads: int, quick: bool, fused: bool = True) -> str:
    """The Markdown report of one profiled forward of ``batch`` sentences in ``dtype``."""
    torch.set_num_threads(threads)
    s = dataclasses.replace(QUICK if quick else FULL, batch=batch)
    model, _, _ = build_pair(s)
    if dtype != "fp32":
        model = apply_precision(copy.deepcopy(model), dtype, fused=fused)
    model.batch_parallel = False  # one batch on the intra-op threads: every op on this thread
    dhian_encode(model, s)  # warm-up
    t0 = time.perf_counter()
    dhian_encode(model, s)
    wall = time.perf_counter() - t0
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        dhian_encode(model, s)
    per_cat: dict[str, float] = defaultdict(float)
    rows = []
    for ev in prof.key_averages():
        cat = category(ev.key)
        per_cat[cat] += ev.self_cpu_time_total
        rows.append((ev.self_cpu_time_total, ev.key, ev.count, cat))
    total = sum(per_cat.values())
    out = [
        f"### dhian {dtype}{'' if fused else ' (unfused)'}, {s.batch} x {s.length} tokens, "
        f"{threads} thread(s)",
        "",
        f"Unprofiled run: {wall:.2f} s = {s.batch / wall:.1f} sent/s; profiled self CPU time "
        f"{total / 1e6:.2f} s.",
        "",
        "| where | self CPU s | share |",
        "|---|---:|---:|",
    ]
    for cat in CATEGORIES:
        if per_cat.get(cat):
            out.append(f"| {cat} | {per_cat[cat] / 1e6:.2f} | {100 * per_cat[cat] / total:.1f}% |")
    out += ["", "| top operators | calls | self CPU s | where |", "|---|---:|---:|---|"]
    for us, key, count, cat in sorted(rows, key=lambda r: -r[0])[:8]:
        out.append(f"| `{key}` | {count} | {us / 1e6:.2f} | {cat} |")
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.profile_bert", description=__doc__.split("\n")[0]
    )
    p.add_argument("--dtype", default="int8", choices=("fp32", "bf16", "int8"), help="(int8)")
    p.add_argument("--unfused", action="store_true", help="apply_precision(fused=False)")
    p.add_argument("--batch", type=int, default=FULL.batch, help=f"sentences ({FULL.batch})")
    p.add_argument("--threads", type=int, default=2, help="torch threads (2)")
    p.add_argument("--quick", action="store_true", help="tiny shape (a smoke run)")
    args = p.parse_args(argv)
    print(profile(args.dtype, args.batch, args.threads, args.quick, not args.unfused))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
