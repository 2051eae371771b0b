"""The fused decoder block (:mod:`dhian.nn.fused_decoder`) against the float
:class:`~dhian.nn.blocks.DecoderBlock`, and the SiLU post-op of :class:`FusedLinear`.

fp32 mode must equal the float block to float rounding (same function, prepacked GEMMs),
teacher-forced and step by step with KV caches; int8 and bf16 must stay close to it.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from dhian.nn import DecoderBlock
from dhian.nn.attention import KVCache
from dhian.nn.fused_decoder import FusedDecoderBlock
from dhian.nn.fused_linear import FusedLinear, fused_linear_available
from dhian.nn.masks import padding_mask

pytestmark = pytest.mark.skipif(
    not (fused_linear_available("int8") and fused_linear_available("bf16")),
    reason="this torch build has no oneDNN (mkldnn) CPU operators",
)


def rel(got: Tensor, ref: Tensor) -> float:
    """‖got − ref‖ / ‖ref‖."""
    return float((got.float() - ref.float()).norm() / ref.float().norm())


def block(norm_first: bool, activation: str, seed: int = 0) -> DecoderBlock:
    torch.manual_seed(seed)
    b = DecoderBlock(32, 4, 64, dropout=0.0, norm_first=norm_first, activation=activation)
    with torch.no_grad():
        for p in b.parameters():
            if p.dim() == 1:
                p.normal_(std=0.2)  # non-zero biases and norm shifts
    return b.eval()


def data(seed: int = 1) -> tuple[Tensor, Tensor, Tensor]:
    """x (B=3, Tt=5, E), memory (3, Ts=7, E), memory mask (3, 1, 1, 7) with padding."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 5, 32, generator=g)
    memory = torch.randn(3, 7, 32, generator=g)
    mask = padding_mask(torch.tensor([7, 4, 6]), max_len=7)
    return x, memory, mask


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu", "silu"])
def test_fp32_mode_equals_the_float_block(norm_first: bool, activation: str) -> None:
    ref_block = block(norm_first, activation)
    fused = FusedDecoderBlock(ref_block, "fp32")
    x, memory, mask = data()
    with torch.no_grad():
        ref, rs, rc = ref_block(x, memory, memory_mask=mask, need_weights=True)
        got, gs, gc = fused(x, memory, memory_mask=mask, need_weights=True)
        fast, _, _ = fused(x, memory, memory_mask=mask)
    assert gs is not None and gc is not None and rs is not None and rc is not None
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(fast, ref, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(gs, rs, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(gc, rc, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("mode", ["fp32", "int8"])
def test_step_by_step_with_caches_equals_teacher_forcing(mode: str) -> None:
    fused = FusedDecoderBlock(block(False, "silu"), mode)
    x, memory, mask = data()
    with torch.no_grad():
        full, _, _ = fused(x, memory, memory_mask=mask)  # (B, Tt, E)
        self_cache = KVCache.empty()
        cross_cache = fused.static_kv(memory)
        assert cross_cache.static and cross_cache.k is not None
        assert cross_cache.k.shape == (3, 4, 7, 8)
        steps = [
            fused(
                x[:, t : t + 1],
                None,
                memory_mask=mask,
                self_cache=self_cache,
                cross_cache=cross_cache,
            )[0]
            for t in range(x.size(1))
        ]
    assert self_cache.length == x.size(1)
    got = torch.cat(steps, dim=1)  # (B, Tt, E)
    if mode == "fp32":
        torch.testing.assert_close(got, full, atol=2e-5, rtol=1e-4)
    else:  # int8: each call quantizes its own input with its own scale
        assert rel(got, full) < 0.03


@pytest.mark.parametrize("mode,bound", [("int8", 0.05), ("bf16", 0.03)])
def test_low_precision_modes_stay_close(mode: str, bound: float) -> None:
    ref_block = block(True, "relu")
    x, memory, mask = data()
    with torch.no_grad():
        ref, _, _ = ref_block(x, memory, memory_mask=mask)
        if mode == "bf16":
            fused = FusedDecoderBlock(block(True, "relu").to(torch.bfloat16), mode)
            got, _, _ = fused(x.bfloat16(), memory.bfloat16(), memory_mask=mask)
            assert got.dtype == torch.bfloat16
        else:
            got, _, _ = FusedDecoderBlock(ref_block, mode)(x, memory, memory_mask=mask)
            assert got.dtype == torch.float32
    err = rel(got, ref)
    assert 0 < err < bound, err


def test_a_block_without_cross_attention_is_refused() -> None:
    gpt_block = DecoderBlock(32, 4, 64, dropout=0.0, cross_attention=False)
    with pytest.raises(ValueError, match="no cross attention"):
        FusedDecoderBlock(gpt_block, "int8")


def test_a_filled_cross_cache_or_memory_is_needed() -> None:
    fused = FusedDecoderBlock(block(False, "relu"), "fp32")
    with pytest.raises(ValueError, match="needs memory"):
        fused(torch.randn(2, 1, 32), None, self_cache=KVCache.empty())


@pytest.mark.parametrize("mode", ["int8", "bf16", "fp32"])
def test_silu_post_op_equals_silu_after_the_linear(mode: str) -> None:
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 48)
    fused = FusedLinear.from_float(lin, mode)
    x = torch.randn(5, 64)
    if mode == "bf16":
        x = x.bfloat16()
    with torch.no_grad():
        got = fused(x, activation="silu")
        ref = F.silu(fused(x).float())
    tol = 2e-2 if mode == "bf16" else 1e-5
    torch.testing.assert_close(got.float(), ref, atol=tol, rtol=tol)
