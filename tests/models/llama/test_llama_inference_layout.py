"""The inference layouts of :func:`dhian.models.llama.quantize.quantize_llama` on a tiny random
LLaMA: fp32 weights stored column-major (same shapes and values, tied head and embedding still
one tensor, the same logits and greedy tokens), bf16 = bf16 weights with float32 math (the
logits and greedy tokens of the float32 model with bf16-rounded weights, a tied head reading
the embedding's tiles, the state dict of plain bf16 weights), and a bf16 model refuses to
become fp32."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from dhian.decoding.llm_generate import llm_generate
from dhian.errors import ConfigError
from dhian.models.llama.config import LlamaConfig
from dhian.models.llama.model import LlamaModel
from dhian.models.llama.quantize import quantize_llama
from dhian.nn.bf16_linear import Bf16Embedding, Bf16Head, Bf16Linear

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


def _bf16_rounded(model: LlamaModel) -> LlamaModel:
    """``model`` (float32) with every projection, embedding and head weight rounded to bf16
    and kept as float32: what the bf16 mode multiplies by."""
    for m in model.modules():
        if isinstance(m, nn.Linear | nn.Embedding):
            m.weight.data = m.weight.data.bfloat16().float()
    return model


def test_bf16_is_bf16_weights_with_float32_math() -> None:
    plain = _bf16_rounded(tiny()).fuse_projections()
    model = quantize_llama(tiny(), "bf16")
    block = model.layers[0]
    assert isinstance(block.self_attn.qkv_proj, Bf16Linear)
    assert isinstance(block.mlp.down_proj, Bf16Linear)
    assert isinstance(model.embed_tokens, Bf16Embedding)
    assert isinstance(model.lm_head, Bf16Head) and model.lm_head.table is model.embed_tokens
    assert (
        model.compute_dtype == torch.float32 and model.new_cache(1, 8).k[0].dtype == torch.float32
    )
    torch.testing.assert_close(_step_logits(model), _step_logits(plain), rtol=1e-5, atol=1e-5)
    state, ref = model.state_dict(), plain.state_dict()
    assert set(state) == set(ref)  # plain weights under nn.Linear's names, as bf16
    for key, value in ref.items():
        assert torch.equal(state[key].float(), value), key
    assert state["lm_head.weight"].dtype == torch.bfloat16
    got = llm_generate(model, PROMPTS, max_new_tokens=8)
    assert [r.tokens for r in got] == [r.tokens for r in llm_generate(plain, PROMPTS, 8)]
    assert quantize_llama(model, "bf16") is model  # again: nothing changes
    assert isinstance(model.layers[0].self_attn.qkv_proj, Bf16Linear)
    with pytest.raises(ConfigError, match="load it again"):
        quantize_llama(model, "fp32")


def test_bf16_untied_head_is_its_own_layer() -> None:
    cfg = dataclasses.replace(CFG, tie_embeddings=False)
    torch.manual_seed(0)
    model = LlamaModel(cfg).eval()
    plain = LlamaModel(cfg).eval()
    plain.load_state_dict(model.state_dict())
    _bf16_rounded(plain).fuse_projections()
    quantize_llama(model, "bf16")
    assert isinstance(model.lm_head, Bf16Linear)
    torch.testing.assert_close(_step_logits(model), _step_logits(plain), rtol=1e-5, atol=1e-5)
