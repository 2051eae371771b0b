"""A few-second numerical self-check of the attention core (``dhian selfcheck``).

Owns :func:`run_checks`: fast path vs eager path, probability rows, padding and causal zeros,
fully masked rows, :class:`MultiHeadAttention` vs ``torch.nn.MultiheadAttention`` with the same
weights, and incremental (KV-cached) decoding vs a full causal pass. Tiny float64/float32
tensors, CPU, fixed seed; the global RNG state is restored afterwards.

Notation: B batch, H heads, Tq/Tk lengths, D head dim, E model dim.
Imports: torch, :mod:`dhian.nn`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from dhian.nn.attention import KVCache, MultiHeadAttention, scaled_dot_product
from dhian.nn.blocks import DecoderBlock
from dhian.nn.masks import as_key_mask, causal_mask, combine, padding_mask
from dhian.nn.positional import RotaryEmbedding

__all__ = ["run_checks"]

Check = tuple[str, bool, str]


def _maxdiff(a: Tensor, b: Tensor) -> float:
    return float((a - b).abs().max())


def _qkv(b: int = 3, h: int = 2, tq: int = 5, tk: int = 6, d: int = 4) -> tuple[Tensor, ...]:
    return tuple(torch.randn(b, h, t, d) for t in (tq, tk, tk))


def _sdpa_vs_eager() -> tuple[bool, str]:
    q, k, v = _qkv()
    mask = combine(padding_mask(torch.tensor([6, 4, 2])), torch.rand(1, 1, 5, 6) > 0.3)
    fast, _ = scaled_dot_product(q, k, v, mask)
    slow, _ = scaled_dot_product(q, k, v, mask, need_weights=True)
    diff = _maxdiff(fast, slow)
    return diff < 1e-6, f"max |fast - eager| = {diff:.1e}"


def _rows_sum_to_one() -> tuple[bool, str]:
    q, k, v = _qkv()
    _, w = scaled_dot_product(q, k, v, padding_mask(torch.tensor([6, 3, 1])), need_weights=True)
    assert w is not None
    err = float((w.sum(-1) - 1).abs().max())
    return err < 1e-6, f"max |row sum - 1| = {err:.1e}"


def _padded_keys_zero() -> tuple[bool, str]:
    q, k, v = _qkv()
    lengths = torch.tensor([6, 3, 1])
    _, w = scaled_dot_product(q, k, v, padding_mask(lengths), need_weights=True)
    assert w is not None
    pad = ~padding_mask(lengths).expand_as(w)
    worst = float(w[pad].abs().max())
    return worst == 0.0, f"largest weight on a padded key = {worst}"


def _causal_zero() -> tuple[bool, str]:
    q, k, v = _qkv(tq=6)
    _, w = scaled_dot_product(q, k, v, causal_mask(6), need_weights=True)
    assert w is not None
    worst = float(torch.triu(w, diagonal=1).abs().max())
    return worst == 0.0, f"largest weight above the diagonal = {worst}"


def _fully_masked() -> tuple[bool, str]:
    q, k, v = _qkv()
    mask = padding_mask(torch.tensor([6, 0, 2]), max_len=6)
    fast, _ = scaled_dot_product(q, k, v, mask)
    slow, w = scaled_dot_product(q, k, v, mask, need_weights=True)
    assert w is not None
    finite = bool(torch.isfinite(fast).all() and torch.isfinite(slow).all())
    zero = float(fast[1].abs().max() + slow[1].abs().max() + w[1].abs().max())
    return finite and zero == 0.0, f"finite={finite}, |output of masked row| = {zero}"


def _mha_vs_torch() -> tuple[bool, str]:
    e, h = 8, 2
    ours = MultiHeadAttention(e, h).double()
    ref = nn.MultiheadAttention(e, h, batch_first=True).double()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 5, e, dtype=torch.float64)
    mem = torch.randn(2, 7, e, dtype=torch.float64)
    src_ok = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    worst = 0.0
    o, w = ours(x, mem, mask=as_key_mask(src_ok), need_weights=True)
    ro, rw = ref(x, mem, mem, key_padding_mask=~src_ok)
    assert w is not None
    worst = max(worst, _maxdiff(o, ro), _maxdiff(w.mean(1), rw))
    o, w = ours(x, causal=True, need_weights=True)
    ro, rw = ref(x, x, x, attn_mask=~causal_mask(5)[0, 0])
    assert w is not None
    worst = max(worst, _maxdiff(o, ro), _maxdiff(w.mean(1), rw))
    return worst < 1e-10, f"max difference (self/cross, out and weights) = {worst:.1e}"


def _cache_equals_full() -> tuple[bool, str]:
    e, h, t = 8, 2, 6
    block = DecoderBlock(e, h, 16, dropout=0.0, norm_first=True).double().eval()
    mha = MultiHeadAttention(e, h, rotary=RotaryEmbedding(e // h)).double().eval()
    x = torch.randn(2, t, e, dtype=torch.float64)
    mem = torch.randn(2, 4, e, dtype=torch.float64)
    mem_mask = as_key_mask(torch.tensor([[True] * 4, [True, True, False, False]]))
    full_b, _, _ = block(x, mem, memory_mask=mem_mask)
    full_a, _ = mha(x, causal=True)
    sc, cc, ac = KVCache.empty(), KVCache.empty(static=True), KVCache.empty()
    steps_b, steps_a = [], []
    for i in range(t):
        xi = x[:, i : i + 1]
        yb, _, _ = block(
            xi, mem if i == 0 else None, memory_mask=mem_mask, self_cache=sc, cross_cache=cc
        )
        ya, _ = mha(xi, cache=ac, causal=True)
        steps_b.append(yb)
        steps_a.append(ya)
    diff = max(_maxdiff(torch.cat(steps_b, 1), full_b), _maxdiff(torch.cat(steps_a, 1), full_a))
    return diff < 1e-10, f"max |cached - full| = {diff:.1e} (DecoderBlock, rotary MHA)"


CHECKS: list[tuple[str, Callable[[], tuple[bool, str]]]] = [
    ("SDPA fast path == eager path", _sdpa_vs_eager),
    ("attention rows sum to 1", _rows_sum_to_one),
    ("padded keys get weight 0", _padded_keys_zero),
    ("causal weights 0 above the diagonal", _causal_zero),
    ("fully masked rows: zeros, no NaN", _fully_masked),
    ("MultiHeadAttention == torch.nn.MultiheadAttention", _mha_vs_torch),
    ("KV-cached decoding == full causal pass", _cache_equals_full),
]


def run_checks() -> list[Check]:
    """Run every check; returns (name, passed, detail) per check. A crash counts as a failure."""
    results: list[Check] = []
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(0)
        for name, fn in CHECKS:
            try:
                passed, detail = fn()
            except Exception as exc:  # a broken check must be reported, not crash the CLI
                passed, detail = False, f"{type(exc).__name__}: {exc}"
            results.append((name, bool(passed), detail))
    return results
