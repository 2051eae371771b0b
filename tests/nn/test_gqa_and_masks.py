"""scaled_dot_product: grouped-query attention and masks of any broadcastable rank.

Oracles: torch's own ``scaled_dot_product_attention`` (masks of rank 2/3/4, ``enable_gqa``)
and explicitly repeated keys/values (HF's ``repeat_kv``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dhian.nn.mha import scaled_dot_product

B, H, HKV, TQ, TK, D = 2, 6, 2, 4, 5, 8


def _qkv(hkv: int = HKV) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(B, H, TQ, D, generator=g),
        torch.randn(B, hkv, TK, D, generator=g),
        torch.randn(B, hkv, TK, D, generator=g),
    )


def _masks() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    causal = torch.ones(TQ, TK, dtype=torch.bool).tril(diagonal=TK - TQ)  # (Tq, Tk)
    pad = torch.tensor([[True] * 5, [False, False, True, True, True]])  # (B, Tk)
    return {
        "2-D causal (Tq, Tk)": causal,
        "3-D (H, Tq, Tk)": torch.rand(H, TQ, TK, generator=g) > 0.3,
        "4-D padding (B, 1, 1, Tk)": pad[:, None, None, :],
        "4-D per head": torch.rand(B, H, TQ, TK, generator=g) > 0.3,
        "2-D keys (1, Tk)": torch.tensor([[True, False, True, True, False]]),
    }


def _repeat(x: torch.Tensor) -> torch.Tensor:
    return x.repeat_interleave(H // x.size(1), dim=1)  # (B, H, Tk, D) as HF repeat_kv


@pytest.mark.parametrize("name", list(_masks()))
@pytest.mark.parametrize("hkv", [HKV, H])
def test_masks_of_any_rank_equal_torch_sdpa(name: str, hkv: int) -> None:
    q, k, v = _qkv(hkv)
    mask = _masks()[name]
    expected = F.scaled_dot_product_attention(q, _repeat(k), _repeat(v), attn_mask=mask)
    fast, none = scaled_dot_product(q, k, v, mask=mask)
    eager, w = scaled_dot_product(q, k, v, mask=mask, need_weights=True)
    assert none is None and w is not None and w.shape == (B, H, TQ, TK)
    torch.testing.assert_close(fast, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(eager, expected, atol=1e-6, rtol=0)
    assert not w.masked_select(~mask.expand(B, H, TQ, TK)).any()


def test_gqa_equals_repeated_keys_and_values_including_weights() -> None:
    q, k, v = _qkv()
    mask = _masks()["3-D (H, Tq, Tk)"]
    ref, ref_w = scaled_dot_product(q, _repeat(k), _repeat(v), mask=mask, need_weights=True)
    out, w = scaled_dot_product(q, k, v, mask=mask, need_weights=True)
    fast, _ = scaled_dot_product(q, k, v, mask=mask)
    assert ref_w is not None and w is not None
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(w, ref_w, atol=1e-6, rtol=0)
    torch.testing.assert_close(fast, out, atol=1e-6, rtol=0)
    causal_fast, _ = scaled_dot_product(q[:, :, :4], k[:, :, :4], v[:, :, :4], is_causal=True)
    causal_ref = F.scaled_dot_product_attention(
        q[:, :, :4], _repeat(k)[:, :, :4], _repeat(v)[:, :, :4], is_causal=True
    )
    torch.testing.assert_close(causal_fast, causal_ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("need_weights", [False, True])
def test_fully_masked_rows_stay_zero_with_gqa_and_2d_mask(need_weights: bool) -> None:
    q, k, v = _qkv()
    mask = torch.ones(TQ, TK, dtype=torch.bool)
    mask[1] = False  # query 1 may attend nowhere
    out, w = scaled_dot_product(q, k, v, mask=mask, need_weights=need_weights)
    assert torch.equal(out[:, :, 1], torch.zeros_like(out[:, :, 1]))
    assert out[:, :, 0].abs().sum() > 0
    if w is not None:
        assert torch.equal(w[:, :, 1], torch.zeros_like(w[:, :, 1]))


def test_bad_shapes_name_the_fix() -> None:
    q, k, v = _qkv()
    with pytest.raises(
        ValueError, match=r"broadcastable to .*\(2, 6, 4, 5\).*received shape \(3, 5\)"
    ):
        scaled_dot_product(q, k, v, mask=torch.ones(3, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"received shape \(1, 2, 6, 4, 5\)"):
        scaled_dot_product(q, k, v, mask=torch.ones(1, 2, 6, 4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="multiple of Hkv"):
        scaled_dot_product(q, k[:, :1].expand(B, 4, TK, D), v[:, :1].expand(B, 4, TK, D))
