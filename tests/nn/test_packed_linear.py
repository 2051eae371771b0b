"""PackedLinear (:mod:`dhian.nn.packed_linear`): the bf16 weight reordered once gives
F.linear's outputs bit for bit, eagerly and under torch.compile; its state dict holds the
plain weight and loading one repacks it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dhian.nn.packed_linear import PackedLinear, packed_linear_available

pytestmark = pytest.mark.skipif(
    not packed_linear_available(), reason="needs oneDNN and a CPU with bf16 instructions"
)


def _layer(n: int = 48, k: int = 32, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(k, n, bias=False).to(torch.bfloat16)


@pytest.mark.parametrize("lead", [(1,), (3,), (2, 1), (2, 5)])
def test_packed_equals_f_linear(lead: tuple[int, ...]) -> None:
    layer = _layer()
    packed = PackedLinear.from_float(layer)
    x = torch.randn(*lead, 32).to(torch.bfloat16)
    got = packed(x)
    assert got.shape == (*lead, 48) and got.dtype == torch.bfloat16
    assert torch.equal(got, F.linear(x, layer.weight))


def test_state_dict_holds_the_plain_weight_and_loading_repacks() -> None:
    layer, other = _layer(seed=0), _layer(seed=1)
    packed = PackedLinear.from_float(layer)
    state = packed.state_dict()
    assert list(state) == ["weight"] and torch.equal(state["weight"], layer.weight)
    target = PackedLinear.from_float(other)
    target.load_state_dict(state)
    x = torch.randn(4, 32).to(torch.bfloat16)
    assert torch.equal(target(x), F.linear(x, layer.weight))
    with pytest.raises(RuntimeError, match="expected"):
        target.load_state_dict({"weight": torch.zeros(3, 3)})


def test_biased_layers_are_refused() -> None:
    with pytest.raises(ValueError, match="bias"):
        PackedLinear.from_float(nn.Linear(4, 4).to(torch.bfloat16))


@pytest.mark.slow
def test_compiled_packed_linear_equals_eager() -> None:
    import torch._dynamo

    layer = _layer()
    packed = PackedLinear.from_float(layer)
    x = torch.randn(2, 1, 32).to(torch.bfloat16)
    torch._dynamo.reset()
    try:
        fn = torch.compile(lambda t: packed(t) * 2, dynamic=False, fullgraph=True)
        assert torch.equal(fn(x), packed(x) * 2)
    finally:
        torch._dynamo.reset()
