"""Beam search against a per-sentence reference, greedy equivalence, length penalty, limits."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from dhian.decoding import beam_search, greedy_decode
from dhian.models.rnn.config import RNNSeq2SeqConfig
from dhian.models.rnn.model import RNNSeq2Seq, build_rnn_seq2seq

PAD, BOS, EOS = 0, 1, 2


def reference_beam(
    model: Any, helpers: Any, key: int, k: int, alpha: float, limit: int
) -> list[tuple[list[int], float, float]]:
    """Unbatched beam search over Python lists (same rules: top-2k, EOS finished when ranked in
    the top k, k best non-EOS continue, stop at k finished or the limit). Returns (tokens, score,
    log_prob) sorted by score."""
    beams: list[tuple[list[int], torch.Tensor]] = [([], torch.zeros(()))]
    finished: list[tuple[list[int], float, float]] = []
    for t in range(limit + 1):
        cands = []
        for b, (toks, s) in enumerate(beams):
            prev = toks[-1] if toks else BOS
            lp = helpers.masked_log_probs(model.logits_at(key, t, prev), force_eos=t >= limit)
            cands += [(s + lp[v], b, v) for v in range(lp.numel())]
        cands.sort(key=lambda c: -float(c[0]))
        new: list[tuple[list[int], torch.Tensor]] = []
        for rank, (s, b, v) in enumerate(cands[: 2 * k]):
            if v == EOS:
                if rank < k and math.isfinite(float(s)):
                    toks = beams[b][0]
                    pen = ((5 + len(toks) + 1) / 6) ** alpha
                    finished.append((toks, float(s) / pen, float(s)))
            elif len(new) < k:
                new.append(([*beams[b][0], v], s))
        if len(finished) >= k or t >= limit:
            break
        beams = new
    return sorted(finished, key=lambda h: -h[1])


@pytest.mark.parametrize(("k", "alpha", "eos_bias"), [(2, 0.0, 0.0), (3, 0.6, -1.0), (4, 1.0, 0.5)])
def test_beam_matches_reference(helpers: Any, k: int, alpha: float, eos_bias: float) -> None:
    model = helpers.TableModel(seed=5, eos_bias=eos_bias)
    src, lengths = helpers.random_source(7, 5, seed=k)
    out = beam_search(
        model, src, lengths, beam_size=k, length_penalty=alpha, max_len_ratio=1.0, max_len_offset=2,
        n_best=k,
    )  # fmt: skip
    keys = model.key_of(src, lengths).tolist()
    for i, hyps in enumerate(out):
        ref = reference_beam(model, helpers, keys[i], k, alpha, int(lengths[i]) + 2)
        assert [h.tokens for h in hyps] == [r[0] for r in ref[:k]]
        for h, r in zip(hyps, ref, strict=False):
            assert h.score == pytest.approx(r[1], abs=1e-5)
            assert h.log_prob == pytest.approx(r[2], abs=1e-5)


def test_sorted_by_score_and_n_best(helpers: Any) -> None:
    model = helpers.TableModel(seed=2)
    src, lengths = helpers.random_source(6, 6, seed=9)
    for n_best in (1, 3, 5):
        out = beam_search(model, src, lengths, beam_size=5, n_best=n_best, max_len=8)
        for hyps in out:
            assert len(hyps) == n_best
            scores = [h.score for h in hyps]
            assert scores == sorted(scores, reverse=True)
            for h in hyps:
                pen = ((5 + len(h.tokens) + 1) / 6) ** 1.0
                assert h.score == pytest.approx(h.log_prob / pen)
    with pytest.raises(ValueError):
        beam_search(model, src, lengths, beam_size=2, n_best=3)


@pytest.mark.parametrize("alpha", [0.0, 0.7, 2.0])
def test_beam_one_is_greedy(helpers: Any, alpha: float) -> None:
    model = helpers.TableModel(seed=4, eos_bias=-0.5)
    src, lengths = helpers.random_source(8, 6, seed=3)
    greedy = greedy_decode(model, src, lengths, max_len=9, need_weights=True)
    beam = beam_search(model, src, lengths, beam_size=1, length_penalty=alpha, max_len=9,
                       need_weights=True)  # fmt: skip
    for g, (b,) in zip(greedy, beam, strict=True):
        assert b.tokens == g.tokens
        assert b.log_prob == g.log_prob
        assert g.attention is not None and b.attention is not None
        assert torch.equal(b.attention, g.attention)


def test_length_penalty_prefers_longer_output(helpers: Any) -> None:
    # Step 0: EOS (p≈0.51) or "a" (p≈0.49); steps 1-2: "a" ≈ certain; step 3: EOS ≈ certain.
    # [] has the higher log-prob, [a, a, a] wins once lengths are normalised.
    a, b = 3, 4
    rows = torch.full((4, 5), -30.0)
    rows[0, EOS], rows[0, a], rows[0, b] = 0.0, -0.04, -6.0
    rows[1:3, a], rows[1:3, b] = 0.0, -6.0
    rows[3, EOS] = 0.0
    model = helpers.ScheduleModel(rows)
    src, lengths = torch.tensor([[5, 6]]), torch.tensor([2])
    (short,) = beam_search(model, src, lengths, beam_size=2, length_penalty=0.0, max_len=6)
    assert short[0].tokens == []
    for alpha in (1.0, 2.0):
        (hyps,) = beam_search(
            model, src, lengths, beam_size=2, length_penalty=alpha, max_len=6, n_best=2
        )
        assert [h.tokens for h in hyps] == [[a, a, a], []]
        assert hyps[0].log_prob < hyps[1].log_prob  # chosen despite the lower log-probability
        assert hyps[0].score > hyps[1].score
    (both,) = beam_search(model, src, lengths, beam_size=2, length_penalty=0.0, max_len=6, n_best=2)
    assert [h.tokens for h in both] == [[], [a, a, a]]


def test_max_len_respected(helpers: Any) -> None:
    model = helpers.TableModel(eos_bias=-30.0)
    src, lengths = helpers.random_source(4, 5, seed=1)
    for max_len in (0, 2, 5):
        for hyps in beam_search(model, src, lengths, beam_size=3, max_len=max_len, n_best=3):
            assert len(hyps) >= 1
            assert all(len(h.tokens) == max_len for h in hyps)
    out = beam_search(model, src, lengths, beam_size=3, max_len_ratio=1.0, max_len_offset=1)
    assert [len(h[0].tokens) for h in out] == [n + 1 for n in lengths.tolist()]


def test_finished_sentences_leave_the_batch(helpers: Any) -> None:
    model = helpers.TableModel(seed=6, eos_bias=2.0)
    src, lengths = helpers.random_source(6, 5, seed=2)
    out = beam_search(model, src, lengths, beam_size=3, max_len=30, n_best=3)
    longest = max(len(h.tokens) for hyps in out for h in hyps)
    assert len(model.calls) <= longest + 1 < 31  # early exit
    assert all(n % 3 == 0 for n in model.calls)  # whole sentences (k rows each) are dropped
    assert model.calls[-1] < model.calls[0]


def test_attention_follows_back_pointers(helpers: Any) -> None:
    model = helpers.TableModel(seed=8)
    src, lengths = helpers.random_source(5, 6, seed=7)
    out = beam_search(model, src, lengths, beam_size=4, n_best=4, max_len=6, need_weights=True)
    for i, hyps in enumerate(out):
        n = int(lengths[i])
        for h in hyps:
            assert h.attention is not None and h.attention.shape == (len(h.tokens) + 1, n)
            for t, prev in enumerate([BOS, *h.tokens]):
                assert int(h.attention[t].argmax()) == (t + prev) % n


def _rnn(kind: str, cell: str) -> RNNSeq2Seq:
    torch.manual_seed(1)
    cfg = RNNSeq2SeqConfig(type=kind, cell=cell, embed_dim=8, hidden_dim=12, dropout=0.0)
    return build_rnn_seq2seq(cfg, 13, 11, pad_id=0, bos_id=2, eos_id=3).eval()


@pytest.mark.parametrize(("kind", "cell"), [("rnnencdec", "gru"), ("rnnsearch", "lstm")])
def test_rnn_batch_equals_per_sentence(kind: str, cell: str) -> None:
    model = _rnn(kind, cell)
    g = torch.Generator().manual_seed(2)
    lengths = torch.tensor([5, 1, 3, 4])
    src = torch.randint(4, 13, (4, 7), generator=g)
    for i, n in enumerate(lengths.tolist()):
        src[i, n:] = 0
    batch = beam_search(model, src, lengths, beam_size=3, n_best=3, max_len=6)
    greedy = greedy_decode(model, src, lengths, max_len=6)
    beam1 = beam_search(model, src, lengths, beam_size=1, max_len=6)
    for i, hyps in enumerate(batch):
        n = int(lengths[i])
        (alone,) = beam_search(model, src[i : i + 1, :n], lengths[i : i + 1], beam_size=3,
                               n_best=3, max_len=6)  # fmt: skip
        assert [h.tokens for h in alone] == [h.tokens for h in hyps]
        for x, y in zip(alone, hyps, strict=True):
            assert x.score == pytest.approx(y.score, abs=1e-4)
        assert beam1[i][0].tokens == greedy[i].tokens
        assert beam1[i][0].log_prob == pytest.approx(greedy[i].log_prob, abs=1e-6)
