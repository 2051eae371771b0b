"""BlockQ4Linear / BlockQ8Embedding / BlockQ8Head: the file's block values used as they are,
with float32 math. Their dequantised weights are exactly ``q·d + m`` (``q·s``); every product
path (the fused one-row loop inside a compiled graph — tested here with dhian's C++ kernel
switched off, which tests/nn/test_cpu_kernels.py covers — and the sliced
dequantise-and-matmul path) equals float32 matmul with those weights to float32 rounding; an
output count that is not a multiple of the tile works; bad shapes are refused."""

from __future__ import annotations

import pytest
import torch

from dhian.nn import block_quant
from dhian.nn.block_quant import BlockQ4Linear, BlockQ8Embedding, BlockQ8Head, q4_rows


@pytest.fixture
def no_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Few-row products take the pure-PyTorch paths (as on a CPU without the kernel)."""
    monkeypatch.setattr(block_quant, "_kernel_takes", lambda x, codes: False)


def _q4(n: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (n, k), generator=g)
    d = torch.rand(n, k // 32, generator=g) * 0.02
    m = -torch.rand(n, k // 32, generator=g) * 0.1
    return q, d, m


def _exact(q: torch.Tensor, d: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    n, k = q.shape
    return (q.float().view(n, k // 32, 32) * d[..., None] + m[..., None]).view(n, k)  # (N, K)


@pytest.mark.parametrize("n", [48, 40])  # a multiple of the tile, and not
@pytest.mark.usefixtures("no_kernel")
def test_q4_weight_is_exact_and_every_path_is_float32_matmul(n: int) -> None:
    q, d, m = _q4(n, 64)
    layer = BlockQ4Linear.from_codes(q, d, m)
    w = _exact(q, d, m)
    assert torch.equal(layer.dequantized_weight(), w)
    assert layer.packed.shape[-1] == (16 if n % 16 == 0 else 1)
    x = torch.randn(3, 5, 64)
    y = layer(x)  # 15 rows: dequantise and matmul
    assert y.shape == (3, 5, n) and y.dtype == torch.float32
    torch.testing.assert_close(y, x @ w.T, rtol=1e-5, atol=1e-5)
    one = torch.randn(1, 1, 64)
    fused = torch.compile(layer, dynamic=False, fullgraph=True)(one)  # the fused loop
    torch.testing.assert_close(fused, one @ w.T, rtol=1e-5, atol=1e-5)
    eager = q4_rows(one.view(1, 64), layer.packed, layer.d, layer.m)  # the same math, eagerly
    torch.testing.assert_close(fused.view(1, n), eager, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [64, 96])  # blocks summed in two runs side by side, and in one
@pytest.mark.usefixtures("no_kernel")
def test_q4_fused_loop_after_a_norm_is_float32_matmul(k: int) -> None:
    """The fused loop's input made by an RMSNorm in the same graph (computed into its own
    buffer before the loop, not recomputed inside it) and an odd block count (one run)."""
    q, d, m = _q4(32, k, seed=3)
    layer = BlockQ4Linear.from_codes(q, d, m)
    w = _exact(q, d, m)

    def normed(h: torch.Tensor) -> torch.Tensor:
        return layer(h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-5))

    h = torch.randn(1, k)
    fused = torch.compile(normed, dynamic=False, fullgraph=True)(h)
    x = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-5)
    torch.testing.assert_close(fused, x @ w.T, rtol=1e-5, atol=1e-5)


@pytest.mark.usefixtures("no_kernel")
def test_q4_slices_wide_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(block_quant, "_SLICE", 32)
    q, d, m = _q4(80, 32, seed=1)
    layer = BlockQ4Linear.from_codes(q, d, m)
    x = torch.randn(4, 32)
    torch.testing.assert_close(layer(x), x @ _exact(q, d, m).T, rtol=1e-5, atol=1e-5)


@pytest.mark.usefixtures("no_kernel")
def test_q8_table_lookup_and_tied_logits() -> None:
    g = torch.Generator().manual_seed(2)
    codes = torch.randint(-127, 128, (64, 96), generator=g, dtype=torch.int8)
    scales = torch.rand(64, 3, generator=g) * 0.01
    table = BlockQ8Embedding.from_rows(codes, scales)
    w = (codes.float().view(64, 3, 32) * scales[..., None]).view(64, 96)  # (V, E)
    assert torch.equal(table.dequantized_weight(), w)
    ids = torch.tensor([[0, 63, 17], [5, 5, 40]])
    assert torch.equal(table(ids), w[ids])
    head = BlockQ8Head(table)
    assert head.table.codes is table.codes  # one copy of the codes
    x = torch.randn(6, 96, generator=g)
    torch.testing.assert_close(head(x), x @ w.T, rtol=1e-5, atol=1e-5)  # dequantise, matmul
    fused = torch.compile(head, dynamic=False, fullgraph=True)(x[:1])  # the fused loop
    torch.testing.assert_close(fused, x[:1] @ w.T, rtol=1e-5, atol=1e-5)


def test_bad_shapes_are_refused() -> None:
    q, d, m = _q4(16, 64)
    with pytest.raises(ValueError, match="K a multiple of 32"):
        BlockQ4Linear.from_codes(q[:, :40], d, m)
    with pytest.raises(ValueError, match=r"0\.\.15"):
        BlockQ4Linear.from_codes(q + 16, d, m)
    with pytest.raises(ValueError, match="uint8 packed"):
        BlockQ4Linear(torch.zeros(1, 2, 16, 16), torch.zeros(1, 2, 16), torch.zeros(1, 2, 16))
    with pytest.raises(ValueError, match="scales of shape"):
        BlockQ8Embedding.from_rows(torch.zeros(4, 64, dtype=torch.int8), torch.zeros(4, 3))
