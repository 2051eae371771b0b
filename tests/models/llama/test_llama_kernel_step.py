"""The eager decoding step on dhian's CPU kernels (dhian.models.llama.kernel_step): for fp32,
bf16 and int4-fp32 models its logits and the cache it writes are bit-identical to the general
eager path's, with left padding and per-row slots, for batch sizes on both sides of the bf16
kernel's row limit; the plan follows a replaced layer and moved weights; where it does not
apply (gradient on, int8 weights, unfused q/k/v) the general path runs."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dhian.models.llama import kernel_step as ks
from dhian.models.llama import model as llama_model
from dhian.models.llama.config import LlamaConfig
from dhian.models.llama.model import LlamaModel
from dhian.models.llama.quantize import quantize_llama
from dhian.nn import cpu_kernels

pytestmark = pytest.mark.skipif(
    not cpu_kernels._cpu_has_avx512(), reason="the kernels need AVX-512"
)

CFG = LlamaConfig(
    vocab_size=64, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=96, max_seq_len=64
)


def _model(mode: str, vocab: int = 64) -> LlamaModel:
    torch.manual_seed(0)
    model = LlamaModel(dataclasses.replace(CFG, vocab_size=vocab)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 2.0)
    return quantize_llama(model, mode)


def _step(
    model: LlamaModel, rows: int, general: bool, monkeypatch: pytest.MonkeyPatch
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    if general:
        monkeypatch.setattr(llama_model, "kernel_step", lambda *a: None)
    g = torch.Generator().manual_seed(1)
    cache = model.new_cache(rows, 12)
    for buf in (*cache.k, *cache.v):
        buf.copy_(torch.randn(buf.shape, generator=g))
    mask = torch.zeros(rows, 12, dtype=torch.bool)
    for r in range(rows):
        mask[r, r % 3 : 8] = True  # left padding: rows start at 0, 1 or 2
    token = torch.randint(0, model.cfg.vocab_size, (rows, 1), generator=g)
    positions = torch.tensor([[7 - r % 3] for r in range(rows)])
    slot = torch.full((rows,), 7)
    with torch.no_grad():
        logits = model.decode_step(token, positions, slot, mask, cache)
    monkeypatch.undo()
    return logits, [*cache.k, *cache.v]


@pytest.mark.parametrize("mode", ["fp32", "bf16", "int4-fp32"])
@pytest.mark.parametrize("rows", [1, 3, 17])
def test_same_logits_and_cache_as_the_general_path(
    mode: str, rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _model(mode)
    ran: list[bool] = []
    original = ks.kernel_step

    def spy(*args: object) -> torch.Tensor | None:
        out = original(*args)  # type: ignore[arg-type]
        ran.append(out is not None)
        return out

    monkeypatch.setattr(llama_model, "kernel_step", spy)
    fast, fast_cache = _step(model, rows, general=False, monkeypatch=monkeypatch)
    assert ran == [True]
    plain, plain_cache = _step(model, rows, general=True, monkeypatch=monkeypatch)
    assert fast.shape == (rows, 64) and fast.dtype == torch.float32
    assert torch.equal(fast, plain)
    assert all(torch.equal(a, b) for a, b in zip(fast_cache, plain_cache, strict=True))


def test_padded_bf16_head_takes_its_own_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model("bf16", vocab=50)  # 50 rows: the tiles carry padding
    fast, _ = _step(model, 2, general=False, monkeypatch=monkeypatch)
    plain, _ = _step(model, 2, general=True, monkeypatch=monkeypatch)
    assert fast.shape == (2, 50) and torch.equal(fast, plain)


def test_the_plan_follows_a_replaced_layer_and_moved_weights(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = _model("fp32")
    first, _ = _step(model, 2, general=False, monkeypatch=monkeypatch)
    plan = model.__dict__["_kernel_plans"][2]
    mlp = model.get_submodule("layers.1.mlp")
    old = mlp.get_submodule("down_proj")
    assert isinstance(old, torch.nn.Linear)
    mlp.down_proj = torch.nn.Linear(96, 64, bias=False)  # another layer
    replaced, _ = _step(model, 2, general=False, monkeypatch=monkeypatch)
    assert model.__dict__["_kernel_plans"][2] is not plan and not torch.equal(replaced, first)
    mlp.down_proj = old
    old.weight.data = old.weight.data.clone() * 2  # the same layer, its weight moved
    doubled, _ = _step(model, 2, general=False, monkeypatch=monkeypatch)
    plain, _ = _step(model, 2, general=True, monkeypatch=monkeypatch)
    assert torch.equal(doubled, plain) and not torch.equal(doubled, first)


@pytest.mark.parametrize("case", ["grad", "int8", "unfused"])
def test_where_it_does_not_apply_the_general_path_runs(case: str) -> None:
    model = _model("int8" if case == "int8" else "fp32")
    if case == "unfused":
        model = LlamaModel(CFG).eval()
    cache = model.new_cache(1, 12)
    mask = torch.zeros(1, 12, dtype=torch.bool)
    mask[0, :8] = True
    args = (torch.tensor([[3]]), torch.tensor([[7]]), torch.tensor([7]), mask, cache)
    with torch.set_grad_enabled(case == "grad"):
        assert ks.kernel_step(model, *args) is None
        assert model.decode_step(*args).shape == (1, 64)
