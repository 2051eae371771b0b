"""Fused oneDNN linears (:mod:`dhian.nn.fused_linear`) and the fused encoder block
(:mod:`dhian.nn.fused_encoder`) against their float definitions.

int8 is checked twice: exactly (to float rounding) against its own arithmetic — the input
quantized to uint8 with one dynamic scale, times the dequantized int8 weight — so a wrong
scale, zero point or layout fails; and loosely against the float layer (quantization error).
The fused post-ops (GELU, residual add) must equal the unfused composition.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dhian.nn import EncoderBlock
from dhian.nn.fused_encoder import FusedEncoderBlock
from dhian.nn.fused_linear import FusedLinear, fused_linear_available, quantize_uint8
from dhian.nn.masks import padding_mask

pytestmark = pytest.mark.skipif(
    not (fused_linear_available("int8") and fused_linear_available("bf16")),
    reason="this torch build has no oneDNN (mkldnn) CPU operators",
)


def rel(got: Tensor, ref: Tensor) -> float:
    """‖got − ref‖ / ‖ref‖."""
    return float((got.float() - ref.float()).norm() / ref.float().norm())


def layer(k: int = 64, n: int = 48, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    lin = nn.Linear(k, n)
    with torch.no_grad():
        lin.bias.normal_(std=0.5)
    return lin


def int8_reference(lin: nn.Linear, x: Tensor) -> Tensor:
    """What the int8 layer computes, in float: dequant(quant(x)) @ dequant(quant(W))ᵀ + b."""
    flat = x.reshape(-1, x.size(-1)).double()  # (M, K)
    low, high = min(float(flat.min()), 0.0), max(float(flat.max()), 0.0)
    s = (high - low) / 255.0
    z = round(-low / s)
    xq = ((torch.round(flat / s) + z).clamp(0, 255) - z) * s  # (M, K) dequantized uint8
    w = lin.weight.detach()
    scale = w.abs().amax(dim=1, keepdim=True) / 127.0  # (N, 1)
    wq = torch.round(w / scale).clamp(-127, 127) * scale  # (N, K)
    y = xq @ wq.double().T + lin.bias.detach().double()
    return y.float().reshape(*x.shape[:-1], -1)


@torch.no_grad()
def test_int8_computes_its_quantized_arithmetic_exactly() -> None:
    lin = layer()
    x = torch.randn(3, 7, 64) * 2 + 0.5  # (B, T, K), not centred: a nonzero zero point
    f = FusedLinear.from_float(lin, "int8")
    got = f(x)
    assert got.shape == (3, 7, 48) and got.dtype == torch.float32
    assert rel(got, int8_reference(lin, x)) < 1e-5
    assert 1e-3 < rel(got, lin(x)) < 0.03  # quantization error: present, and small


@torch.no_grad()
@pytest.mark.parametrize("mode", ["int8", "bf16", "fp32"])
def test_fused_post_ops_equal_the_unfused_composition(mode: str) -> None:
    lin = layer(seed=1)
    dtype = torch.bfloat16 if mode == "bf16" else torch.float32
    x = torch.randn(2, 5, 64).to(dtype)
    r = torch.randn(2, 5, 48).to(dtype)
    f = FusedLinear.from_float(lin, mode)
    plain = f(x)
    tol = 1e-2 if mode == "bf16" else 1e-5
    assert rel(f(x, activation="gelu"), F.gelu(plain.float())) < tol
    assert rel(f(x, activation="gelu_tanh"), F.gelu(plain.float(), approximate="tanh")) < tol
    assert rel(f(x, activation="relu"), F.relu(plain.float())) < tol
    assert rel(f(x, residual=r), plain.float() + r.float()) < tol
    assert rel(plain, lin(x.float())) < (0.03 if mode == "int8" else tol)


@torch.no_grad()
def test_bf16_and_fp32_keep_their_dtype() -> None:
    lin = layer(seed=2)
    x = torch.randn(4, 64)
    assert FusedLinear.from_float(lin, "fp32")(x).dtype == torch.float32
    y = FusedLinear.from_float(lin, "bf16")(x.bfloat16())
    assert y.dtype == torch.bfloat16 and y.shape == (4, 48)
    ref = F.linear(x.bfloat16(), lin.weight.bfloat16(), lin.bias.bfloat16())
    assert rel(y, ref) < 1e-2


def test_quantize_uint8_range_zero_point_and_edge_cases() -> None:
    x = torch.tensor([[-1.0, 0.0, 0.5, 3.0]])
    codes, scale, zero = quantize_uint8(x)
    assert codes.dtype == torch.uint8 and codes.shape == x.shape
    assert scale == pytest.approx(4.0 / 255) and zero == round(255 / 4)
    assert codes[0, 0] == 0 and codes[0, 3] == 255 and codes[0, 1] == zero  # 0.0 is exact
    codes, scale, zero = quantize_uint8(torch.full((2, 3), 2.0))  # range [0, 2]
    assert zero == 0 and bool((codes == 255).all())
    codes, scale, zero = quantize_uint8(torch.zeros(2, 3))
    assert scale == 1.0 and zero == 0 and not codes.any()
    assert quantize_uint8(torch.zeros(0, 4))[0].shape == (0, 4)


def test_bad_arguments_are_one_line_errors() -> None:
    lin = layer()
    f = FusedLinear.from_float(lin, "int8")
    with pytest.raises(ValueError, match=r"expected x \(\.\.\., 64\)"):
        f(torch.randn(2, 63))
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        f(torch.randn(2, 64), activation="swish")
    with pytest.raises(ValueError, match="not both"):
        f(torch.randn(2, 64), activation="gelu", residual=torch.randn(2, 48))
    with pytest.raises(ValueError, match="unknown mode 'int4'"):
        FusedLinear.from_float(lin, "int4")


def block(norm_first: bool, activation: str = "gelu", seed: int = 3) -> EncoderBlock:
    torch.manual_seed(seed)
    b = EncoderBlock(32, 4, 64, dropout=0.0, norm_first=norm_first, activation=activation)
    with torch.no_grad():
        for p in b.parameters():
            if p.dim() == 1:
                p.normal_(std=0.1)  # nonzero biases and norm shifts
    return b.eval()


@torch.no_grad()
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["gelu", "gelu_new", "relu", "silu"])
def test_fused_block_equals_the_encoder_block(norm_first: bool, activation: str) -> None:
    b = block(norm_first, activation)
    x = torch.randn(3, 6, 32)  # (B, T, E)
    mask = padding_mask(torch.tensor([6, 4, 1]), max_len=6)  # (B, 1, 1, T)
    ref, ref_w = b(x, mask=mask, need_weights=True)
    fp32 = FusedEncoderBlock(b, "fp32")
    got, w = fp32(x, mask=mask, need_weights=True)
    assert rel(got, ref) < 1e-5 and w is not None and ref_w is not None
    assert torch.allclose(w, ref_w, atol=1e-5)
    assert rel(fp32(x, mask=mask)[0], ref) < 1e-5  # the SDPA path
    int8 = FusedEncoderBlock(b, "int8")
    err = rel(int8(x, mask=mask)[0], ref)
    assert 1e-4 < err < 0.03, err
    bf16 = FusedEncoderBlock(block(norm_first, activation).to(torch.bfloat16), "bf16")
    got16, _ = bf16(x.bfloat16(), mask=mask)
    assert got16.dtype == torch.bfloat16 and rel(got16, ref) < 0.03


def test_fused_block_refuses_rotary_attention() -> None:
    from dhian.nn import RotaryEmbedding

    b = EncoderBlock(32, 4, 64, dropout=0.0, rotary=RotaryEmbedding(8, 16))
    with pytest.raises(ValueError, match="rotary"):
        FusedEncoderBlock(b, "int8")
