"""Additive (Bahdanau), Dot and General (Luong) attention against hand-written references."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dhian.nn.attention import AdditiveAttention, DotAttention, GeneralAttention, masked_softmax

B, TK, DQ, DK, DV, HID = 3, 5, 6, 4, 7, 8


def inputs(dq: int = DQ, dk: int = DK) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 1, 0, 1]], dtype=torch.bool)
    return torch.randn(B, dq), torch.randn(B, TK, dk), torch.randn(B, TK, DV), mask


def reference(scores_fn, query, keys, values, mask):  # type: ignore[no-untyped-def]
    """Per example, per key loops; softmax over the unmasked keys only."""
    ctx = torch.zeros(B, DV)
    weights = torch.zeros(B, TK)
    for b in range(B):
        idx = [j for j in range(TK) if mask[b, j]]
        s = torch.stack([scores_fn(query[b], keys[b, j]) for j in idx])
        p = torch.softmax(s, 0)
        weights[b, idx] = p
        ctx[b] = sum(p[n] * values[b, j] for n, j in enumerate(idx))
    return ctx, weights


def check(module, query, keys, values, mask, score) -> None:  # type: ignore[no-untyped-def]
    ctx, w = module(query, keys, values, mask)
    assert ctx.shape == (B, DV) and w.shape == (B, TK)
    ref_ctx, ref_w = reference(score, query, keys, values, mask)
    torch.testing.assert_close(ctx, ref_ctx, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w, ref_w, atol=1e-6, rtol=1e-5)
    assert (w[~mask] == 0).all()
    ctx2, w2 = module(query, keys, values, mask, proj_keys=module.precompute_keys(keys))
    torch.testing.assert_close(ctx2, ctx)
    torch.testing.assert_close(w2, w)


def test_additive_matches_reference() -> None:
    q, k, v, mask = inputs()
    att = AdditiveAttention(DQ, DK, HID)
    wq, wk, bk, e = (
        att.query_proj.weight,
        att.key_proj.weight,
        att.key_proj.bias,
        att.energy.weight[0],
    )
    check(att, q, k, v, mask, lambda qi, kj: e @ torch.tanh(wq @ qi + wk @ kj + bk))
    assert att.precompute_keys(k).shape == (B, TK, HID)


def test_dot_matches_reference() -> None:
    q, k, v, mask = inputs(dq=DK)
    check(DotAttention(), q, k, v, mask, lambda qi, kj: qi @ kj)
    with pytest.raises(ValueError, match="same size"):
        DotAttention()(torch.randn(B, 3), k, v)


def test_general_matches_reference() -> None:
    q, k, v, mask = inputs()
    att = GeneralAttention(DQ, DK)
    w = att.proj.weight  # (DQ, DK)
    check(att, q, k, v, mask, lambda qi, kj: qi @ w @ kj)


def test_no_mask_and_fully_masked_row() -> None:
    q, k, v, _ = inputs()
    att = AdditiveAttention(DQ, DK, HID)
    _, w = att(q, k, v)
    torch.testing.assert_close(w.sum(-1), torch.ones(B))
    mask = torch.ones(B, TK, dtype=torch.bool)
    mask[1] = False
    ctx, w = att(q, k, v, mask)
    assert (w[1] == 0).all() and (ctx[1] == 0).all() and torch.isfinite(ctx).all()


def test_gradcheck_additive_float64() -> None:
    torch.manual_seed(0)
    att = AdditiveAttention(3, 2, 4).double()
    q = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 4, 2, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    assert torch.autograd.gradcheck(lambda a, b, c: att(a, b, c, mask), (q, k, v))


def test_shape_errors() -> None:
    q, k, v, mask = inputs()
    att = GeneralAttention(DQ, DK)
    with pytest.raises(ValueError, match=r"expected query \(B, Dq\), received \(3, 1, 6\)"):
        att(q[:, None], k, v)
    with pytest.raises(ValueError, match=r"expected keys \(3, Tk, Dk\), received \(2, 5, 4\)"):
        att(q, k[:2], v)
    with pytest.raises(ValueError, match=r"expected values \(3, 5, Dv\), received \(3, 4, 7\)"):
        att(q, k, v[:, :4])
    with pytest.raises(ValueError, match=r"expected a bool mask \(3, 5\), received \(3, 4\)"):
        att(q, k, v, mask[:, :4])
    with pytest.raises(
        ValueError, match=r"expected proj_keys \(3, 5, \.\.\.\), received \(3, 4, 6\)"
    ):
        att(q, k, v, mask, proj_keys=torch.randn(3, 4, 6))


@settings(max_examples=30, deadline=None)
@given(lengths=st.lists(st.integers(0, 6), min_size=1, max_size=5))
def test_masked_softmax_random_lengths(lengths: list[int]) -> None:
    scores = torch.randn(len(lengths), 6, generator=torch.Generator().manual_seed(len(lengths)))
    mask = torch.arange(6)[None] < torch.tensor(lengths)[:, None]
    w = masked_softmax(scores, mask)
    assert torch.isfinite(w).all() and (w[~mask] == 0).all()
    for row, n in zip(w, lengths, strict=True):
        assert row.sum().item() == pytest.approx(1.0 if n else 0.0, abs=1e-6)
