"""SQuAD exact match and token F1 with the official normalisation (v1.1 / v2.0 evaluation
scripts): lower-case, strip punctuation, drop the articles a / an / the, collapse whitespace.

Owns :func:`normalize_answer`, :func:`exact_match` / :func:`token_f1` of one prediction against
one gold answer, and :func:`squad_scores` (each question scores its best gold answer; an
unanswerable v2 question's gold is ``""``, so only an empty prediction scores). Scores are in
percent, as the official scripts print them. Imports: stdlib, :mod:`dhian.errors`.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Mapping, Sequence

from dhian.errors import DhianError

__all__ = ["exact_match", "normalize_answer", "squad_scores", "token_f1"]

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace (official script)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """F1 of the bags of normalised tokens (both empty = 1.0; one empty = 0.0)."""
    p, g = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not p or not g:
        return float(p == g)
    common = collections.Counter(p) & collections.Counter(g)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def squad_scores(
    predictions: Mapping[str, str], golds: Mapping[str, Sequence[str]]
) -> dict[str, float]:
    """``{"exact_match", "f1", "total", "has_answer_f1", "no_answer_exact"...}`` over the
    questions of ``golds`` (id → gold answer texts; empty = unanswerable); each scores its best
    gold. A question with no prediction is a :class:`DhianError`."""
    missing = [q for q in golds if q not in predictions]
    if missing:
        raise DhianError(f"no prediction for {len(missing)} question(s), e.g. {missing[0]!r}")
    em: dict[str, float] = {}
    f1: dict[str, float] = {}
    for q, answers in golds.items():
        refs = [a for a in answers if normalize_answer(a)] or [""]
        em[q] = max(exact_match(predictions[q], a) for a in refs)
        f1[q] = max(token_f1(predictions[q], a) for a in refs)
    n = max(len(golds), 1)
    out = {
        "exact_match": 100.0 * sum(em.values()) / n,
        "f1": 100.0 * sum(f1.values()) / n,
        "total": float(len(golds)),
    }
    has = [q for q, a in golds.items() if any(normalize_answer(x) for x in a)]
    if len(has) < len(golds):  # v2: report both halves
        no = [q for q in golds if q not in set(has)]
        out["has_answer_f1"] = 100.0 * sum(f1[q] for q in has) / max(len(has), 1)
        out["no_answer_exact"] = 100.0 * sum(em[q] for q in no) / max(len(no), 1)
    return out
