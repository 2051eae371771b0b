"""RNNencdec / RNNsearch: forward == step-by-step, hand-written equations, padding, attention,
and an overfit run that greedy and beam search must reproduce."""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from dhian.config import RunConfig
from dhian.decoding import beam_search, greedy_decode
from dhian.errors import ConfigError
from dhian.models.families import build_model
from dhian.models.rnn.config import RNNSeq2SeqConfig
from dhian.models.rnn.model import RNNSeq2Seq
from helpers.threads import one_thread_per_module  # noqa: F401 - autouse fixture

PAD, BOS, EOS = 0, 2, 3
SRC_V, TGT_V = 17, 13


def tiny(**kw: Any) -> RNNSeq2Seq:
    torch.manual_seed(0)
    base: dict[str, Any] = {"embed_dim": 6, "hidden_dim": 10, "dropout": 0.0}
    cfg = RNNSeq2SeqConfig(**{**base, **kw})
    model = build_model(cfg, SRC_V, TGT_V, pad_id=PAD, bos_id=BOS, eos_id=EOS)
    assert isinstance(model, RNNSeq2Seq)
    return model.eval()


def batch(seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """src (4, 8) with mixed lengths and a spare padding column, lengths (4,), tgt_in (4, 5)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([7, 3, 5, 1])
    src = torch.randint(4, SRC_V, (4, 8), generator=g)
    for i, n in enumerate(lengths.tolist()):
        src[i, n:] = PAD
    tgt_in = torch.randint(4, TGT_V, (4, 5), generator=g)
    tgt_in[:, 0] = BOS
    return src, lengths, tgt_in


VARIANTS: dict[str, dict[str, Any]] = {
    "encdec-gru": {"type": "rnnencdec"},
    "encdec-lstm-feed": {"type": "rnnencdec", "cell": "lstm", "input_feeding": True},
    "additive-gru": {"attention": "additive"},
    "additive-lstm-feed-2layers": {
        "attention": "additive", "cell": "lstm", "input_feeding": True, "dec_layers": 2,
        "attention_dim": 7,
    },
    "dot-gru-bidir": {"attention": "dot"},
    "dot-gru-unidir-feed": {"attention": "dot", "bidirectional": False, "input_feeding": True},
    "general-lstm": {"attention": "general", "cell": "lstm", "enc_layers": 2},
    "general-gru-feed-tied": {"attention": "general", "input_feeding": True, "tie_embeddings": True},
}  # fmt: skip


@pytest.mark.parametrize("name", list(VARIANTS))
def test_forward_equals_step_by_step(name: str) -> None:
    model = tiny(**VARIANTS[name])
    src, lengths, tgt_in = batch()
    with torch.no_grad():
        out = model(src, lengths, tgt_in, need_weights=True)
        state = model.start(src, lengths)
        logits, attn = [], []
        for t in range(tgt_in.size(1)):
            step_logits, state, w = model.step(tgt_in[:, t], state, need_weights=True)
            logits.append(step_logits)
            attn.append(w)
    assert out.logits.shape == (4, 5, TGT_V)
    torch.testing.assert_close(out.logits, torch.stack(logits, 1), rtol=0, atol=1e-5)
    if VARIANTS[name].get("type") == "rnnencdec":
        assert out.attention is None and all(w is None for w in attn)
    else:
        assert isinstance(out.attention, Tensor) and out.attention.shape == (4, 5, 8)
        torch.testing.assert_close(out.attention, torch.stack(attn, 1), rtol=0, atol=1e-6)  # type: ignore[arg-type]


def manual_logits(model: RNNSeq2Seq, src: Tensor, tgt_in: Tensor) -> Tensor:
    """The paper equations written out for one unpadded sentence (single-layer bidirectional
    GRU, no input feeding): src (n,), tgt_in (Tt,) → logits (Tt, V)."""
    H = model.hidden_dim
    emb_src = model.src_embed(src)[None]  # (1, n, E)
    h, _ = model.encoder(emb_src)  # no packing: (1, n, 2H)
    h = h[0]  # (n, 2H)
    summary = torch.cat([h[-1, :H], h[0, H:]])  # [h→_n; h←_1] (2H,)
    cell = nn.GRUCell(model.decoder.input_size, H)
    with torch.no_grad():  # the decoder's own weights in a plain GRU cell
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(model.decoder, f"{name}_l0"))
    if model.scheme == "encdec":
        assert model.context_proj is not None
        c = torch.tanh(model.context_proj(summary))  # Cho et al.: c = tanh(V h_N)
        s = torch.tanh(model.init_hidden(c))
    else:
        s = torch.tanh(model.init_hidden(summary))
    att = model.attention

    def attend(q: Tensor) -> Tensor:
        if model.scheme == "bahdanau":  # e_j = vᵀ tanh(W q + U h_j + b)
            e = att.energy(torch.tanh(att.query_proj(q) + att.key_proj(h))).squeeze(-1)  # type: ignore[union-attr, operator]
        else:  # general: e_j = qᵀ W h_j
            e = att.proj(h) @ q  # type: ignore[union-attr, operator]
        return torch.softmax(e, 0) @ h  # (2H,)

    rows = []
    for y in tgt_in.tolist():
        e = model.tgt_embed.weight[y]
        if model.scheme == "encdec":
            s = cell(torch.cat([e, c])[None], s[None])[0]
            feats = [s, c, e]
        elif model.scheme == "bahdanau":
            ctx = attend(s)  # query s_{t-1}
            s = cell(torch.cat([e, ctx])[None], s[None])[0]
            feats = [s, ctx, e]
        else:
            s = cell(e[None], s[None])[0]
            feats = [s, attend(s)]  # query s_t
        o = torch.tanh(model.out_proj(torch.cat(feats)))
        rows.append(model.generator(o))
    return torch.stack(rows)


@pytest.mark.parametrize(
    "kw", [{"type": "rnnencdec"}, {"attention": "additive"}, {"attention": "general"}]
)
def test_matches_hand_written_equations(kw: dict[str, str]) -> None:
    model = tiny(**kw)
    src, lengths, tgt_in = batch(seed=1)
    with torch.no_grad():
        logits = model(src, lengths, tgt_in).logits
        for i, n in enumerate(lengths.tolist()):
            ref = manual_logits(model, src[i, :n], tgt_in[i])
            torch.testing.assert_close(logits[i], ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["encdec-lstm-feed", "additive-gru", "general-lstm"])
def test_padding_invariance(name: str) -> None:
    model = tiny(**VARIANTS[name])
    src, lengths, tgt_in = batch(seed=2)
    with torch.no_grad():
        out = model(src, lengths, tgt_in, need_weights=True)
        for i, n in enumerate(lengths.tolist()):
            alone = model(src[i : i + 1, :n], lengths[i : i + 1], tgt_in[i : i + 1], True)
            torch.testing.assert_close(out.logits[i], alone.logits[0], rtol=0, atol=1e-5)
            if isinstance(out.attention, Tensor):
                assert isinstance(alone.attention, Tensor)
                torch.testing.assert_close(out.attention[i, :, :n], alone.attention[0])
        hyps = greedy_decode(model, src, lengths, max_len=6)
        for i, n in enumerate(lengths.tolist()):
            (alone_hyp,) = greedy_decode(model, src[i : i + 1, :n], lengths[i : i + 1], 6)
            assert alone_hyp.tokens == hyps[i].tokens


@pytest.mark.parametrize("attention", ["additive", "dot", "general"])
def test_attention_rows_sum_to_one_and_ignore_padding(attention: str) -> None:
    model = tiny(attention=attention)
    src, lengths, tgt_in = batch(seed=3)
    with torch.no_grad():
        w = model(src, lengths, tgt_in, need_weights=True).attention
    assert isinstance(w, Tensor)
    torch.testing.assert_close(w.sum(-1), torch.ones(4, 5))
    pad = torch.arange(8)[None, :] >= lengths[:, None]  # (B, Ts)
    assert torch.all(w.masked_select(pad[:, None, :].expand_as(w)) == 0)
    assert torch.all(w.masked_select(~pad[:, None, :].expand_as(w)) > 0)


def test_dropout_tie_and_shapes() -> None:
    model = tiny(tie_embeddings=True, dropout=0.5)
    assert model.generator.weight is model.tgt_embed.weight
    src, lengths, tgt_in = batch()
    model.train()
    a, b = model(src, lengths, tgt_in).logits, model(src, lengths, tgt_in).logits
    assert not torch.allclose(a, b)  # dropout active in training
    a.sum().backward()
    assert model.src_embed.weight.grad is not None
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            model(src, lengths, tgt_in).logits, model(src, lengths, tgt_in).logits
        )
    assert (model.pad_id, model.bos_id, model.eos_id) == (PAD, BOS, EOS)


def test_build_model_and_config_errors() -> None:
    cfg = RNNSeq2SeqConfig(type="rnnencdec", embed_dim=4, hidden_dim=4)
    assert isinstance(build_model(RunConfig(model=cfg), 9), RNNSeq2Seq)
    joint = build_model(cfg, 9)
    assert isinstance(joint, RNNSeq2Seq) and joint.generator.out_features == 9
    bad: dict[str, Any]
    for bad in ({"cell": "rnn"}, {"attention": "bilinear"}, {"hidden_dim": 0}, {"dropout": 1.0}):
        with pytest.raises(ConfigError):
            build_model(RNNSeq2SeqConfig(**bad), 9)
    with pytest.raises(ConfigError, match="rnnsearch"):
        build_model(RNNSeq2SeqConfig(type="rnnserch"), 9)
    with pytest.raises(ValueError, match="src_lengths"):
        tiny().start(torch.ones(2, 3, dtype=torch.long), torch.tensor([3, 0]))


# ---------------------------------------------------------------------------- overfitting
def toy_pairs(n: int = 20, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """Reverse the source and map each token x → 4 + (x - 4 + 5) mod 12 (ids 4..15)."""
    g = torch.Generator().manual_seed(seed)
    pairs = []
    for _ in range(n):
        length = int(torch.randint(3, 9, (1,), generator=g))
        src = torch.randint(4, 16, (length,), generator=g).tolist()
        pairs.append((src, [4 + (x - 4 + 5) % 12 for x in reversed(src)]))
    return pairs


def collate(pairs: list[tuple[list[int], list[int]]]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """→ src (B, Ts), lengths (B,), tgt_in (B, Tt) = BOS y, tgt_out (B, Tt) = y EOS."""
    ts, tt = max(len(s) for s, _ in pairs), max(len(t) for _, t in pairs) + 1
    src = torch.full((len(pairs), ts), PAD)
    tgt_in, tgt_out = torch.full((len(pairs), tt), PAD), torch.full((len(pairs), tt), PAD)
    for i, (s, t) in enumerate(pairs):
        src[i, : len(s)] = torch.tensor(s)
        tgt_in[i, : len(t) + 1] = torch.tensor([BOS, *t])
        tgt_out[i, : len(t) + 1] = torch.tensor([*t, EOS])
    return src, torch.tensor([len(s) for s, _ in pairs]), tgt_in, tgt_out


@pytest.fixture(scope="module", params=["rnnencdec", "rnnsearch"])
def trained(request: pytest.FixtureRequest) -> tuple[RNNSeq2Seq, list[tuple[list[int], list[int]]]]:
    torch.manual_seed(0)
    cfg = RNNSeq2SeqConfig(type=request.param, embed_dim=32, hidden_dim=64, dropout=0.0)
    model = build_model(cfg, 16, 16, pad_id=PAD, bos_id=BOS, eos_id=EOS)
    assert isinstance(model, RNNSeq2Seq)
    pairs = toy_pairs()
    src, lengths, tgt_in, tgt_out = collate(pairs)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    start = time.monotonic()
    for step in range(600):  # noqa: B007 (reported below)
        logits = model(src, lengths, tgt_in).logits  # (B, Tt, V)
        loss = nn.functional.cross_entropy(logits.transpose(1, 2), tgt_out, ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.01:
            break
    print(
        f"{request.param}: {step + 1} steps, loss {loss.item():.4f}, {time.monotonic() - start:.1f}s"
    )
    return model.eval(), pairs


def test_overfit_greedy_reproduces_targets(trained: tuple[RNNSeq2Seq, list]) -> None:
    model, pairs = trained
    src, lengths, _, _ = collate(pairs)
    hyps = greedy_decode(model, src, lengths)
    assert [h.tokens for h in hyps] == [t for _, t in pairs]


def test_overfit_beam_not_worse_than_greedy(trained: tuple[RNNSeq2Seq, list]) -> None:
    model, pairs = trained
    src, lengths, _, _ = collate(pairs)
    greedy = greedy_decode(model, src, lengths)
    beams = beam_search(model, src, lengths, beam_size=4, length_penalty=0.0, n_best=4)
    one = beam_search(model, src, lengths, beam_size=1)
    for g, hyps, (b1,), (_, tgt) in zip(greedy, beams, one, pairs, strict=True):
        assert hyps[0].log_prob >= g.log_prob - 1e-5
        assert hyps[0].tokens == tgt
        assert len(hyps) == 4 and len({tuple(h.tokens) for h in hyps}) == 4
        assert (b1.tokens, b1.log_prob) == (g.tokens, g.log_prob)
