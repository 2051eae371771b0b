"""dhian's C++ block-quant kernel (dhian.nn.block_quant_kernel): built on first use; for 1–8
rows it computes what float32 matmul with the file's weights computes (to float32 rounding),
on one thread and two, eagerly and as a call inside a compiled graph; BlockQ4Linear and the
Q8 head use it for few rows and not for more; bad inputs are refused with the limit named; a
failed build, a disabled kernel or a CPU without AVX-512 leaves the pure-PyTorch paths."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from dhian.nn import block_quant, block_quant_kernel
from dhian.nn.block_quant import BlockQ4Linear, BlockQ8Embedding, BlockQ8Head

needs_kernel = pytest.mark.skipif(
    not block_quant_kernel._cpu_has_avx512(), reason="the kernel needs AVX-512"
)


@pytest.fixture
def kernel() -> None:
    assert block_quant_kernel.kernel_available(), "the kernel did not build on an AVX-512 CPU"


def _q4_layer(n: int, k: int, seed: int = 0) -> tuple[BlockQ4Linear, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (n, k), generator=g)
    d = torch.rand(n, k // 32, generator=g) * 0.02
    m = -torch.rand(n, k // 32, generator=g) * 0.1
    w = (q.float().view(n, k // 32, 32) * d[..., None] + m[..., None]).view(n, k)  # (N, K)
    return BlockQ4Linear.from_codes(q, d, m), w


def _q8_table(v: int, e: int, seed: int = 0) -> tuple[BlockQ8Embedding, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(-127, 128, (v, e), generator=g, dtype=torch.int8)
    scales = torch.rand(v, e // 32, generator=g) * 0.01
    w = (codes.float().view(v, e // 32, 32) * scales[..., None]).view(v, e)  # (V, E)
    return BlockQ8Embedding.from_rows(codes, scales), w


@needs_kernel
@pytest.mark.usefixtures("kernel")
@pytest.mark.parametrize("rows", [1, 3, 8])
@pytest.mark.parametrize("threads", [1, 2])
def test_kernel_is_float32_matmul(rows: int, threads: int) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        layer, w = _q4_layer(80, 96)  # 5 tiles, 3 blocks
        x = torch.randn(rows, 96)
        y = block_quant_kernel.q4_mm(x, layer.packed, layer.d, layer.m)
        torch.testing.assert_close(y, x @ w.T, rtol=1e-5, atol=1e-5)
        table, wt = _q8_table(48, 64)
        x = torch.randn(rows, 64)
        y = block_quant_kernel.q8_mm(x, table.codes, table.scales)
        torch.testing.assert_close(y, x @ wt.T, rtol=1e-5, atol=1e-5)
    finally:
        torch.set_num_threads(before)


@needs_kernel
@pytest.mark.usefixtures("kernel")
def test_layers_use_the_kernel_for_few_rows_eagerly_and_compiled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    layer, w = _q4_layer(48, 64, seed=1)
    table, wt = _q8_table(32, 64, seed=2)
    head = BlockQ8Head(table)
    calls: list[str] = []
    real_q4, real_q8 = block_quant_kernel.q4_mm, block_quant_kernel.q8_mm
    monkeypatch.setattr(block_quant_kernel, "q4_mm", lambda *a: calls.append("q4") or real_q4(*a))
    monkeypatch.setattr(block_quant_kernel, "q8_mm", lambda *a: calls.append("q8") or real_q8(*a))
    x = torch.randn(2, 4, 64)  # 8 rows: the kernel
    torch.testing.assert_close(layer(x), x @ w.T, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(head(x), x @ wt.T, rtol=1e-5, atol=1e-5)
    assert calls == ["q4", "q8"]
    x9 = torch.randn(9, 64)  # more rows than the kernel takes: dequantise and matmul
    torch.testing.assert_close(layer(x9), x9 @ w.T, rtol=1e-5, atol=1e-5)
    assert calls == ["q4", "q8"]
    monkeypatch.setattr(block_quant_kernel, "q4_mm", real_q4)
    one = torch.randn(1, 64)

    def step(h: torch.Tensor) -> torch.Tensor:
        return layer(torch.relu(h)) * 2  # the op between compiled kernels

    compiled = torch.compile(step, dynamic=False, fullgraph=True)
    torch.testing.assert_close(compiled(one), step(one), rtol=0, atol=0)


@needs_kernel
@pytest.mark.usefixtures("kernel")
def test_bad_inputs_are_refused_with_the_limit_named() -> None:
    layer, _ = _q4_layer(16, 64)
    with pytest.raises(RuntimeError, match="at most 8 rows"):
        block_quant_kernel.q4_mm(torch.randn(9, 64), layer.packed, layer.d, layer.m)
    with pytest.raises(RuntimeError, match=r"contiguous \(N/16, K/32, 16, 16\)"):
        block_quant_kernel.q4_mm(torch.randn(1, 96), layer.packed, layer.d, layer.m)
    with pytest.raises(RuntimeError, match="float32"):
        block_quant_kernel.q4_mm(torch.randn(1, 64), layer.packed, layer.d.double(), layer.m)


@pytest.fixture
def fresh_state() -> Iterator[None]:
    saved = dict(block_quant_kernel._state)
    block_quant_kernel._state.clear()
    yield
    block_quant_kernel._state.clear()
    block_quant_kernel._state.update(saved)


@pytest.mark.usefixtures("fresh_state")
def test_disabled_missing_or_failed_kernel_leaves_the_pytorch_paths(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DHIAN_KERNELS", "0")
    assert not block_quant_kernel.kernel_available()
    layer, w = _q4_layer(32, 64)
    x = torch.randn(1, 64)
    torch.testing.assert_close(layer(x), x @ w.T, rtol=1e-5, atol=1e-5)

    block_quant_kernel._state.clear()
    monkeypatch.setenv("DHIAN_KERNELS", "1")
    monkeypatch.setattr(block_quant_kernel, "_cpu_has_avx512", lambda: False)
    assert not block_quant_kernel.kernel_available()

    block_quant_kernel._state.clear()
    monkeypatch.setattr(block_quant_kernel, "_cpu_has_avx512", lambda: True)
    monkeypatch.setenv("DHIAN_CACHE", str(tmp_path))
    broken = tmp_path / "broken.cpp"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(block_quant_kernel, "_SOURCE", broken)
    monkeypatch.setattr(block_quant_kernel, "_NAME", "dhian_broken_kernel")
    with pytest.warns(RuntimeWarning, match="could not be built"):
        assert not block_quant_kernel.kernel_available()
    assert not block_quant._kernel_takes(x, layer.packed)
