"""bf16 weights with float32 math (dhian.nn.bf16_linear): every product equals float32 matmul
with the bf16-rounded weight — through the kernel (up to KERNEL_ROWS rows, one thread and two,
eagerly and inside a compiled graph) and through the widened float32 path (more rows, or no
kernel) — for shapes that fill whole tiles and shapes that need padding. The embedding gives the
table's rows, its tied head the logits, and state dicts hold the plain bf16 weight."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dhian.nn import bf16_linear, cpu_kernels
from dhian.nn.bf16_linear import (
    KERNEL_ROWS,
    Bf16Embedding,
    Bf16Head,
    Bf16Linear,
    from_tiles,
    to_tiles,
)

needs_kernel = pytest.mark.skipif(
    not cpu_kernels._cpu_has_avx512(), reason="the kernel needs AVX-512"
)


@pytest.fixture
def no_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Products take the widened float32 path (as on a CPU without the kernel)."""
    monkeypatch.setattr(bf16_linear, "_kernel_takes", lambda x, tiles: False)


def _weight(n: int, k: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g)


@pytest.mark.parametrize(("n", "k"), [(48, 32), (50, 33), (7, 2)])
def test_tiles_round_trip_to_the_bf16_weight(n: int, k: int) -> None:
    w = _weight(n, k)
    tiles = to_tiles(w)
    assert tiles.dtype == torch.bfloat16 and tiles.shape == (-(-n // 16), -(-k // 2), 16, 2)
    assert torch.equal(from_tiles(tiles, n, k), w.bfloat16())
    assert tiles[0, 0, 1, 1] == w[1, 1].bfloat16()  # [t, p, o, i] = W[16t + o, 2p + i]


@needs_kernel
@pytest.mark.parametrize("rows", [1, 5, 8, 13, KERNEL_ROWS])
@pytest.mark.parametrize("threads", [1, 2])
def test_kernel_is_float32_matmul_with_the_bf16_weight(rows: int, threads: int) -> None:
    assert cpu_kernels.kernel_available()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        w = _weight(80, 96)
        x = torch.randn(rows, 96)
        y = cpu_kernels.bf16_mm(x, to_tiles(w))
        torch.testing.assert_close(y, x @ w.bfloat16().float().T, rtol=1e-5, atol=1e-5)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("path", ["kernel", "float32"])
@pytest.mark.parametrize(("n", "k"), [(80, 96), (50, 33)])
@pytest.mark.parametrize("lead", [(1,), (3,), (2, 1), (2, 20)])
def test_linear_equals_matmul_with_the_rounded_weight(
    path: str, n: int, k: int, lead: tuple[int, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    if path == "float32":
        monkeypatch.setattr(bf16_linear, "_kernel_takes", lambda x, tiles: False)
    elif not cpu_kernels._cpu_has_avx512():
        pytest.skip("the kernel needs AVX-512")
    monkeypatch.setattr(bf16_linear, "_SLICE", 32)  # several slices on the float32 path
    w = _weight(n, k)
    layer = Bf16Linear(w)
    x = torch.randn(*lead, k)
    y = layer(x)
    assert y.shape == (*lead, n) and y.dtype == torch.float32
    torch.testing.assert_close(y, x @ w.bfloat16().float().T, rtol=1e-5, atol=1e-5)
    assert torch.equal(layer.weight, w.bfloat16())


def test_linear_from_float_refuses_a_bias_and_bad_shapes() -> None:
    with pytest.raises(ValueError, match="bias"):
        Bf16Linear.from_float(nn.Linear(4, 4))
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        Bf16Linear(torch.zeros(3))


@needs_kernel
def test_kernel_refuses_bad_inputs_with_the_problem_named() -> None:
    assert cpu_kernels.kernel_available()
    tiles = to_tiles(_weight(32, 16))
    with pytest.raises(RuntimeError, match="float32"):
        cpu_kernels.bf16_mm(torch.randn(1, 16, dtype=torch.float64), tiles)
    with pytest.raises(RuntimeError, match="K = 18"):
        cpu_kernels.bf16_mm(torch.randn(1, 18), tiles)
    with pytest.raises(RuntimeError, match="bfloat16"):
        cpu_kernels.bf16_mm(torch.randn(1, 16), tiles.float())


@pytest.mark.parametrize("path", ["kernel", "float32"])
def test_embedding_rows_and_tied_logits(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if path == "float32":
        monkeypatch.setattr(bf16_linear, "_kernel_takes", lambda x, tiles: False)
    w = _weight(100, 34)  # 100 rows: the last tile padded; 34 columns
    table = Bf16Embedding(w)
    head = Bf16Head(table)
    ids = torch.tensor([[0, 99, 17], [16, 15, 64]])
    rows = table(ids)
    assert rows.shape == (2, 3, 34) and rows.dtype == torch.float32
    assert torch.equal(rows, w.bfloat16().float()[ids])
    x = torch.randn(2, 3, 34)
    torch.testing.assert_close(head(x), x @ w.bfloat16().float().T, rtol=1e-5, atol=1e-5)
    assert head.table is table and list(head.buffers()) == []  # one copy of the table


def test_state_dicts_hold_the_plain_weight_and_load_it() -> None:
    w = _weight(40, 24)
    layer, table = Bf16Linear(w), Bf16Embedding(w)
    for module in (layer, table):
        state = module.state_dict()
        assert list(state) == ["weight"] and torch.equal(state["weight"], w.bfloat16())
    assert list(Bf16Head(table).state_dict()) == ["weight"]
    other = _weight(40, 24, seed=1)
    layer.load_state_dict({"weight": other})
    assert torch.equal(layer.weight, other.bfloat16())
    table.load_state_dict({"weight": other})
    assert torch.equal(table.weight, other.bfloat16())
    with pytest.raises(RuntimeError, match="expected"):
        layer.load_state_dict({"weight": torch.zeros(3, 3)})
    with pytest.raises(RuntimeError, match="Missing"):
        layer.load_state_dict({})


@needs_kernel
def test_compiled_graph_calls_the_kernel() -> None:
    assert cpu_kernels.kernel_available()
    w = _weight(64, 32)
    layer = Bf16Linear(w)
    x = torch.randn(2, 32)
    seen: list[str] = []

    def backend(gm: torch.fx.GraphModule, inputs: list[torch.Tensor]) -> object:
        seen.extend(str(node.target) for node in gm.graph.nodes)
        return gm.forward

    torch._dynamo.reset()
    got = torch.compile(layer, backend=backend, fullgraph=True)(x)
    assert any("bf16_mm" in t for t in seen)
    torch.testing.assert_close(got, x @ w.bfloat16().float().T, rtol=1e-5, atol=1e-5)
