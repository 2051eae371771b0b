"""Metrics agree with sacrebleu called directly and with hand computations."""

from __future__ import annotations

import math

import pytest
import sacrebleu
import torch

from dhian.errors import DhianError
from dhian.metrics import (
    accuracy,
    bleu,
    chrf,
    confusion_matrix,
    higher_is_better,
    macro_f1,
    perplexity,
)

HYPS = ["the cat sat on the mat .", "a dog barked loudly", "hello world"]
REFS = ["the cat sat on a mat .", "the dog barked loudly", "hello there world"]


def test_bleu_equals_sacrebleu_corpus_bleu() -> None:
    got = bleu(HYPS, REFS)
    want = sacrebleu.corpus_bleu(HYPS, [REFS])
    assert got.score == pytest.approx(want.score, abs=1e-9)
    assert 0 < got.score < 100
    assert "tok:13a" in got.signature and "nrefs:1" in got.signature
    assert "BLEU" in str(got)


def test_chrf_equals_sacrebleu_corpus_chrf() -> None:
    got = chrf(HYPS, REFS)
    want = sacrebleu.corpus_chrf(HYPS, [REFS])
    assert got.score == pytest.approx(want.score, abs=1e-9)
    assert "nc:6" in got.signature


def test_perfect_and_mismatched() -> None:
    assert bleu(REFS, REFS).score == pytest.approx(100.0)
    with pytest.raises(DhianError, match="pair up"):
        bleu(HYPS, REFS[:2])


def test_macro_f1_hand_example() -> None:
    gold = [0, 0, 1, 1, 2, 2]
    pred = [0, 1, 1, 1, 0, 2]
    # class 0: tp1 fp1 fn1 -> 0.5; class 1: tp2 fp1 fn0 -> 0.8; class 2: tp1 fp0 fn1 -> 2/3
    assert macro_f1(pred, gold) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert macro_f1(torch.tensor(pred), torch.tensor(gold)) == pytest.approx(
        (0.5 + 0.8 + 2 / 3) / 3
    )
    # a class named in labels but never seen scores 0
    assert macro_f1([0, 0], [0, 0], labels=[0, 1]) == pytest.approx(0.5)


def test_accuracy_and_confusion() -> None:
    gold = [0, 0, 1, 1, 2, 2]
    pred = [0, 1, 1, 1, 0, 2]
    assert accuracy(pred, gold) == pytest.approx(4 / 6)
    m = confusion_matrix(pred, gold)
    assert m == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert sum(m[i][i] for i in range(3)) == 4
    with pytest.raises(DhianError):
        confusion_matrix([3], [0], num_classes=3)


def test_perplexity() -> None:
    assert perplexity(math.log(7.0)) == pytest.approx(7.0)
    assert perplexity(1e6) == math.inf
    assert perplexity(float("nan")) == math.inf


def test_direction() -> None:
    assert not higher_is_better("loss") and not higher_is_better("dev_ppl")
    assert higher_is_better("bleu") and higher_is_better("chrf") and higher_is_better("accuracy")
