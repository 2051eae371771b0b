"""Transformer blocks equal torch.nn.TransformerEncoderLayer / DecoderLayer with copied weights;
cached decoding equals a full pass."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dhian.nn.attention import KVCache
from dhian.nn.blocks import DecoderBlock, EncoderBlock, FeedForward, get_activation
from dhian.nn.masks import causal_mask, padding_mask

E, H, FF = 8, 2, 16
RENAME = {"ff.linear1": "linear1", "ff.linear2": "linear2", "cross_attn": "multihead_attn"}


def to_torch_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for name, value in state.items():
        for ours, theirs in RENAME.items():
            if name.startswith(ours + "."):
                name = theirs + name[len(ours) :]
        out[name] = value
    return out


def randomise(module: nn.Module) -> None:
    torch.manual_seed(3)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.3)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("act", ["relu", "gelu"])
def test_encoder_block_matches_torch(norm_first: bool, act: str) -> None:
    ours = EncoderBlock(E, H, FF, dropout=0.1, norm_first=norm_first, activation=act).eval()
    randomise(ours)
    ref = nn.TransformerEncoderLayer(
        E, H, FF, dropout=0.1, activation=act, batch_first=True, norm_first=norm_first
    ).eval()
    ref.load_state_dict(to_torch_names(ours.state_dict()))
    torch.manual_seed(0)
    x = torch.randn(3, 5, E)
    lengths = torch.tensor([5, 3, 1])
    out, w = ours(x, mask=padding_mask(lengths), need_weights=True)
    expect = ref(x, src_key_padding_mask=~padding_mask(lengths)[:, 0, 0])
    real = padding_mask(lengths)[:, 0, 0]  # torch's fast path may zero padded positions
    torch.testing.assert_close(out[real], expect[real], atol=1e-5, rtol=1e-5)
    assert w is not None and w.shape == (3, H, 5, 5) and (w[2, :, :, 1:] == 0).all()


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_block_matches_torch(norm_first: bool) -> None:
    ours = DecoderBlock(E, H, FF, dropout=0.0, norm_first=norm_first).eval()
    randomise(ours)
    ref = nn.TransformerDecoderLayer(
        E, H, FF, dropout=0.0, batch_first=True, norm_first=norm_first
    ).eval()
    ref.load_state_dict(to_torch_names(ours.state_dict()))
    torch.manual_seed(0)
    x, mem = torch.randn(2, 4, E), torch.randn(2, 6, E)
    src_ok = padding_mask(torch.tensor([6, 2]))
    out, sw, cw = ours(x, mem, memory_mask=src_ok, need_weights=True)
    expect = ref(x, mem, tgt_mask=~causal_mask(4)[0, 0], memory_key_padding_mask=~src_ok[:, 0, 0])
    torch.testing.assert_close(out, expect, atol=1e-5, rtol=1e-5)
    assert sw is not None and cw is not None
    assert sw.shape == (2, H, 4, 4) and cw.shape == (2, H, 4, 6)
    assert (torch.triu(sw, 1) == 0).all() and (cw[1, ..., 2:] == 0).all()


@pytest.mark.parametrize("norm_first", [False, True])
def test_cached_decoding_equals_full_pass_and_reorders(norm_first: bool) -> None:
    torch.manual_seed(0)
    block = DecoderBlock(E, H, FF, dropout=0.0, norm_first=norm_first).eval()
    x, mem = torch.randn(3, 5, E), torch.randn(3, 4, E)
    src_ok = padding_mask(torch.tensor([4, 4, 2]))
    full, _, full_cw = block(x, mem, memory_mask=src_ok, need_weights=True)
    assert full_cw is not None
    self_cache, cross_cache = KVCache.empty(), KVCache.empty(static=True)
    for t in range(3):
        y, _, cw = block(
            x[:, t : t + 1],
            mem if t == 0 else None,
            memory_mask=src_ok,
            need_weights=True,
            self_cache=self_cache,
            cross_cache=cross_cache,
        )
        torch.testing.assert_close(y, full[:, t : t + 1], atol=1e-6, rtol=1e-5)
        assert cw is not None
        torch.testing.assert_close(cw[:, :, 0], full_cw[:, :, t], atol=1e-6, rtol=1e-5)
    # beam-style reorder: continue with rows (2, 0, 0) and compare with a full pass on them
    index = torch.tensor([2, 0, 0])
    self_cache.reorder(index)
    cross_cache.reorder(index)
    ref, _, _ = block(x[index], mem[index], memory_mask=src_ok[index])
    for t in (3, 4):
        y, _, _ = block(
            x[index, t : t + 1],
            None,
            memory_mask=src_ok[index],
            self_cache=self_cache,
            cross_cache=cross_cache,
        )
        torch.testing.assert_close(y, ref[:, t : t + 1], atol=1e-6, rtol=1e-5)


def test_decoder_only_block() -> None:
    torch.manual_seed(0)
    block = DecoderBlock(
        E, H, FF, dropout=0.0, norm_first=True, activation="gelu_new", cross_attention=False
    ).eval()
    names = {n.split(".")[0] for n, _ in block.named_parameters()}
    assert names == {"self_attn", "ff", "norm1", "norm2"}
    x = torch.randn(2, 4, E)
    full, w, none = block(x, need_weights=True)
    assert none is None and w is not None and (torch.triu(w, 1) == 0).all()
    cache = KVCache.empty()
    steps = [block(x[:, t : t + 1], self_cache=cache)[0] for t in range(4)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="cross_attention=False"):
        block(x, torch.randn(2, 3, E))


def test_parameter_names_are_stable() -> None:
    names = {n for n, _ in DecoderBlock(E, H, FF).named_parameters()}
    for expected in (
        "self_attn.in_proj_weight",
        "self_attn.out_proj.weight",
        "cross_attn.in_proj_bias",
        "ff.linear1.weight",
        "ff.linear2.bias",
        "norm1.weight",
        "norm2.weight",
        "norm3.bias",
    ):
        assert expected in names


def test_feedforward_and_activations() -> None:
    torch.manual_seed(0)
    ff = FeedForward(4, 6, activation="gelu_new")
    x = torch.randn(2, 3, 4)
    h = ff.linear1(x)
    gelu_new = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
    torch.testing.assert_close(ff(x), ff.linear2(gelu_new), atol=1e-6, rtol=1e-5)
    assert isinstance(get_activation("relu"), nn.ReLU)
    with pytest.raises(ValueError, match="unknown activation 'tanh'"):
        get_activation("tanh")


def test_dropout_and_errors() -> None:
    torch.manual_seed(0)
    enc = EncoderBlock(E, H, FF, dropout=0.5, attn_dropout=0.0)
    assert enc.self_attn.dropout == 0.0
    x = torch.randn(2, 3, E)
    assert not torch.allclose(enc(x)[0], enc(x)[0])
    enc.eval()
    torch.testing.assert_close(enc(x)[0], enc(x)[0])
    with pytest.raises(ValueError, match=r"expected x of shape \(B, T, 8\), received \(2, 3, 4\)"):
        enc(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="needs memory"):
        DecoderBlock(E, H, FF)(x)
