"""dhian's C++ kernels (dhian.nn.cpu_kernels): built on first use. The block-quant products
compute what float32 matmul with the file's weights computes (to float32 rounding) for 1 to
many rows (chunks of 8 and a remainder), on one thread and two, eagerly and as a call inside a
compiled graph; BlockQ4Linear and the Q8 head use them up to KERNEL_ROWS rows and not beyond.
The one-call RMSNorm equals nn.RMSNorm and the eager LLaMA step takes it for every norm.
The decoding-step attention equals SDPA with the same boolean mask (left padding, slots after
the last allowed one, GQA groups) and the LLaMA step uses it. Bad inputs are refused with the
problem named; a failed build, a disabled kernel or a CPU without AVX-512 leaves the PyTorch
paths."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from dhian.nn import block_quant, cpu_kernels
from dhian.nn.block_quant import BlockQ4Linear, BlockQ8Embedding, BlockQ8Head

needs_kernel = pytest.mark.skipif(
    not cpu_kernels._cpu_has_avx512(), reason="the kernel needs AVX-512"
)


@pytest.fixture
def kernel() -> None:
    assert cpu_kernels.kernel_available(), "the kernel did not build on an AVX-512 CPU"


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
@pytest.mark.parametrize("rows", [1, 3, 8, 19])
@pytest.mark.parametrize("threads", [1, 2])
def test_kernel_is_float32_matmul(rows: int, threads: int) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        layer, w = _q4_layer(80, 96)  # 5 tiles, 3 blocks
        x = torch.randn(rows, 96)
        y = cpu_kernels.q4_mm(x, layer.packed, layer.d, layer.m)
        torch.testing.assert_close(y, x @ w.T, rtol=1e-5, atol=1e-5)
        table, wt = _q8_table(48, 64)
        x = torch.randn(rows, 64)
        y = cpu_kernels.q8_mm(x, table.codes, table.scales)
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
    real_q4, real_q8 = cpu_kernels.q4_mm, cpu_kernels.q8_mm
    monkeypatch.setattr(cpu_kernels, "q4_mm", lambda *a: calls.append("q4") or real_q4(*a))
    monkeypatch.setattr(cpu_kernels, "q8_mm", lambda *a: calls.append("q8") or real_q8(*a))
    x = torch.randn(2, 4, 64)  # 8 rows: the kernel
    torch.testing.assert_close(layer(x), x @ w.T, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(head(x), x @ wt.T, rtol=1e-5, atol=1e-5)
    assert calls == ["q4", "q8"]
    many = torch.randn(cpu_kernels.KERNEL_ROWS + 1, 64)  # dequantise and matmul
    torch.testing.assert_close(layer(many), many @ w.T, rtol=1e-5, atol=1e-5)
    assert calls == ["q4", "q8"]
    monkeypatch.setattr(cpu_kernels, "q4_mm", real_q4)
    one = torch.randn(1, 64)

    def step(h: torch.Tensor) -> torch.Tensor:
        return layer(torch.relu(h)) * 2  # the op between compiled kernels

    compiled = torch.compile(step, dynamic=False, fullgraph=True)
    torch.testing.assert_close(compiled(one), step(one), rtol=0, atol=0)


@needs_kernel
@pytest.mark.usefixtures("kernel")
def test_bad_inputs_are_refused_with_the_limit_named() -> None:
    layer, _ = _q4_layer(16, 64)
    with pytest.raises(RuntimeError, match="at least one row"):
        cpu_kernels.q4_mm(torch.randn(0, 64), layer.packed, layer.d, layer.m)
    with pytest.raises(RuntimeError, match=r"contiguous \(N/16, K/32, 16, 16\)"):
        cpu_kernels.q4_mm(torch.randn(1, 96), layer.packed, layer.d, layer.m)
    with pytest.raises(RuntimeError, match="float32"):
        cpu_kernels.q4_mm(torch.randn(1, 64), layer.packed, layer.d.double(), layer.m)


@pytest.fixture
def fresh_state() -> Iterator[None]:
    saved = dict(cpu_kernels._state)
    cpu_kernels._state.clear()
    yield
    cpu_kernels._state.clear()
    cpu_kernels._state.update(saved)


@pytest.mark.usefixtures("fresh_state")
def test_disabled_missing_or_failed_kernel_leaves_the_pytorch_paths(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DHIAN_KERNELS", "0")
    assert not cpu_kernels.kernel_available()
    layer, w = _q4_layer(32, 64)
    x = torch.randn(1, 64)
    torch.testing.assert_close(layer(x), x @ w.T, rtol=1e-5, atol=1e-5)

    cpu_kernels._state.clear()
    monkeypatch.setenv("DHIAN_KERNELS", "1")
    monkeypatch.setattr(cpu_kernels, "_cpu_has_avx512", lambda: False)
    assert not cpu_kernels.kernel_available()

    cpu_kernels._state.clear()
    monkeypatch.setattr(cpu_kernels, "_cpu_has_avx512", lambda: True)
    monkeypatch.setenv("DHIAN_CACHE", str(tmp_path))
    broken = tmp_path / "broken.cpp"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(cpu_kernels, "_SOURCES", [broken])
    monkeypatch.setattr(cpu_kernels, "_NAME", "dhian_broken_kernel")
    with pytest.warns(RuntimeWarning, match="could not be built"):
        assert not cpu_kernels.kernel_available()
    assert not block_quant._kernel_takes(x, layer.packed)


def _decode_inputs(
    b: int, hkv: int, g: int, d: int, tmax: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, hkv, g, d, generator=gen)
    k = torch.randn(b, hkv, tmax, d, generator=gen)
    v = torch.randn(b, hkv, tmax, d, generator=gen)
    mask = torch.zeros(b, 1, 1, tmax, dtype=torch.bool)
    for row in range(b):  # row r: left padding of r slots, then 5 + 7r slots in use
        mask[row, ..., row : min(tmax, 5 + 8 * row)] = True
    return q, k, v, mask


@needs_kernel
@pytest.mark.usefixtures("kernel")
@pytest.mark.parametrize(
    ("hkv", "g", "d", "tmax"), [(3, 3, 64, 40), (2, 1, 32, 17), (1, 4, 16, 64)]
)
@pytest.mark.parametrize("threads", [1, 2])
def test_decode_attention_is_sdpa_over_the_allowed_slots(
    hkv: int, g: int, d: int, tmax: int, threads: int
) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        q, k, v, mask = _decode_inputs(4, hkv, g, d, tmax)
        out = cpu_kernels.decode_attention(q, k, v, mask.reshape(4, tmax))
        ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        far = mask.clone()
        far[2, ..., tmax - 1] = True  # the last slot allowed: every slot is read
        out = cpu_kernels.decode_attention(q, k * 30, v, far.reshape(4, tmax))  # large scores
        ref = torch.nn.functional.scaled_dot_product_attention(q, k * 30, v, attn_mask=far)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    finally:
        torch.set_num_threads(before)


@needs_kernel
@pytest.mark.usefixtures("kernel")
def test_decode_step_attention_takes_the_kernel_where_it_can(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dhian.nn.mha import decode_step_attention

    q, k, v, mask = _decode_inputs(3, 3, 3, 64, 48, seed=1)
    calls: list[int] = []
    real = cpu_kernels.decode_attention
    monkeypatch.setattr(cpu_kernels, "decode_attention", lambda *a: calls.append(1) or real(*a))
    out, weights = decode_step_attention(q, k, v, mask)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert weights is None and calls == [1]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    half, _ = decode_step_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask)  # SDPA
    assert calls == [1] and half.dtype == torch.bfloat16
    compiled = torch.compile(decode_step_attention, dynamic=False, fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v, mask)[0], out, rtol=0, atol=0)


@needs_kernel
@pytest.mark.usefixtures("kernel")
def test_decode_attention_refuses_bad_inputs() -> None:
    q, k, v, mask = _decode_inputs(2, 1, 2, 16, 8)
    with pytest.raises(RuntimeError, match=r"mask must be contiguous bool \(B, Tmax\)"):
        cpu_kernels.decode_attention(q, k, v, mask)
    with pytest.raises(RuntimeError, match="multiple of 16"):
        cpu_kernels.decode_attention(q[..., :8], k[..., :8], v[..., :8], mask.reshape(2, 8))
    with pytest.raises(RuntimeError, match="does not match the cache"):
        cpu_kernels.decode_attention(q[:1], k, v, mask.reshape(2, 8))


@pytest.mark.parametrize("use_kernel", [True, False])
def test_float16_maps_are_kept_as_float16_and_change_nothing(
    use_kernel: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Maps that float16 holds exactly (a GGUF file's always do) are stored as float16; every
    path gives bit-for-bit what float32 maps give. Maps it does not hold stay float32."""
    if use_kernel and not cpu_kernels.kernel_available():
        pytest.skip("no kernel on this CPU")
    if not use_kernel:
        monkeypatch.setattr(block_quant, "_kernel_takes", lambda x, codes: False)
    g = torch.Generator().manual_seed(4)
    q = torch.randint(0, 16, (48, 64), generator=g)
    d = (torch.rand(48, 2, generator=g) * 0.02).half().float()
    m = (-torch.rand(48, 2, generator=g) * 0.1).half().float()
    small, wide = BlockQ4Linear.from_codes(q, d, m), BlockQ4Linear.from_codes(q, d, m)
    wide.d, wide.m = wide.d.float(), wide.m.float()
    assert small.d.dtype == small.m.dtype == torch.float16
    assert torch.equal(small.dequantized_weight(), wide.dequantized_weight())
    for rows in (1, 5, 300):
        x = torch.randn(rows, 64, generator=g)
        assert torch.equal(small(x), wide(x))
    assert BlockQ4Linear.from_codes(q, d + 1e-9, m).d.dtype == torch.float32
    codes = torch.randint(-127, 128, (32, 64), generator=g, dtype=torch.int8)
    scales = (torch.rand(32, 2, generator=g) * 0.01).half().float()
    table = BlockQ8Embedding.from_rows(codes, scales)
    assert table.scales.dtype == torch.float16
    x = torch.randn(3, 64, generator=g)
    w = (codes.float().view(32, 2, 32) * scales[..., None]).view(32, 64)
    torch.testing.assert_close(table.logits(x), x @ w.T, rtol=1e-5, atol=1e-5)
    assert torch.equal(table(torch.tensor([0, 31])), w[[0, 31]])


def _rotate_ref(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


@needs_kernel
@pytest.mark.usefixtures("kernel")
@pytest.mark.parametrize("per_row", [False, True])
def test_rope_cache_write_is_bit_identical_to_the_pytorch_ops(per_row: bool) -> None:
    b, h, hkv, d, tmax = 3, 6, 2, 16, 10
    g = torch.Generator().manual_seed(5)
    qkv = torch.randn(b, (h + 2 * hkv) * d, generator=g)
    cos, sin = torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)
    slot = torch.tensor([4, 7, 0]) if per_row else torch.tensor([6])
    k_buf, v_buf = torch.zeros(b, hkv, tmax, d), torch.zeros(b, hkv, tmax, d)
    q = cpu_kernels.rope_cache_write(qkv, cos, sin, slot, k_buf, v_buf, h)
    qr, kr, vr = qkv.split([h * d, hkv * d, hkv * d], dim=-1)
    c, s = cos[:, None, :], sin[:, None, :]  # (B, 1, D)
    assert torch.equal(q, _rotate_ref(qr.view(b, h, d), c, s).view(b, h * d))
    k_ref, v_ref = torch.zeros_like(k_buf), torch.zeros_like(v_buf)
    rows = torch.arange(b)
    k_ref[rows, :, slot.expand(b)] = _rotate_ref(kr.view(b, hkv, d), c, s)
    v_ref[rows, :, slot.expand(b)] = vr.view(b, hkv, d)
    assert torch.equal(k_buf, k_ref) and torch.equal(v_buf, v_ref)
    one = cpu_kernels.rope_cache_write(qkv, cos[:1], sin[:1], slot, k_buf, v_buf, h)  # shared
    assert torch.equal(one, _rotate_ref(qr.view(b, h, d), cos[:1], sin[:1]).view(b, h * d))
    with pytest.raises(RuntimeError, match="outside the cache's 10 slots"):
        cpu_kernels.rope_cache_write(qkv, cos, sin, torch.tensor([10]), k_buf, v_buf, h)
    with pytest.raises(RuntimeError, match=r"qkv must be contiguous float32 \(B, \(H \+ 2·Hkv\)"):
        cpu_kernels.rope_cache_write(qkv[:, :-1], cos, sin, slot, k_buf, v_buf, h)


@needs_kernel
@pytest.mark.usefixtures("kernel")
def test_llama_decode_step_with_the_fused_rope_write_is_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A tiny float32 LLaMA's eager decoding steps give the same logits and cache with dhian's
    one-call RoPE + cache write as with the PyTorch ops (left-padded rows, per-row slots)."""
    from dhian.models.llama.config import LlamaConfig
    from dhian.models.llama.model import LlamaAttention, LlamaModel

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=96)
    model = LlamaModel(cfg).eval()
    model.fuse_projections()
    token = torch.tensor([[3], [7]])
    positions = torch.tensor([[2], [5]])
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[0, 3:6], mask[1, :6] = True, True

    def step(fused: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if not fused:
            monkeypatch.setattr(LlamaAttention, "_fused_rope_write", lambda self, x, k: False)
        cache = model.new_cache(2, 8)
        for buf in (*cache.k, *cache.v):
            buf.copy_(torch.randn(buf.shape, generator=torch.Generator().manual_seed(1)))
        with torch.no_grad():
            logits = model.decode_step(token, positions, torch.tensor([5, 5]), mask, cache)
        monkeypatch.undo()
        return logits, [*cache.k, *cache.v]

    fused_logits, fused_cache = step(True)
    plain_logits, plain_cache = step(False)
    assert torch.equal(fused_logits, plain_logits)
    assert all(torch.equal(a, b) for a, b in zip(fused_cache, plain_cache, strict=True))


@needs_kernel
@pytest.mark.usefixtures("kernel")
@pytest.mark.parametrize("width", [576, 37])
@pytest.mark.parametrize("rows", [1, 3])
def test_rms_norm_is_nn_rmsnorm(width: int, rows: int) -> None:
    torch.manual_seed(0)
    norm = torch.nn.RMSNorm(width, eps=1e-5)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        x = torch.randn(rows, width) * 3
        torch.testing.assert_close(
            cpu_kernels.rms_norm(x, norm.weight, 1e-5), norm(x), rtol=1e-6, atol=1e-6
        )


@needs_kernel
@pytest.mark.usefixtures("kernel")
def test_rms_norm_refuses_bad_inputs() -> None:
    with pytest.raises(RuntimeError, match="float32"):
        cpu_kernels.rms_norm(torch.randn(2, 8, dtype=torch.float64), torch.ones(8), 1e-5)
    with pytest.raises(RuntimeError, match="E = 8"):
        cpu_kernels.rms_norm(torch.randn(2, 8), torch.ones(7), 1e-5)


@needs_kernel
@pytest.mark.usefixtures("kernel")
def test_llama_decode_step_takes_the_norm_kernel_with_the_same_logits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The general eager float32 decoding step normalises through the kernel (every norm of
    the step), and its logits are those of nn.RMSNorm's to float32 rounding."""
    from dhian.models.llama import model as llama_model
    from dhian.models.llama.config import LlamaConfig
    from dhian.models.llama.model import LlamaModel

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=96)
    model = LlamaModel(cfg).eval().fuse_projections()
    for name, p in model.named_parameters():
        if "norm" in name:
            p.data.uniform_(0.5, 2.0)
    mask = torch.zeros(1, 8, dtype=torch.bool)
    mask[0, :4] = True
    calls: list[int] = []
    kernel = cpu_kernels.rms_norm

    def counted(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
        calls.append(1)
        return kernel(x, w, eps)

    def step() -> torch.Tensor:
        cache = model.new_cache(1, 8)
        with torch.no_grad():
            return model.decode_step(
                torch.tensor([[3]]), torch.tensor([[3]]), torch.tensor([3]), mask, cache
            )

    monkeypatch.setattr(llama_model, "kernel_step", lambda *a: None)  # the general path
    monkeypatch.setattr(llama_model.cpu_kernels, "rms_norm", counted)
    fused = step()
    assert len(calls) == 2 * cfg.n_layers + 1
    monkeypatch.setattr(llama_model, "_decode_norm", lambda norm, x: norm(x))
    torch.testing.assert_close(fused, step(), rtol=1e-5, atol=1e-5)
