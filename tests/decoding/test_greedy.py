"""Greedy decoding against a per-sentence reference, length limits, batching and attention."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from dhian.decoding import greedy_decode, length_limits
from dhian.models.rnn.config import RNNSeq2SeqConfig
from dhian.models.rnn.model import RNNSeq2Seq, build_rnn_seq2seq

PAD, BOS, EOS = 0, 1, 2


def reference_greedy(model: Any, helpers: Any, key: int, limit: int) -> tuple[list[int], float]:
    """Row-by-row greedy on the table model, straight from its logits table."""
    tokens: list[int] = []
    total = 0.0
    prev = BOS
    for t in range(limit + 1):
        lp = helpers.masked_log_probs(model.logits_at(key, t, prev), force_eos=t >= limit)
        v = int(lp.argmax())
        total += float(lp[v])
        if v == EOS:
            break
        tokens.append(v)
        prev = v
    return tokens, total


@pytest.mark.parametrize("eos_bias", [-2.0, 0.0, 1.0])
def test_greedy_matches_reference(helpers: Any, eos_bias: float) -> None:
    model = helpers.TableModel(eos_bias=eos_bias, seed=3)
    src, lengths = helpers.random_source(9, 6, seed=1)
    hyps = greedy_decode(model, src, lengths, max_len_ratio=1.0, max_len_offset=2)
    keys = model.key_of(src, lengths).tolist()
    for i, hyp in enumerate(hyps):
        limit = int(lengths[i]) + 2
        tokens, total = reference_greedy(model, helpers, keys[i], limit)
        assert hyp.tokens == tokens
        assert hyp.log_prob == pytest.approx(total, abs=1e-5)
        assert hyp.score == hyp.log_prob
        assert len(hyp.tokens) <= limit


def test_max_len_is_respected_and_eos_is_scored(helpers: Any) -> None:
    model = helpers.TableModel(eos_bias=-30.0)  # EOS never wins on its own
    src, lengths = helpers.random_source(5, 4, seed=2)
    for max_len in (0, 1, 3):
        hyps = greedy_decode(model, src, lengths, max_len=max_len)
        keys = model.key_of(src, lengths).tolist()
        for i, hyp in enumerate(hyps):
            assert len(hyp.tokens) == max_len
            # The forced EOS at the limit is part of the log-probability.
            total, prev = 0.0, BOS
            for t, v in enumerate([*hyp.tokens, EOS]):
                total += float(torch.log_softmax(model.logits_at(keys[i], t, prev), -1)[v])
                prev = v
            assert hyp.log_prob == pytest.approx(total, abs=1e-4)
            assert hyp.log_prob < -25.0  # includes log p(EOS) with the -30 bias


def test_ratio_limits_per_sentence(helpers: Any) -> None:
    model = helpers.TableModel(eos_bias=-30.0)
    src, lengths = helpers.random_source(6, 7, seed=4)
    hyps = greedy_decode(model, src, lengths, max_len_ratio=0.5, max_len_offset=1)
    expected = [math.floor(0.5 * n + 1) for n in lengths.tolist()]
    assert [len(h.tokens) for h in hyps] == expected
    assert length_limits(lengths, None, 0.5, 1).tolist() == expected


def test_pad_and_bos_are_never_generated(helpers: Any) -> None:
    model = helpers.TableModel()
    model.table[..., PAD] += 50.0
    model.table[..., BOS] += 40.0
    src, lengths = helpers.random_source(4, 5, seed=5)
    for hyp in greedy_decode(model, src, lengths, max_len=6):
        assert PAD not in hyp.tokens and BOS not in hyp.tokens


def test_finished_sentences_leave_the_batch_and_loop_exits_early(helpers: Any) -> None:
    model = helpers.TableModel(eos_bias=1.5, seed=7)
    src, lengths = helpers.random_source(8, 5, seed=6)
    hyps = greedy_decode(model, src, lengths, max_len=40)
    ends = sorted(len(h.tokens) for h in hyps)
    assert ends[-1] < 40
    assert len(model.calls) == ends[-1] + 1  # no step after the last sentence finished
    for t, n in enumerate(model.calls):  # rows still active at step t
        assert n == sum(1 for e in ends if e >= t)


def test_attention_follows_the_path(helpers: Any) -> None:
    model = helpers.TableModel(seed=11)
    src, lengths = helpers.random_source(5, 6, seed=8)
    hyps = greedy_decode(model, src, lengths, max_len=5, need_weights=True)
    for i, hyp in enumerate(hyps):
        n = int(lengths[i])
        assert hyp.attention is not None
        assert hyp.attention.shape == (len(hyp.tokens) + 1, n)
        for t, prev in enumerate([BOS, *hyp.tokens]):
            assert int(hyp.attention[t].argmax()) == (t + prev) % n
            assert float(hyp.attention[t].sum()) == pytest.approx(1.0)
    assert all(h.attention is None for h in greedy_decode(model, src, lengths, max_len=5))


def _rnn(kind: str, attention: str = "additive") -> RNNSeq2Seq:
    torch.manual_seed(0)
    cfg = RNNSeq2SeqConfig(type=kind, attention=attention, embed_dim=8, hidden_dim=12, dropout=0.0)
    return build_rnn_seq2seq(cfg, 13, 11, pad_id=0, bos_id=2, eos_id=3).eval()


@pytest.mark.parametrize("kind", ["rnnencdec", "rnnsearch"])
def test_batch_equals_per_sentence_and_log_prob_matches_forward(kind: str) -> None:
    model = _rnn(kind)
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([6, 2, 4, 1, 5])
    src = torch.randint(4, 13, (5, 8), generator=g)  # two extra padding columns
    for i, n in enumerate(lengths.tolist()):
        src[i, n:] = 0
    batch = greedy_decode(model, src, lengths, max_len=7, need_weights=True)
    for i, hyp in enumerate(batch):
        n = int(lengths[i])
        (alone,) = greedy_decode(model, src[i : i + 1, :n], lengths[i : i + 1], max_len=7)
        assert alone.tokens == hyp.tokens
        assert alone.log_prob == pytest.approx(hyp.log_prob, abs=1e-4)
        # The reported log-probability is the teacher-forced one of tokens + EOS.
        tgt = torch.tensor([[2, *hyp.tokens]])
        gold = torch.tensor([*hyp.tokens, 3])
        with torch.no_grad():
            logits = model(src[i : i + 1, :n], lengths[i : i + 1], tgt).logits[0]  # (Tt, V)
        lp = torch.log_softmax(logits, -1).gather(1, gold[:, None]).sum()
        assert hyp.log_prob == pytest.approx(float(lp), abs=1e-4)
        if kind == "rnnsearch":
            assert hyp.attention is not None and hyp.attention.shape == (len(hyp.tokens) + 1, n)
        else:
            assert hyp.attention is None


def test_empty_batch_and_bad_inputs(helpers: Any) -> None:
    model = helpers.TableModel()
    empty = torch.zeros(0, 3, dtype=torch.long)
    assert greedy_decode(model, empty, torch.zeros(0, dtype=torch.long)) == []
    with pytest.raises(ValueError):
        greedy_decode(model, torch.ones(2, 3, dtype=torch.long), torch.ones(3, dtype=torch.long))
    with pytest.raises(TypeError):
        greedy_decode(object(), torch.ones(1, 3, dtype=torch.long), torch.ones(1))  # type: ignore[arg-type]
