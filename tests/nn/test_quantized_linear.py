"""Int4Linear / Int8Linear / BlockInt8Embedding: each equals the matmul (lookup) of its own
dequantised weights within bf16 rounding, and int4 codes built from Q4_1-style maps reproduce
``q·d + m``."""

from __future__ import annotations

import torch

from dhian.nn.quantized_embedding import BlockInt8Embedding
from dhian.nn.quantized_linear import Int4Linear, Int8Linear, quantize_int4


def _close(y: torch.Tensor, ref: torch.Tensor, rel: float = 2e-2) -> None:
    scale = ref.abs().max().item()
    assert (y.float() - ref).abs().max().item() <= rel * scale


def test_int4_equals_its_dequantised_weights_and_the_affine_maps() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(96, 64, generator=g)
    q, d, m = quantize_int4(w)
    assert q.min() >= 0 and q.max() <= 15
    layer = Int4Linear.from_codes(q, d, m)
    exact = (q.float().view(96, 2, 32) * d[..., None] + m[..., None]).view(96, 64)  # (N, K)
    deq = layer.dequantized_weight()
    assert (deq - exact).abs().max() <= 1e-2 * exact.abs().max()  # bf16 scales/zeros
    assert (exact - w).abs().max() <= (d.max() / 2 + 1e-6)  # half a step
    x = torch.randn(5, 3, 64, generator=g)
    y = layer(x)
    assert y.shape == (5, 3, 96) and y.dtype == torch.float32
    _close(y, x @ deq.T)


def test_int8_and_block_embedding() -> None:
    g = torch.Generator().manual_seed(1)
    w = torch.randn(40, 64, generator=g)
    layer = Int8Linear.from_float(w)
    assert (layer.dequantized_weight() - w).abs().max() <= w.abs().max() / 127
    x = torch.randn(7, 64, generator=g).bfloat16()
    y = layer(x)
    assert y.dtype == torch.bfloat16
    _close(y, x.float() @ layer.dequantized_weight().T)
    codes = torch.randint(-127, 128, (10, 64), generator=g, dtype=torch.int8)
    scales = torch.rand(10, 2, generator=g).half().float()
    emb = BlockInt8Embedding(codes, scales)
    ids = torch.tensor([[3, 0], [9, 3]])
    table = (codes.float().view(10, 2, 32) * scales[..., None]).view(10, 64)
    assert torch.equal(emb(ids), table[ids])
