"""dhian.metrics entity scores (seqeval, exact span + type) and SQuAD EM / F1 (official
normalisation), checked against values worked out by hand."""

from __future__ import annotations

import pytest

from dhian.errors import DhianError
from dhian.metrics import entity_scores, squad_scores
from dhian.metrics.squad import exact_match, normalize_answer, token_f1


def test_entity_scores_count_exact_spans_only() -> None:
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "O"]]  # 1 right, 2 wrong
    s = entity_scores(pred, gold)
    assert s["precision"] == pytest.approx(1 / 3) and s["recall"] == pytest.approx(1 / 3)
    assert s["f1"] == pytest.approx(1 / 3) and s["entities"] == 3
    assert s["types"]["PER"]["f1"] == 1.0 and s["types"]["ORG"]["f1"] == 0.0
    assert entity_scores(gold, gold)["f1"] == 1.0
    with pytest.raises(DhianError):
        entity_scores([["O"]], [["O", "O"]])


def test_squad_normalisation_and_scores() -> None:
    assert normalize_answer("The  Eiffel-Tower, in Paris!") == "eiffeltower in paris"
    assert exact_match("the Paris.", "Paris") == 1.0
    assert token_f1("in Paris France", "Paris") == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))
    scores = squad_scores(
        {"a": "Paris", "b": "a big red dog", "c": "", "d": "London"},
        {"a": ["paris", "Paris, France"], "b": ["red dog"], "c": [], "d": []},
    )
    assert scores["exact_match"] == pytest.approx(100 * 2 / 4)  # a, c
    f1_b = 2 * (2 / 3) * 1 / (2 / 3 + 1)  # "big red dog" vs "red dog"
    assert scores["f1"] == pytest.approx(100 * (1 + f1_b + 1 + 0) / 4)
    assert scores["no_answer_exact"] == 50.0 and scores["total"] == 4
    with pytest.raises(DhianError, match="no prediction"):
        squad_scores({}, {"x": ["y"]})
