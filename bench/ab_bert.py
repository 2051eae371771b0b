"""In-process A/B of dhian's BERT batch split (``dhian.nn.batch_parallel``) on the
``bert-base-32x128`` workload (:mod:`bench.bert`), with the peers in the same process.

``python -m bench.ab_bert [--modes int8,bf16,fp32] [--threads 2] [--rounds 4]`` builds the random
BERT-base backbone once, converts it per mode with
:func:`dhian.models.precision.apply_precision`, and times one forward of 32 x 128 tokens for
``dhian-<mode>`` (``batch_parallel`` off: one batch on the intra-op threads), ``dhian-<mode>-dp``
(on: the batch split across single-threaded workers, what the CLI does) and the mode's peer
(ORT fp32 / int8, HF bf16), interleaved (A B C, then C B A, ...), printing the median and min of
wall-clock and process CPU time per contender. Meant for a shared machine: compare the rows of
one run only; the official numbers are ``python -m bench bert-base-32x128`` on an idle one.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from bench.bert import FULL, Shape, _ort_peer, build_pair, dhian_encode, hf_encode, ort_encode
from bench.bert import rel_error as rel
from dhian.models.precision import apply_precision

Run = tuple[str, Any, Callable[[Any, Shape], Any]]


def _dhian(split: bool) -> Callable[[Any, Shape], Any]:
    """dhian_encode with the model's batch split on or off."""

    def encode(model: Any, s: Shape) -> Any:
        model.batch_parallel = split
        return dhian_encode(model, s)

    return encode


def contenders(modes: Sequence[str]) -> list[Run]:
    """(name, model, encode) for each mode: dhian one batch, dhian split, the peer."""
    import transformers  # heavy; only the benchmark needs it

    s = FULL
    base, _, folder = build_pair(s)
    sessions, why = _ort_peer(folder, s, [])
    runs: list[Run] = []
    for mode in modes:
        model = base if mode == "fp32" else apply_precision(copy.deepcopy(base), mode)
        runs += [(f"dhian-{mode}", model, _dhian(False)), (f"dhian-{mode}-dp", model, _dhian(True))]
        if mode in sessions:
            runs.append((f"ort-{mode}", sessions[mode], ort_encode))
        elif mode == "bf16":
            hf16 = transformers.BertModel.from_pretrained(
                folder / "hf", attn_implementation="sdpa", dtype=torch.bfloat16
            ).eval()
            runs.append(("hf-bf16", hf16, hf_encode))
    if why is not None:
        print(f"ORT not timed: {why}")
    ref, _ = dhian_encode(base, s)
    for name, model, encode in runs:
        hidden, _ = encode(model, s)
        print(f"{name}: last hidden relative error vs dhian fp32 {rel(hidden, ref):.4f}")
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ab_bert", description=__doc__.split("\n")[0])
    p.add_argument("--modes", default="int8,bf16,fp32", help="comma-separated (int8,bf16,fp32)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (2)")
    p.add_argument("--rounds", type=int, default=4, help="timed rounds (4)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    runs = contenders(args.modes.split(","))
    wall: dict[str, list[float]] = {name: [] for name, _, _ in runs}
    cpu: dict[str, list[float]] = {name: [] for name, _, _ in runs}
    for r in range(args.rounds):
        for name, model, encode in runs if r % 2 == 0 else runs[::-1]:
            t, c = time.perf_counter(), time.process_time()
            encode(model, FULL)
            wall[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
    print(f"{args.threads} threads, {args.rounds} rounds, {FULL.batch} x {FULL.length} tokens (s)")
    for name in wall:
        w, c = wall[name], cpu[name]
        print(
            f"{name:16s} wall median {statistics.median(w):.3f} min {min(w):.3f} | "
            f"CPU median {statistics.median(c):.3f} min {min(c):.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
