"""smoothed_cross_entropy == F.cross_entropy(logits.float(), reduction="sum"): value and
gradient, with label smoothing, ignored rows, chunk boundaries and bf16 logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import dhian.nn.cross_entropy as ce
from dhian.nn.cross_entropy import smoothed_cross_entropy


def reference(logits: torch.Tensor, target: torch.Tensor, ignore: int, eps: float) -> torch.Tensor:
    return F.cross_entropy(
        logits.float(), target, ignore_index=ignore, label_smoothing=eps, reduction="sum"
    )


def both(
    logits: torch.Tensor, target: torch.Tensor, ignore: int, eps: float
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """(value, gradient) of the reference and of smoothed_cross_entropy."""
    out = []
    for fn in (reference, smoothed_cross_entropy):
        x = logits.detach().clone().requires_grad_()
        value = fn(x, target, ignore, eps)
        (value * 0.37).backward()  # a non-unit upstream gradient
        assert x.grad is not None
        out.append((value.detach(), x.grad))
    return out[0], out[1]


@pytest.mark.parametrize("eps", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("ignore", [0, -100])
def test_matches_torch_in_float32(eps: float, ignore: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ce, "ROWS_BYTES", 4 * 11 * 3)  # 8 rows per chunk: 37 rows = 5 chunks
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(37, 11, generator=g) * 4
    target = torch.randint(1, 11, (37,), generator=g)
    target[::5] = ignore
    (v_ref, g_ref), (v, grad) = both(logits, target, ignore, eps)
    assert v.dtype == torch.float32 and v.dim() == 0
    torch.testing.assert_close(v, v_ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(grad, g_ref, rtol=1e-5, atol=1e-6)
    assert (grad[::5] == 0).all()  # ignored rows get no gradient


def test_bf16_logits_get_a_bf16_gradient_close_to_torch() -> None:
    g = torch.Generator().manual_seed(2)
    logits = (torch.randn(50, 300, generator=g) * 3).bfloat16()
    target = torch.randint(0, 300, (50,), generator=g)
    (v_ref, g_ref), (v, grad) = both(logits, target, -100, 0.1)
    assert grad.dtype == torch.bfloat16
    torch.testing.assert_close(v, v_ref, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(grad.float(), g_ref.float(), rtol=1e-2, atol=1e-3)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(0, 40),
    v=st.integers(1, 30),
    rows_bytes=st.integers(4, 2000),
    eps=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_any_shape_and_chunking_agrees(
    n: int, v: int, rows_bytes: int, eps: float, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, v, generator=g) * 5
    target = torch.randint(0, v, (n,), generator=g)
    target[torch.rand(n, generator=g) < 0.3] = -100
    old = ce.ROWS_BYTES
    ce.ROWS_BYTES = rows_bytes
    try:
        (v_ref, g_ref), (value, grad) = both(logits, target, -100, eps)
    finally:
        ce.ROWS_BYTES = old
    torch.testing.assert_close(value, v_ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(grad, g_ref, rtol=1e-5, atol=1e-6)


def test_bad_shapes_and_smoothing_are_refused() -> None:
    with pytest.raises(ValueError, match=r"expected logits \(N, V\) and target \(N,\)"):
        smoothed_cross_entropy(torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        smoothed_cross_entropy(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), 0, 1.5)
