"""Positional encodings: closed-form sinusoid, learned table, token+position, RoPE."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dhian.nn.attention import MultiHeadAttention
from dhian.nn.positional import (
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    TokenAndPositionEmbedding,
)


@pytest.mark.parametrize(("pos", "i"), [(0, 0), (1, 0), (7, 3), (50, 5), (99, 9)])
def test_sinusoid_equals_closed_formula(pos: int, i: int) -> None:
    dim = 20
    pe = SinusoidalPositionalEncoding(dim, max_len=100)(100)
    angle = pos / 10000 ** (2 * i / dim)
    assert pe[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
    assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_sinusoid_api_offset_positions_and_limits() -> None:
    enc = SinusoidalPositionalEncoding(8, max_len=10)
    assert list(enc.parameters()) == [] and "pe" not in enc.state_dict()
    full = enc(10)
    assert full.shape == (10, 8)
    torch.testing.assert_close(enc(3, offset=4), full[4:7])
    pos = torch.tensor([[0, 2], [9, 1]])
    torch.testing.assert_close(enc(pos), full[pos])
    assert enc(pos).shape == (2, 2, 8)
    with pytest.raises(ValueError, match="max_len=10"):
        enc(11)
    with pytest.raises(ValueError, match="max_len=10"):
        enc(2, offset=9)
    with pytest.raises(ValueError, match="max_len=10"):
        enc(torch.tensor([[10]]))
    odd = SinusoidalPositionalEncoding(7, max_len=4)(4)
    assert odd.shape == (4, 7) and odd[3, 6].item() == pytest.approx(math.sin(3 / 10000 ** (6 / 7)))


def test_learned_embedding_parameters_and_lookup() -> None:
    emb = LearnedPositionalEmbedding(max_len=16, dim=6)
    assert sum(p.numel() for p in emb.parameters()) == 16 * 6
    torch.testing.assert_close(emb(4, offset=2), emb.weight[2:6])
    with pytest.raises(ValueError, match="max_len=16"):
        emb(17)


def test_token_and_position_embedding() -> None:
    torch.manual_seed(0)
    layer = TokenAndPositionEmbedding(vocab_size=11, max_len=8, dim=4)
    assert sum(p.numel() for p in layer.parameters()) == 11 * 4 + 8 * 4
    ids = torch.tensor([[1, 2, 3], [4, 5, 0]])
    out = layer(ids, offset=1)
    expect = layer.token.weight[ids] + layer.position.weight[1:4].unsqueeze(0)
    torch.testing.assert_close(out, expect)
    with pytest.raises(ValueError, match=r"expected ids \(B, T\), received \(3,\)"):
        layer(torch.tensor([1, 2, 3]))


def test_rope_scores_depend_only_on_position_difference() -> None:
    torch.manual_seed(0)
    rope = RotaryEmbedding(8, max_len=64)
    q = torch.randn(1, 1, 1, 8, dtype=torch.float64)
    k = torch.randn(1, 1, 1, 8, dtype=torch.float64)

    def score(m: int, n: int) -> float:
        return float((rope.rotate(q, m).double() * rope.rotate(k, n).double()).sum())

    for delta in (0, 1, 5):
        ref = score(delta, 0)
        for start in (3, 17, 40):
            assert score(start + delta, start) == pytest.approx(ref, abs=1e-5)
    assert score(5, 0) != pytest.approx(score(6, 0), abs=1e-3)
    # norms preserved (a rotation), position 0 is the identity
    torch.testing.assert_close(rope.rotate(q.float(), 0), q.float())
    torch.testing.assert_close(rope.rotate(q.float(), 9).norm(), q.float().norm())


def test_rope_matches_explicit_rotation_and_offsets() -> None:
    torch.manual_seed(0)
    d, base = 4, 10000.0
    rope = RotaryEmbedding(d, max_len=10, base=base)
    x = torch.randn(2, 3, 5, d)
    out = rope.rotate(x, offset=2)
    for t in range(5):
        p = t + 2
        for j in range(d // 2):
            theta = p * base ** (-2 * j / d)
            a, b = x[..., t, j], x[..., t, j + d // 2]
            torch.testing.assert_close(out[..., t, j], a * math.cos(theta) - b * math.sin(theta))
            torch.testing.assert_close(
                out[..., t, j + d // 2], b * math.cos(theta) + a * math.sin(theta)
            )
    q2, k2 = rope(x, x, 1)
    torch.testing.assert_close(q2, rope.rotate(x, 1))
    torch.testing.assert_close(rope.apply(x, x, offset=1)[1], k2)
    with pytest.raises(ValueError, match="max_len=10"):
        rope.rotate(x, offset=6)
    with pytest.raises(ValueError, match="even"):
        RotaryEmbedding(5)


def test_module_apply_still_recurses_through_rotary() -> None:
    mha = MultiHeadAttention(8, 2, rotary=RotaryEmbedding(4))
    seen: list[str] = []
    mha.apply(lambda m: seen.append(type(m).__name__))
    assert "RotaryEmbedding" in seen and "MultiHeadAttention" in seen

    def zero_linear(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.weight)

    mha.apply(zero_linear)
    assert (mha.out_proj.weight == 0).all()
