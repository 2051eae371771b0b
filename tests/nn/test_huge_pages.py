"""dhian.nn.huge_pages: a module's large CPU tensors moved into one 2 MiB-aligned arena keep
their objects, shapes, strides, values and ties (outputs unchanged), small ones stay, big ones
stay where they are (collapsed in place); moving
again is a no-op; where the OS has no transparent huge pages nothing moves."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from dhian.nn import huge_pages
from dhian.nn.huge_pages import HUGE_PAGE, huge_pages_available, in_huge_pages


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    emb = nn.Embedding(1000, 64)
    head = nn.Linear(64, 1000, bias=False)
    head.weight = emb.weight  # tied: one tensor
    up = nn.Linear(64, 512, bias=False)
    up.weight.data = up.weight.data.t().contiguous().t()  # column-major strides
    return nn.Sequential(emb, up, nn.Linear(512, 64), head)  # the bias: a small tensor


def _weights(model: nn.Sequential) -> list[torch.Tensor]:
    """The embedding's, the up and the down projection's weights."""
    return [model.get_parameter(f"{i}.weight") for i in range(3)]


def _run(model: nn.Sequential) -> torch.Tensor:
    ids = torch.tensor([[1, 999, 40]])
    return model[3](model[2](model[1](model[0](ids))))


@pytest.mark.skipif(not huge_pages_available(), reason="no transparent huge pages here")
def test_large_tensors_move_with_everything_kept() -> None:
    model = _model()
    before = _run(model).detach()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    objects = {k: v for k, v in model.named_parameters()}
    bias = model.get_parameter("2.bias")
    bias_ptr = bias.data_ptr()
    assert in_huge_pages(model) is model
    assert {k: v for k, v in model.named_parameters()} == objects  # the same tensor objects
    assert model.get_parameter("3.weight") is model.get_parameter("0.weight")
    assert model.get_parameter("1.weight").stride() == (1, 512)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert torch.equal(_run(model), before)
    ptrs = sorted(p.data_ptr() for p in _weights(model))
    assert ptrs[0] % HUGE_PAGE == 0 and ptrs[-1] - ptrs[0] < HUGE_PAGE  # one arena, aligned
    assert bias.data_ptr() == bias_ptr  # 256 bytes: stays
    in_huge_pages(model)  # again: nothing moves
    assert sorted(p.data_ptr() for p in _weights(model)) == ptrs


def test_nothing_moves_without_huge_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huge_pages, "huge_pages_available", lambda: False)
    model = _model()
    ptr = model.get_parameter("1.weight").data_ptr()
    assert in_huge_pages(model) is model and model.get_parameter("1.weight").data_ptr() == ptr


def test_availability_follows_the_kernel_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    setting = tmp_path / "enabled"
    monkeypatch.setattr(huge_pages, "_THP", setting)
    monkeypatch.setattr(huge_pages.sys, "platform", "linux")
    setting.write_text("always madvise [never]\n")
    assert not huge_pages_available()
    setting.write_text("always [madvise] never\n")
    assert huge_pages_available() == hasattr(huge_pages.mmap, "MADV_HUGEPAGE")
    setting.unlink()
    assert not huge_pages_available()


@pytest.mark.skipif(not huge_pages_available(), reason="no transparent huge pages here")
def test_big_storages_stay_where_they_are() -> None:
    table = nn.Embedding(20_000, 64)  # 5 MB: collapsed in place, not copied
    before = table.weight.detach().clone()
    ptr = table.weight.data_ptr()
    in_huge_pages(table)
    assert table.weight.data_ptr() == ptr and torch.equal(table.weight, before)
