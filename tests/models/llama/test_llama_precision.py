"""SmolLM2 in int4 / int8 / bf16 built straight from the GGUF: the int4 codes are the file's
own Q4_1 blocks (codes·d + m == gguf's dequantisation), the Q8_0 embedding is kept exactly,
the fused/quantised models predict like fp32, and the static decode step equals a forward."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from dhian.interop.gguf import dequantize, read_gguf, reverse_rope_permute
from dhian.interop.gguf_quant import build_inference_model, q4_codes, q8_codes
from dhian.nn.quantized_linear import Int4Linear
from helpers.smollm2 import smollm2_path

IDS = torch.tensor([[1, 504, 3458, 282, 4649, 314, 216, 1115]])


@pytest.fixture(scope="module")
def gguf_file() -> Any:
    return read_gguf(smollm2_path())


def test_blocks_read_by_gguf_are_exact(gguf_file: Any) -> None:
    t = gguf_file.tensors["blk.0.ffn_down.weight"]
    q, d, m = q4_codes(t)
    n, k = q.shape
    w = (q.float().view(n, -1, 32) * d[..., None] + m[..., None]).view(n, k)
    assert torch.equal(w, dequantize(t))
    e = gguf_file.tensors["token_embd.weight"]
    codes, scales = q8_codes(e)
    rows = slice(0, 512)
    got = (codes[rows].float().view(512, -1, 32) * scales[rows, :, None]).flatten(1)
    assert torch.equal(got, dequantize(e)[rows])


def test_int4_qkv_is_the_permuted_file_weights(gguf_file: Any) -> None:
    model = build_inference_model(gguf_file, "int4")
    cfg = model.cfg
    qkv = model.layers[1].self_attn.qkv_proj
    assert isinstance(qkv, Int4Linear)
    ref = torch.cat(
        [
            reverse_rope_permute(dequantize(gguf_file.tensors["blk.1.attn_q.weight"]), cfg.n_heads),
            reverse_rope_permute(
                dequantize(gguf_file.tensors["blk.1.attn_k.weight"]), cfg.n_kv_heads
            ),
            dequantize(gguf_file.tensors["blk.1.attn_v.weight"]),
        ]
    )
    diff = (qkv.dequantized_weight() - ref).abs().max()
    assert diff <= 1e-2 * ref.abs().max()  # bf16 scale/zero only


@pytest.mark.parametrize("mode", ["bf16", "int8", "int4", "int4-fp32"])
def test_modes_predict_like_fp32_and_decode_step_matches(gguf_file: Any, mode: str) -> None:
    ref = build_inference_model(gguf_file, "fp32")
    model = build_inference_model(gguf_file, mode)
    with torch.no_grad():
        want, _ = ref(IDS)
        got, _ = model(IDS)
        assert (got.float().argmax(-1) == want.argmax(-1)).float().mean() >= 0.75
        cache = model.new_cache(1, 16)
        model(IDS[:, :-1], cache=cache)
        mask = torch.zeros(1, 16, dtype=torch.bool)
        mask[:, : IDS.size(1)] = True
        step = model.decode_step(
            IDS[:, -1:],
            torch.tensor([[IDS.size(1) - 1]]),
            torch.tensor([IDS.size(1) - 1]),
            mask,
            cache,
        )
    last = got[:, -1].float()
    assert (step - last).abs().max() <= 2e-2 * last.abs().max()


def test_int4_fp32_is_the_fp32_model_on_the_files_blocks(gguf_file: Any) -> None:
    """int4-fp32 holds the Q4_1 codes and the one Q8_0 table (embedding and tied head), and
    computes what fp32 computes: same weights exactly, logits to float32 summation order."""
    from dhian.nn.block_quant import BlockQ4Linear, BlockQ8Head

    ref = build_inference_model(gguf_file, "fp32")
    model = build_inference_model(gguf_file, "int4-fp32")
    block = model.layers[3]
    assert isinstance(block.mlp.down_proj, BlockQ4Linear)
    assert torch.equal(block.mlp.down_proj.dequantized_weight(), ref.layers[3].mlp.down_proj.weight)
    assert isinstance(model.lm_head, BlockQ8Head) and model.lm_head.table is model.embed_tokens
    assert torch.equal(model.embed_tokens(IDS), ref.embed_tokens(IDS))
    with torch.no_grad():
        want, _ = ref(IDS)
        got, _ = model(IDS)
    assert torch.equal(got.argmax(-1), want.argmax(-1))
    assert (got - want).abs().max() <= 1e-3 * want.abs().max()
