"""Transformer encoder-decoder: forward vs KV-cached steps, cached vs uncached decoding, padding
invariance, attention weights vs torch.nn.MultiheadAttention, overfitting, length limits."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, TypeVar

import pytest
import torch
from safetensors.torch import load_model, save_model
from torch import Tensor, nn

from dhian.config import load_run_config
from dhian.decoding import beam_search, greedy_decode
from dhian.errors import ConfigError
from dhian.models.configs import TransformerConfig
from dhian.models.transformer import (
    MarianSinusoidalEncoding,
    TransformerSeq2Seq,
    build_transformer,
)
from dhian.nn.attention import MultiHeadAttention
from helpers.threads import one_thread_per_module  # noqa: F401 - autouse fixture

PAD, BOS, EOS = 0, 2, 3
V = 24  # 7 specials + 17 word ids
REPO = Path(__file__).resolve().parents[2]
M = TypeVar("M", bound=nn.Module)


def tiny(**kw: Any) -> TransformerConfig:
    base: dict[str, Any] = {
        "embed_dim": 32,
        "num_heads": 4,
        "ff_dim": 64,
        "enc_layers": 2,
        "dec_layers": 2,
        "dropout": 0.0,
        "max_positions": 64,
    }
    base.update(kw)
    return TransformerConfig(**base)


def randomize(model: M, seed: int = 0) -> M:
    """Non-trivial biases and LayerNorm affines (fresh ones are 0 and 1) so mistakes show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
            if "norm" in name and name.endswith("weight"):
                p.abs_().add_(0.5)
    return model.eval()


def batch(seed: int = 0, lengths: tuple[int, ...] = (7, 3, 5, 1)) -> tuple[Tensor, Tensor]:
    """Padded src (B, Ts) with mixed lengths and the lengths (B,)."""
    g = torch.Generator().manual_seed(seed)
    ts = max(lengths)
    src = torch.full((len(lengths), ts), PAD)
    for i, n in enumerate(lengths):
        src[i, :n] = torch.randint(7, V, (n,), generator=g)
    return src, torch.tensor(lengths)


def stepwise_logits(model: TransformerSeq2Seq, src: Tensor, lens: Tensor, tgt: Tensor) -> Tensor:
    state = model.start(src, lens)
    out = []
    for t in range(tgt.size(1)):
        logits, state, _ = model.step(tgt[:, t], state)
        out.append(logits)
    return torch.stack(out, 1)  # (B, Tt, V)


class Uncached:
    """Reference step model: reruns the full forward over the whole prefix at every step."""

    def __init__(self, model: TransformerSeq2Seq) -> None:
        self.m = model
        self.pad_id, self.bos_id, self.eos_id = model.pad_id, model.bos_id, model.eos_id

    def start(self, src: Tensor, src_lengths: Tensor) -> dict[str, Tensor]:
        return {"src": src, "lens": src_lengths, "prefix": src.new_empty((src.size(0), 0))}

    def step(
        self, prev: Tensor, st: dict[str, Tensor], need_weights: bool = False
    ) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
        prefix = torch.cat([st["prefix"], prev[:, None]], 1)  # (N, t+1)
        out = self.m(st["src"], st["lens"], prefix, need_weights=need_weights)
        attn = None
        if need_weights:
            assert isinstance(out.attention, list)
            attn = out.attention[-1][:, :, -1].mean(1)  # (N, H, Ts) -> (N, Ts)
        return out.logits[:, -1], {**st, "prefix": prefix}, attn

    def reorder(self, st: dict[str, Tensor], index: Tensor) -> dict[str, Tensor]:
        return {k: v.index_select(0, index) for k, v in st.items()}


# 20 toy pairs: the target is the source reversed, one id up (a real mapping to learn).
def toy_pairs() -> list[tuple[list[int], list[int]]]:
    g = torch.Generator().manual_seed(7)
    pairs = []
    for i in range(20):
        n = 2 + i % 6
        s = torch.randint(7, V - 1, (n,), generator=g).tolist()
        pairs.append((s, [x + 1 for x in reversed(s)]))
    return pairs


def collate(pairs: list[tuple[list[int], list[int]]]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    ts = max(len(s) for s, _ in pairs)
    tt = max(len(t) for _, t in pairs) + 1
    src = torch.full((len(pairs), ts), PAD)
    tin = torch.full((len(pairs), tt), PAD)
    tout = torch.full((len(pairs), tt), PAD)
    for i, (s, t) in enumerate(pairs):
        src[i, : len(s)] = torch.tensor(s)
        tin[i, : len(t) + 1] = torch.tensor([BOS, *t])
        tout[i, : len(t) + 1] = torch.tensor([*t, EOS])
    return src, torch.tensor([len(s) for s, _ in pairs]), tin, tout


@pytest.fixture(scope="module")
def trained() -> TransformerSeq2Seq:
    """A tiny model overfitted on the 20 toy pairs (a few seconds on one CPU core)."""
    torch.manual_seed(0)
    model = build_transformer(tiny(), V)
    src, lens, tin, tout = collate(toy_pairs())
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(300):
        logits = model(src, lens, tin).logits
        loss = nn.functional.cross_entropy(
            logits.reshape(-1, V), tout.reshape(-1), ignore_index=PAD
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.03:
            break
    return model.eval()


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


def test_overfit_twenty_pairs_greedy_exact(trained: TransformerSeq2Seq) -> None:
    pairs = toy_pairs()
    src, lens, _, _ = collate(pairs)
    hyps = greedy_decode(trained, src, lens, max_len=12)
    assert [h.tokens for h in hyps] == [t for _, t in pairs]


def _novel_batch() -> tuple[Tensor, Tensor]:
    """Mixed-length sources, some seen in training, some not, one empty."""
    src, lens, _, _ = collate(toy_pairs()[:3])
    extra, elens = batch(9, lengths=(6, 2, 0, 4))
    ts = max(src.size(1), extra.size(1))
    pad = lambda x: nn.functional.pad(x, (0, ts - x.size(1)), value=PAD)  # noqa: E731
    return torch.cat([pad(src), pad(extra)]), torch.cat([lens, elens])


def _same(a: list[Any], b: list[Any], weights: bool = False) -> None:
    assert [h.tokens for h in a] == [h.tokens for h in b]
    for x, y in zip(a, b, strict=True):
        assert math.isclose(x.score, y.score, abs_tol=1e-5)
        assert math.isclose(x.log_prob, y.log_prob, abs_tol=1e-5)
        if weights:
            assert x.attention is not None and y.attention is not None
            torch.testing.assert_close(x.attention, y.attention, atol=1e-5, rtol=1e-5)


def test_cached_greedy_equals_uncached(trained: TransformerSeq2Seq) -> None:
    src, lens = _novel_batch()
    cached = greedy_decode(trained, src, lens, need_weights=True)
    ref = greedy_decode(Uncached(trained), src, lens, need_weights=True)
    _same(cached, ref, weights=True)
    assert cached[2].attention is not None and cached[2].attention.shape == (
        len(cached[2].tokens) + 1,
        int(lens[2]),
    )


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_cached_beam_equals_uncached(trained: TransformerSeq2Seq, alpha: float) -> None:
    src, lens = _novel_batch()
    cached = beam_search(
        trained, src, lens, beam_size=4, n_best=3, length_penalty=alpha, need_weights=True
    )
    ref = beam_search(
        Uncached(trained), src, lens, beam_size=4, n_best=3, length_penalty=alpha, need_weights=True
    )
    assert len(cached) == len(ref) == src.size(0)
    for c, r in zip(cached, ref, strict=True):
        _same(c, r, weights=True)
    # beam 1 is greedy
    _same(
        [b[0] for b in beam_search(trained, src, lens, beam_size=1, length_penalty=0.0)],
        greedy_decode(trained, src, lens),
    )


def test_decoding_respects_max_len() -> None:
    torch.manual_seed(5)
    model = randomize(build_transformer(tiny(max_positions=8), V))
    with torch.no_grad():  # make EOS unlikely so the limit is what stops decoding
        assert model.output.bias is None
        model.tgt_embed.weight[EOS] -= 5 * model.tgt_embed.weight[EOS].sign()
    src, lens = batch(5)
    for limit in (0, 1, 4, 7):  # 7 = the last position the table holds (0..7 with BOS)
        for hyps in (
            greedy_decode(model, src, lens, max_len=limit),
            *beam_search(model, src, lens, beam_size=3, n_best=3, max_len=limit),
        ):
            hyps = hyps if isinstance(hyps, list) else [hyps]
            assert all(len(h.tokens) <= limit for h in hyps)
            assert all(EOS not in h.tokens and PAD not in h.tokens for h in hyps)
    # ratio-based limits: floor(0.5 * len + 1)
    for h, n in zip(
        greedy_decode(model, src, lens, max_len_ratio=0.5, max_len_offset=1),
        lens.tolist(),
        strict=True,
    ):
        assert len(h.tokens) <= int(0.5 * n + 1)


def test_empty_sources_do_not_crash(trained: TransformerSeq2Seq) -> None:
    empty = torch.zeros((3, 0), dtype=torch.long)
    lens = torch.zeros(3, dtype=torch.long)
    with torch.no_grad():
        out = trained(empty, lens, torch.full((3, 2), BOS), need_weights=True)
    assert torch.isfinite(out.logits).all()
    for hyps in (
        greedy_decode(trained, empty, lens, max_len=5),
        [b[0] for b in beam_search(trained, empty, lens, beam_size=2, max_len=5)],
    ):
        assert all(len(h.tokens) <= 5 and math.isfinite(h.score) for h in hyps)
    # a source holding only EOS, next to an empty one and a real one
    src = torch.tensor([[EOS, PAD, PAD], [PAD, PAD, PAD], [8, 9, 10]])
    lens2 = torch.tensor([1, 0, 3])
    hyps = greedy_decode(trained, src, lens2, need_weights=True)
    assert hyps[1].attention is not None and hyps[1].attention.shape[1] == 0
    assert all(math.isfinite(h.score) for h in hyps)
    alone = greedy_decode(trained, src[2:], lens2[2:])
    assert hyps[2].tokens == alone[0].tokens


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
    from dhian.models import build_model

    cfg = load_run_config(REPO / "configs" / "transformer-tiny.yaml")
    assert isinstance(cfg.model, TransformerConfig) and cfg.data.corpus == "bible:de-en"
    model = build_model(cfg, 50, pad_id=PAD, bos_id=BOS, eos_id=EOS)
    assert isinstance(model, TransformerSeq2Seq) and (model.pad_id, model.bos_id, model.eos_id) == (
        PAD,
        BOS,
        EOS,
    )
    assert dataclasses.replace(cfg.model, enc_layers=1).enc_layers == 1


def test_reorder_within_sentences_keeps_the_source_side(trained: TransformerSeq2Seq) -> None:
    """Beams following beams of the same sentence share the cross caches (no copy); a reorder
    that moves rows across sentences copies them, and decoding stays exact either way."""
    src, lens = _novel_batch()
    state = trained.start(src, lens)
    b, k = src.size(0), 3
    state = trained.reorder(state, torch.arange(b).repeat_interleave(k))  # (B*k,) expand
    cross_k = state.cross_caches[0].k
    assert cross_k is not None and cross_k.size(0) == b * k
    prev = torch.full((b * k,), trained.bos_id, dtype=torch.long)
    logits, state, _ = trained.step(prev, state)
    within = torch.arange(b).repeat_interleave(k) * k  # every row follows beam 0 of its sentence
    same = trained.reorder(state, within)
    assert same.cross_caches[0].k is cross_k  # not copied
    assert same.sources is state.sources
    across = torch.arange(b * k).roll(k)  # rows change sentence
    moved = trained.reorder(same, across)
    assert moved.cross_caches[0].k is not cross_k
    assert moved.sources is not None
    assert moved.sources.tolist() == torch.arange(b).repeat_interleave(k).roll(k).tolist()
    assert moved.src_lengths.tolist() == lens.repeat_interleave(k).roll(k).tolist()
    # the moved state decodes like a state built in that order from the start
    order = torch.arange(b).repeat_interleave(k).roll(k)
    ref = trained.reorder(trained.start(src, lens), order)
    first = torch.full((b * k,), trained.bos_id, dtype=torch.long)
    _, ref, _ = trained.step(first, ref)
    nxt = logits.argmax(-1)[within][across]  # (B*k,) the same next token for both states
    a, _, _ = trained.step(nxt, moved)
    r, _, _ = trained.step(nxt, ref)
    torch.testing.assert_close(a, r, atol=1e-5, rtol=1e-5)
