"""RotaryEmbedding: per-row positions (left padding) and HF LlamaRotaryEmbedding parity."""

from __future__ import annotations

import pytest
import torch

from dhian.nn.positional import RotaryEmbedding


def test_per_row_positions_equal_offsets_row_by_row() -> None:
    rope = RotaryEmbedding(8, max_len=32, base=100000.0)
    x = torch.randn(2, 3, 4, 8)
    positions = torch.tensor([[0, 1, 2, 3], [5, 6, 7, 8]])
    out = rope.rotate(x, positions=positions)
    torch.testing.assert_close(out[0:1], rope.rotate(x[0:1], offset=0), atol=0, rtol=0)
    torch.testing.assert_close(out[1:2], rope.rotate(x[1:2], offset=5), atol=0, rtol=0)
    with pytest.raises(ValueError, match=r"positions must be \(B, T\)"):
        rope.rotate(x, positions=torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="max_len=32"):
        rope.rotate(x, positions=positions + 30)


def test_float32_angles_are_hf_llama_rotary_bit_for_bit() -> None:
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import (
        LlamaRotaryEmbedding,
        apply_rotary_pos_emb,
    )

    cfg = transformers.LlamaConfig(
        hidden_size=576, num_attention_heads=9, rope_theta=100000.0, max_position_embeddings=8192
    )
    hf = LlamaRotaryEmbedding(cfg)
    ours = RotaryEmbedding(64, max_len=8192, base=100000.0, float32_angles=True)
    positions = torch.tensor([[0, 1, 7, 999, 4095, 8191], [3, 2, 1, 0, 500, 8000]])
    q, k = torch.randn(2, 9, 6, 64), torch.randn(2, 3, 6, 64)
    cos, sin = hf(q, positions)
    hq, hk = apply_rotary_pos_emb(q, k, cos, sin)
    oq, ok = ours(q, k, positions=positions)
    assert torch.equal(oq, hq) and torch.equal(ok, hk)
