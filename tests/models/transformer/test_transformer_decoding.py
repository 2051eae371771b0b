"""Transformer decoding: the overfitted toy model decodes exactly, cached == uncached greedy and
beam search (tokens, scores, weights), length limits, empty sources, and beam-search reorders
that keep or move the source side."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from dhian.decoding import beam_search, greedy_decode
from dhian.models.transformer.model import TransformerSeq2Seq, build_transformer
from helpers.threads import one_thread_per_module  # noqa: F401 - autouse fixture
from helpers.transformer import (
    BOS,
    EOS,
    PAD,
    Uncached,
    V,
    batch,
    collate,
    randomize,
    tiny,
    toy_pairs,
)


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
