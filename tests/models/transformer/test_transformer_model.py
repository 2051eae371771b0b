"""Transformer encoder-decoder: forward vs KV-cached steps, padding invariance, attention weights
vs torch.nn.MultiheadAttention, the SDPA fast path, building, sharing and saving. Decoding:
test_transformer_decoding.py; the tiny model: tests/helpers/transformer.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_model, save_model
from torch import Tensor, nn

from dhian.config import load_run_config
from dhian.errors import ConfigError
from dhian.models.transformer.config import TransformerConfig
from dhian.models.transformer.model import (
    MarianSinusoidalEncoding,
    TransformerSeq2Seq,
    build_transformer,
)
from dhian.nn.attention import MultiHeadAttention
from helpers.threads import one_thread_per_module  # noqa: F401 - autouse fixture
from helpers.transformer import BOS, EOS, PAD, V, batch, randomize, stepwise_logits, tiny

REPO = Path(__file__).resolve().parents[3]


# ---------------------------------------------------------------------------------- forward


@pytest.mark.parametrize("positions", ["sinusoidal", "learned", "sinusoidal_marian"])
@pytest.mark.parametrize("norm", ["post", "pre"])
def test_forward_equals_cached_steps(positions: str, norm: str) -> None:
    torch.manual_seed(1)
    cfg = tiny(
        positions=positions,
        norm=norm,
        share_embeddings=False,
        tie_embeddings=False,
        output_bias=True,
    )
    model = randomize(build_transformer(cfg, V, V + 5))
    src, lens = batch(1)
    tgt = torch.cat([torch.full((4, 1), BOS), torch.randint(7, V + 5, (4, 6))], 1)
    with torch.no_grad():
        full = model(src, lens, tgt).logits
        steps = stepwise_logits(model, src, lens, tgt)
    assert full.shape == (4, 7, V + 5)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)


def test_padding_invariance() -> None:
    torch.manual_seed(2)
    model = randomize(build_transformer(tiny(output_bias=True), V))
    src, lens = batch(2)
    tgt = torch.cat([torch.full((4, 1), BOS), torch.randint(7, V, (4, 5))], 1)
    with torch.no_grad():
        together = model(src, lens, tgt).logits
        for i, n in enumerate(lens.tolist()):
            alone = model(src[i : i + 1, :n], lens[i : i + 1], tgt[i : i + 1]).logits
            torch.testing.assert_close(together[i : i + 1], alone, atol=1e-5, rtol=1e-5)
        # target padding after the real tokens changes nothing before it
        longer = torch.cat([tgt, torch.full((4, 3), PAD)], 1)
        torch.testing.assert_close(
            model(src, lens, longer).logits[:, :6], together, atol=1e-5, rtol=1e-5
        )
        # and the pad id in padded source positions is never read
        junk = src.masked_fill(torch.arange(src.size(1)) >= lens[:, None], 11)
        torch.testing.assert_close(model(junk, lens, tgt).logits, together, atol=1e-6, rtol=1e-6)


def _reference_weights(
    mha: MultiHeadAttention, query: Tensor, key: Tensor, mask: Tensor | None
) -> Tensor:
    """Per-head weights (B, H, Tq, Tk) from torch.nn.MultiheadAttention with copied weights."""
    e, h = mha.embed_dim, mha.num_heads
    ref = nn.MultiheadAttention(e, h, batch_first=True)
    ref.load_state_dict({k: v for k, v in mha.state_dict().items() if not k.startswith("rotary")})
    b, tq, tk = query.size(0), query.size(1), key.size(1)
    attn_mask = None
    if mask is not None:  # ours: True = may attend; torch: True = blocked, (B*H, Tq, Tk)
        full = mask.expand(b, h, tq, tk).reshape(b * h, tq, tk)  # (B, H, Tq, Tk) -> (B*H, Tq, Tk)
        attn_mask = ~full
    _, w = ref(query, key, key, attn_mask=attn_mask, need_weights=True, average_attn_weights=False)
    return w


def test_attention_weights_match_torch_reference() -> None:
    torch.manual_seed(3)
    model = randomize(build_transformer(tiny(enc_layers=2, dec_layers=2), V))
    src, lens = batch(3)
    tgt = torch.cat([torch.full((4, 1), BOS), torch.randint(7, V, (4, 4))], 1)
    calls: list[tuple[MultiHeadAttention, Tensor, Tensor, Tensor | None]] = []

    def hook(mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        assert isinstance(mod, MultiHeadAttention)
        query = args[0]
        key = args[1] if len(args) > 1 and args[1] is not None else query
        mask = kwargs.get("mask")
        if kwargs.get("causal"):  # decoder self attention: add the causal part
            t = query.size(1)
            causal = torch.ones(t, t, dtype=torch.bool).tril()[None, None]
            mask = causal if mask is None else mask & causal
        calls.append((mod, query.detach(), key.detach(), mask))

    handles = [
        m.register_forward_pre_hook(hook, with_kwargs=True)
        for m in model.modules()
        if isinstance(m, MultiHeadAttention)
    ]
    with torch.no_grad():
        out = model(src, lens, tgt, need_weights=True)
        for hd in handles:
            hd.remove()
        fast = model(src, lens, tgt).logits
    torch.testing.assert_close(out.logits, fast, atol=1e-5, rtol=1e-5)
    assert out.encoder_attention is not None and out.decoder_attention is not None
    assert isinstance(out.attention, list)
    ours = [*out.encoder_attention]
    for sw, cw in zip(out.decoder_attention, out.attention, strict=True):
        ours += [sw, cw]
    assert len(ours) == len(calls) == 2 + 2 * 2
    for w, (mod, q, k, mask) in zip(ours, calls, strict=True):
        assert w.shape == (4, 4, q.size(1), k.size(1))
        torch.testing.assert_close(w, _reference_weights(mod, q, k, mask), atol=1e-5, rtol=1e-5)
    for cw in out.attention:  # cross attention: rows sum to 1, nothing on source padding
        torch.testing.assert_close(cw.sum(-1), torch.ones(4, 4, 5))
        pad_cols = torch.arange(src.size(1)) >= lens[:, None]  # (B, Ts)
        assert float(cw.masked_select(pad_cols[:, None, None, :]).abs().max()) == 0.0


def test_fast_path_uses_sdpa(monkeypatch: pytest.MonkeyPatch) -> None:
    import dhian.nn.mha as mha_mod

    model = build_transformer(tiny(), V).eval()
    src, lens = batch(4)
    tgt = torch.full((4, 3), BOS)
    real = torch.nn.functional.scaled_dot_product_attention
    count = {"n": 0}

    def spy(*a: Any, **k: Any) -> Tensor:
        count["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(mha_mod.F, "scaled_dot_product_attention", spy)
    with torch.no_grad():
        assert model(src, lens, tgt).attention is None
        assert count["n"] == 2 + 2 * 2  # every attention of every layer
        count["n"] = 0
        model(src, lens, tgt, need_weights=True)
        assert count["n"] == 0  # weights path is the eager one


# ---------------------------------------------------------------------------------- decoding


# ---------------------------------------------------------------------------------- building


def test_marian_positions_are_split_sin_cos() -> None:
    pe = MarianSinusoidalEncoding(6, 10)(10)  # (10, 6)
    p = torch.arange(10.0)[:, None]
    w = 10000.0 ** (-torch.arange(0, 6, 2) / 6.0)  # (3,)
    torch.testing.assert_close(pe, torch.cat([torch.sin(p * w), torch.cos(p * w)], 1))


def test_sharing_tying_and_config_errors() -> None:
    model = build_transformer(tiny(), V)
    assert model.tgt_embed is model.src_embed and model.output.weight is model.src_embed.weight
    untied = build_transformer(tiny(share_embeddings=False, tie_embeddings=False), V, V + 1)
    assert (
        untied.tgt_embed is not untied.src_embed
        and untied.output.weight is not untied.tgt_embed.weight
    )
    assert untied.output.out_features == V + 1
    with pytest.raises(ConfigError, match="joint_vocab"):
        build_transformer(tiny(), V, V + 1)
    with pytest.raises(ConfigError, match="divisible"):
        tiny(embed_dim=30, num_heads=4)
    with pytest.raises(ConfigError, match="positions"):
        tiny(positions="rotary")
    assert tiny(activation="swish").activation == "silu"


def test_safetensors_round_trip_with_shared_weights(tmp_path: Path) -> None:
    model = randomize(build_transformer(tiny(output_bias=True), V))
    save_model(model, str(tmp_path / "m.safetensors"))
    other = build_transformer(tiny(output_bias=True), V).eval()
    load_model(other, str(tmp_path / "m.safetensors"))
    src, lens = batch(6)
    tgt = torch.full((4, 2), BOS)
    with torch.no_grad():
        torch.testing.assert_close(other(src, lens, tgt).logits, model(src, lens, tgt).logits)
    assert other.output.weight is other.tgt_embed.weight


def test_registry_and_tiny_recipe() -> None:
    from dhian.models.families import build_model

    cfg = load_run_config(REPO / "configs" / "transformer-tiny.yaml")
    assert isinstance(cfg.model, TransformerConfig) and cfg.data.corpus == "bible:de-en"
    model = build_model(cfg, 50, pad_id=PAD, bos_id=BOS, eos_id=EOS)
    assert isinstance(model, TransformerSeq2Seq) and (model.pad_id, model.bos_id, model.eos_id) == (
        PAD,
        BOS,
        EOS,
    )
    assert dataclasses.replace(cfg.model, enc_layers=1).enc_layers == 1
