"""scaled_dot_product: fast (SDPA) path == eager path == a per-row float64 reference."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dhian.nn.attention import scaled_dot_product
from dhian.nn.masks import causal_mask, combine, padding_mask


def reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-by-row softmax over the allowed keys only, in float64 (no -inf tricks)."""
    b, h, tq, d = q.shape
    tk = k.size(2)
    full = torch.ones(b, h, tq, tk, dtype=torch.bool) if mask is None else mask.expand(b, h, tq, tk)
    out = torch.zeros(b, h, tq, v.size(-1), dtype=torch.float64)
    weights = torch.zeros(b, h, tq, tk, dtype=torch.float64)
    for bi in range(b):
        for hi in range(h):
            for i in range(tq):
                idx = full[bi, hi, i].nonzero().flatten()
                if idx.numel() == 0:
                    continue
                s = (k[bi, hi, idx].double() @ q[bi, hi, i].double()) / math.sqrt(d)
                p = torch.exp(s - s.max())
                p = p / p.sum()
                weights[bi, hi, i, idx] = p
                out[bi, hi, i] = p @ v[bi, hi, idx].double()
    return out, weights


def qkv(
    b: int = 2, h: int = 3, tq: int = 4, tk: int = 5, d: int = 8
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.randn(b, h, tq, d), torch.randn(b, h, tk, d), torch.randn(b, h, tk, d)


MASKS = {
    "none": None,
    "padding": padding_mask(torch.tensor([5, 2]), max_len=5),
    "causal+padding": combine(padding_mask(torch.tensor([5, 3])), causal_mask(4, tk=5)),
    "per-head random": torch.rand(2, 3, 4, 5, generator=torch.Generator().manual_seed(1)) > 0.4,
    "fully masked rows": padding_mask(torch.tensor([0, 3]), max_len=5),
}


@pytest.mark.parametrize("name", list(MASKS))
def test_paths_agree_with_reference(name: str) -> None:
    q, k, v = qkv()
    mask = MASKS[name]
    fast, none = scaled_dot_product(q, k, v, mask)
    slow, w = scaled_dot_product(q, k, v, mask, need_weights=True)
    ref_out, ref_w = reference(q, k, v, mask)
    assert none is None and w is not None
    assert fast.shape == (2, 3, 4, 8) and w.shape == (2, 3, 4, 5)
    torch.testing.assert_close(fast, slow, atol=1e-6, rtol=0)
    torch.testing.assert_close(slow.double(), ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w.double(), ref_w, atol=1e-6, rtol=1e-5)
    assert torch.isfinite(fast).all() and torch.isfinite(w).all()


def test_rows_sum_to_one_and_padded_keys_exactly_zero() -> None:
    q, k, v = qkv()
    lengths = torch.tensor([5, 2])
    _, w = scaled_dot_product(q, k, v, padding_mask(lengths), need_weights=True)
    assert w is not None
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 4))
    assert (w[1, :, :, 2:] == 0).all()
    assert (w[0] > 0).all()


def test_causal_zero_above_diagonal_including_is_causal() -> None:
    q, k, v = qkv(tq=5)
    _, w = scaled_dot_product(q, k, v, causal_mask(5), need_weights=True)
    assert w is not None
    assert (torch.triu(w, diagonal=1) == 0).all()
    assert (w[causal_mask(5).expand_as(w)] > 0).all()
    fast, _ = scaled_dot_product(q, k, v, is_causal=True)
    slow, w2 = scaled_dot_product(q, k, v, is_causal=True, need_weights=True)
    torch.testing.assert_close(fast, slow, atol=1e-6, rtol=0)
    assert w2 is not None and torch.equal(w2, w)
    with pytest.raises(ValueError, match="Tq == Tk"):
        scaled_dot_product(*qkv(tq=2, tk=3), is_causal=True)


@pytest.mark.parametrize("need_weights", [False, True])
def test_fully_masked_rows_zero_output_and_finite_gradients(need_weights: bool) -> None:
    q, k, v = (t.requires_grad_() for t in qkv())
    mask = padding_mask(torch.tensor([0, 3]), max_len=5)
    out, w = scaled_dot_product(q, k, v, mask, need_weights=need_weights)
    assert (out[0] == 0).all()
    if w is not None:
        assert (w[0] == 0).all()
    out.square().sum().backward()
    for t in (q, k, v):
        assert t.grad is not None and torch.isfinite(t.grad).all()
    assert q.grad is not None and (q.grad[0] == 0).all()


def test_dropout_returns_pre_dropout_weights() -> None:
    q, k, v = qkv()
    torch.manual_seed(1)
    out, w = scaled_dot_product(q, k, v, dropout=0.5, need_weights=True)
    assert w is not None
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 4))
    no_drop, _ = scaled_dot_product(q, k, v)
    assert not torch.allclose(out, no_drop)
    fast, _ = scaled_dot_product(q, k, v, dropout=0.5)
    assert torch.isfinite(fast).all()


def test_shape_errors_name_expected_and_received() -> None:
    q, k, v = qkv()
    with pytest.raises(ValueError, match=r"received q \(3, 4, 8\)"):
        scaled_dot_product(q[0], k, v)
    with pytest.raises(ValueError, match=r"expected k .*\(2, 3, 5, 8\).*received k \(2, 3, 5, 7\)"):
        scaled_dot_product(q, k[..., :7], v)
    with pytest.raises(
        ValueError, match=r"broadcastable to .*\(2, 3, 4, 5\).*received shape \(2, 5\)"
    ):
        scaled_dot_product(q, k, v, torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"torch\.bool"):
        scaled_dot_product(q, k, v, torch.ones(1, 1, 1, 5))


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 6), min_size=1, max_size=4),
    tq=st.integers(1, 4),
    causal=st.booleans(),
)
def test_random_lengths_never_nan_and_paths_agree(
    lengths: list[int], tq: int, causal: bool
) -> None:
    b, tk = len(lengths), 6
    gen = torch.Generator().manual_seed(sum(lengths) + tq)
    q = torch.randn(b, 2, tq, 4, generator=gen)
    k = torch.randn(b, 2, tk, 4, generator=gen)
    v = torch.randn(b, 2, tk, 4, generator=gen)
    pad = padding_mask(torch.tensor(lengths), max_len=tk)
    mask = combine(pad, causal_mask(tq, tk=tk) if causal else None)
    assert mask is not None
    fast, _ = scaled_dot_product(q, k, v, mask)
    slow, w = scaled_dot_product(q, k, v, mask, need_weights=True)
    assert w is not None
    assert torch.isfinite(fast).all() and torch.isfinite(slow).all()
    torch.testing.assert_close(fast, slow, atol=1e-6, rtol=0)
    allowed = mask.expand_as(w)
    assert (w[~allowed] == 0).all()
    sums = w.sum(-1)
    has_key = allowed.any(-1)
    torch.testing.assert_close(sums[has_key], torch.ones_like(sums[has_key]))
    assert (sums[~has_key] == 0).all()


def test_fast_path_never_gives_sdpa_a_fully_masked_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """Some SDPA backends (CUDA flash/efficient, older CPU) return NaN for a row with no allowed
    key; the fast path must not depend on the backend, so such rows never reach SDPA."""
    import dhian.nn.mha as mha

    seen: list[torch.Tensor] = []
    real = mha.F.scaled_dot_product_attention

    def spy(*args, attn_mask=None, **kwargs):  # type: ignore[no-untyped-def]
        assert attn_mask is not None
        seen.append(attn_mask)
        return real(*args, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(mha.F, "scaled_dot_product_attention", spy)
    q, k, v = qkv()
    mask = padding_mask(torch.tensor([0, 3]), max_len=5)
    out, _ = scaled_dot_product(q, k, v, mask)
    assert len(seen) == 1 and seen[0].any(-1).all()
    assert (out[0] == 0).all()


def test_bf16_training_on_cpu_runs_sdpa_in_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 q/k/v that autograd will differentiate go through SDPA in float32 (torch's bf16
    CPU backward is several times slower); the output keeps bf16 and the gradients match a
    float32 run to bf16 rounding. Without gradients (inference) SDPA gets bf16 as before."""
    import dhian.nn.mha as mha

    seen: list[torch.dtype] = []
    real = mha.F.scaled_dot_product_attention

    def spy(q, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(q.dtype)
        return real(q, *args, **kwargs)

    monkeypatch.setattr(mha.F, "scaled_dot_product_attention", spy)
    q32, k32, v32 = (t.requires_grad_() for t in qkv())
    mask = padding_mask(torch.tensor([5, 3]), max_len=5)
    out32, _ = scaled_dot_product(q32, k32, v32, mask)
    out32.square().sum().backward()
    q, k, v = (t.detach().bfloat16().requires_grad_() for t in (q32, k32, v32))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = scaled_dot_product(q, k, v, mask)
    assert out.dtype == torch.bfloat16
    out.float().square().sum().backward()
    assert seen == [torch.float32, torch.float32]
    torch.testing.assert_close(out.float(), out32, atol=3e-2, rtol=3e-2)
    for low, ref in ((q, q32), (k, k32), (v, v32)):
        assert low.grad is not None and ref.grad is not None and low.grad.dtype == torch.bfloat16
        torch.testing.assert_close(low.grad.float(), ref.grad, atol=5e-2, rtol=5e-2)
    with torch.no_grad():
        scaled_dot_product(q, k, v, mask)
    assert seen[-1] == torch.bfloat16


@pytest.mark.parametrize("lengths", [[5, 2], [0, 3]], ids=["all rows kept", "a fully masked row"])
def test_masked_fast_path_keeps_sdpa_layout_for_a_view_head_merge(lengths: list[int]) -> None:
    """With a padding mask the output is still in SDPA's (B, Tq, H, D) memory order, so the
    caller's head merge ``out.transpose(1, 2).reshape(B, Tq, E)`` is a view, not a copy
    (masked_fill would have copied it into (B, H, Tq, D) order), and it still matches."""
    qkv_ = torch.randn(2, 4, 3, 3, 8)  # (B, T, 3, H, D), as a fused projection gives it
    q, k, v = qkv_.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, T, D)
    k, v = torch.cat([k, k[:, :, :1]], 2), torch.cat([v, v[:, :, :1]], 2)  # Tk = 5
    mask = padding_mask(torch.tensor(lengths), max_len=5)
    out, _ = scaled_dot_product(q, k, v, mask)
    assert out.transpose(1, 2).is_contiguous()
    ref, _ = reference(q, k, v, mask)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
