"""MultiHeadAttention: equals torch.nn.MultiheadAttention with copied weights; KV cache."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dhian.nn.attention import KVCache, MultiHeadAttention, kv_caches
from dhian.nn.masks import as_key_mask, causal_mask, padding_mask
from dhian.nn.positional import RotaryEmbedding

E, H = 12, 3


def pair(bias: bool = True) -> tuple[MultiHeadAttention, nn.MultiheadAttention]:
    torch.manual_seed(0)
    ours = MultiHeadAttention(E, H, bias=bias)
    ref = nn.MultiheadAttention(E, H, bias=bias, batch_first=True)
    ref.load_state_dict(ours.state_dict())  # same names and layout
    if bias:  # torch zero-initialises biases: make them non-trivial for the comparison
        with torch.no_grad():
            ours.in_proj_bias.normal_()  # type: ignore[union-attr]
            ours.out_proj.bias.normal_()
        ref.load_state_dict(ours.state_dict())
    return ours, ref


def test_state_dict_layout_matches_torch() -> None:
    ours, ref = pair()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in ref.state_dict().items()
    }
    assert ours.in_proj_weight.shape == (3 * E, E)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(
    "case", ["self", "self+padding", "cross+padding", "causal", "causal+padding"]
)
def test_matches_torch_multihead_attention(case: str, bias: bool) -> None:
    ours, ref = pair(bias)
    torch.manual_seed(1)
    x = torch.randn(3, 5, E)
    mem = torch.randn(3, 7, E) if case.startswith("cross") else x
    tk = mem.size(1)
    ok = torch.ones(3, tk, dtype=torch.bool)
    if "padding" in case:
        ok = padding_mask(torch.tensor([tk, 2, 4]), max_len=tk)[:, 0, 0]
    kpm = None if "padding" not in case else ~ok
    causal = case.startswith("causal")
    attn_mask = ~causal_mask(5)[0, 0] if causal else None
    ref_out, ref_w = ref(
        x, mem, mem, key_padding_mask=kpm, attn_mask=attn_mask, average_attn_weights=False
    )
    mask = as_key_mask(ok) if kpm is not None else None
    key = None if mem is x else mem
    out, w = ours(x, key, mask=mask, need_weights=True, causal=causal)
    fast, none = ours(x, key, mask=mask, causal=causal)
    assert w is not None and none is None and w.shape == (3, H, 5, tk)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast, ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(w, ref_w, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        w.mean(1),
        ref(x, mem, mem, key_padding_mask=kpm, attn_mask=attn_mask)[1],
        atol=1e-5,
        rtol=1e-5,
    )


def test_separate_value_tensor_matches_torch() -> None:
    ours, ref = pair()
    x, k, v = torch.randn(2, 3, E), torch.randn(2, 4, E), torch.randn(2, 4, E)
    torch.testing.assert_close(ours(x, k, v)[0], ref(x, k, v)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rotary", [False, True])
def test_incremental_self_attention_equals_full_causal_pass(rotary: bool) -> None:
    torch.manual_seed(0)
    rope = RotaryEmbedding(E // H, max_len=16) if rotary else None
    mha = MultiHeadAttention(E, H, rotary=rope).eval()
    x = torch.randn(2, 6, E)
    pad = padding_mask(torch.tensor([6, 6]))  # all real: padding only exercises the mask path
    full, full_w = mha(x, mask=pad, causal=True, need_weights=True)
    assert full_w is not None
    cache = KVCache.empty()
    for t in range(6):
        step, w = mha(x[:, t : t + 1], cache=cache, causal=True, need_weights=True)
        assert (
            cache.length == t + 1 and cache.k is not None and cache.k.shape == (2, H, t + 1, E // H)
        )
        torch.testing.assert_close(step, full[:, t : t + 1], atol=1e-6, rtol=1e-5)
        assert w is not None
        torch.testing.assert_close(w[..., 0, :], full_w[..., t, : t + 1], atol=1e-6, rtol=1e-5)


def test_chunked_prefill_then_steps_equals_full() -> None:
    torch.manual_seed(0)
    mha = MultiHeadAttention(E, H, rotary=RotaryEmbedding(E // H, max_len=16)).eval()
    x = torch.randn(2, 7, E)
    full, _ = mha(x, causal=True)
    cache = KVCache.empty()
    a, _ = mha(x[:, :3], cache=cache, causal=True)
    b, _ = mha(x[:, 3:5], cache=cache, causal=True)  # Tq=2 against Tk=5: offset causal mask
    c, _ = mha(x[:, 5:], cache=cache, causal=True)
    torch.testing.assert_close(torch.cat([a, b, c], 1), full, atol=1e-6, rtol=1e-5)


def test_static_cross_cache_computes_once_and_reuses() -> None:
    torch.manual_seed(0)
    mha = MultiHeadAttention(E, H).eval()
    x, mem = torch.randn(2, 4, E), torch.randn(2, 5, E)
    mask = padding_mask(torch.tensor([5, 3]))
    full, _ = mha(x, mem, mask=mask)
    cache = KVCache.empty(static=True)
    first, _ = mha(x[:, :1], mem, mask=mask, cache=cache)
    k_obj = cache.k
    rest = [mha(x[:, t : t + 1], None, mask=mask, cache=cache)[0] for t in range(1, 4)]
    assert cache.k is k_obj and cache.length == 5  # not recomputed, not appended
    torch.testing.assert_close(torch.cat([first, *rest], 1), full, atol=1e-6, rtol=1e-5)
    # once filled, a (different) key is ignored
    ignored, _ = mha(x[:, :1], torch.randn(2, 5, E), mask=mask, cache=cache)
    torch.testing.assert_close(ignored, first)


def test_reorder_selects_rows_for_beam_search() -> None:
    torch.manual_seed(0)
    mha = MultiHeadAttention(E, H).eval()
    x = torch.randn(3, 4, E)
    index = torch.tensor([2, 2, 0])
    full, _ = mha(x[index], causal=True)
    cache = KVCache.empty()
    mha(x[:, :2], cache=cache, causal=True)
    assert cache.reorder(index) is cache and cache.k is not None and cache.k.size(0) == 3
    out = [mha(x[index, t : t + 1], cache=cache, causal=True)[0] for t in (2, 3)]
    torch.testing.assert_close(torch.cat(out, 1), full[:, 2:], atol=1e-6, rtol=1e-5)
    assert KVCache.empty().reorder(index).k is None
    caches = kv_caches(3, static=True)
    assert len(caches) == 3 and all(c.static and c.k is None for c in caches)
    assert caches[0] is not caches[1]


def test_gradcheck_float64() -> None:
    torch.manual_seed(0)
    mha = MultiHeadAttention(4, 2).double()
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    mem = torch.randn(2, 4, 4, dtype=torch.float64, requires_grad=True)
    mask = padding_mask(torch.tensor([4, 2]))

    def fn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return mha(a, b, mask=mask)[0]

    def fn_weights(a: torch.Tensor) -> torch.Tensor:
        out, w = mha(a, causal=True, need_weights=True)
        assert w is not None
        return out + w.sum()

    assert torch.autograd.gradcheck(fn, (x, mem))
    assert torch.autograd.gradcheck(fn_weights, (x,))


def test_dropout_only_in_training() -> None:
    torch.manual_seed(0)
    mha = MultiHeadAttention(E, H, dropout=0.5)
    x = torch.randn(2, 5, E)
    mha.eval()
    a, _ = mha(x)
    torch.testing.assert_close(a, mha(x)[0])
    mha.train()
    assert not torch.allclose(mha(x)[0], a)


def test_errors_name_expected_and_received() -> None:
    mha = MultiHeadAttention(E, H)
    with pytest.raises(
        ValueError, match=r"expected query of shape \(B, T, 12\), received \(2, 5, 8\)"
    ):
        mha(torch.randn(2, 5, 8))
    with pytest.raises(
        ValueError, match=r"expected key of shape \(2, T, 12\), received \(3, 4, 12\)"
    ):
        mha(torch.randn(2, 5, E), torch.randn(3, 4, E))
    with pytest.raises(ValueError, match="same length Tk"):
        mha(torch.randn(2, 5, E), torch.randn(2, 4, E), torch.randn(2, 3, E))
    with pytest.raises(ValueError, match=r"received shape \(2, 5\)"):
        mha(torch.randn(2, 5, E), mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="not divisible"):
        MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match="rotary dim"):
        MultiHeadAttention(E, H, rotary=RotaryEmbedding(6))
    with pytest.raises(ValueError, match="needs key"):
        mha(torch.randn(2, 1, E), cache=KVCache.empty(static=True))
    with pytest.raises(ValueError, match="non-static cache"):
        mha(torch.randn(2, 1, E), torch.randn(2, 3, E), cache=KVCache.empty())
