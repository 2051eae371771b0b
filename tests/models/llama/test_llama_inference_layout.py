"""The inference layouts of :func:`dhian.models.llama.quantize.quantize_llama` on a tiny random
LLaMA: fp32 weights stored column-major (same shapes and values, tied head and embedding still
one tensor, the same logits and greedy tokens), bf16 projections and head packed for oneDNN
(the same logits as plain bf16 layers, the state dict unchanged), and a packed model refuses
to become fp32."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dhian.decoding.llm_generate import llm_generate
from dhian.errors import ConfigError
from dhian.models.llama.config import LlamaConfig
from dhian.models.llama.model import LlamaModel
from dhian.models.llama.quantize import quantize_llama
from dhian.nn.packed_linear import PackedLinear, packed_linear_available

CFG = LlamaConfig(
    vocab_size=96, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=128
)
PROMPTS = [[5, 17, 42, 8, 3], [60, 2, 9]]


def tiny(seed: int = 0) -> LlamaModel:
    torch.manual_seed(seed)
    return LlamaModel(CFG).eval()


def _step_logits(model: LlamaModel) -> torch.Tensor:
    cache = model.new_cache(2, 16)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[:, 0] = True
    with torch.no_grad():
        return model.decode_step(
            torch.tensor([[7], [11]]), torch.zeros(2, 1, dtype=torch.long), torch.tensor([0]),
            mask, cache,
        )  # fmt: skip


def test_fp32_weights_become_column_major_with_the_same_values() -> None:
    plain = tiny().fuse_projections()
    model = quantize_llama(tiny(), "fp32")
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears and all(m.weight.stride() == (1, m.weight.size(0)) for m in linears)
    assert model.lm_head.weight is model.embed_tokens.weight  # still tied, one tensor
    for (name, a), (_, b) in zip(
        plain.state_dict().items(), model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    torch.testing.assert_close(_step_logits(model), _step_logits(plain), rtol=1e-5, atol=1e-5)
    got = llm_generate(model, PROMPTS, max_new_tokens=8)
    ref = llm_generate(plain, PROMPTS, max_new_tokens=8)
    assert [r.tokens for r in got] == [r.tokens for r in ref]
    assert model.column_major_weights() is model  # idempotent


@pytest.mark.skipif(not packed_linear_available(), reason="needs oneDNN bf16 on this CPU")
def test_bf16_projections_and_head_are_packed_with_the_same_logits() -> None:
    plain = tiny().to(torch.bfloat16).fuse_projections()
    model = quantize_llama(tiny(), "bf16")
    block = model.layers[0]
    assert isinstance(block.self_attn.qkv_proj, PackedLinear)
    assert isinstance(block.mlp.down_proj, PackedLinear)
    assert isinstance(model.lm_head, PackedLinear)
    assert isinstance(model.embed_tokens, nn.Embedding)  # the table stays plain
    assert torch.equal(_step_logits(model), _step_logits(plain))
    state, ref = model.state_dict(), plain.state_dict()
    assert set(state) == set(ref)
    for key, value in ref.items():
        assert torch.equal(state[key], value), key
    got = llm_generate(model, PROMPTS, max_new_tokens=8)
    assert [r.tokens for r in got] == [r.tokens for r in llm_generate(plain, PROMPTS, 8)]
    assert quantize_llama(model, "bf16") is model  # again: nothing changes
    with pytest.raises(ConfigError, match="load it again"):
        quantize_llama(model, "fp32")


def test_bf16_on_the_meta_device_is_not_packed() -> None:
    with torch.device("meta"):
        model = LlamaModel(CFG)
    quantize_llama(model, "bf16")  # a non-CPU model keeps nn.Linear
    assert not any(isinstance(m, PackedLinear) for m in model.modules())
