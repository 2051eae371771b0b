"""Evaluation metrics: corpus BLEU / chrF (sacrebleu, with signature), accuracy, macro-F1,
confusion matrix, perplexity; entity P/R/F1 of BIO tags in :mod:`dhian.metrics.entities`
(seqeval) and SQuAD exact match / F1 in :mod:`dhian.metrics.squad` (re-exported here).

Owns the numbers reported by ``dhian train`` / ``evaluate`` and the benchmarks. Inputs are plain
Python sequences (strings for BLEU/chrF, ints for labels); tensors are accepted for labels and
turned into lists. BLEU/chrF are computed by sacrebleu on detokenised text, so scores are
comparable with published ones; every score carries sacrebleu's signature string.
Imports: stdlib, sacrebleu, :mod:`dhian.errors`. Never imports torch or other dhian layers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any

from sacrebleu.metrics import BLEU, CHRF

from dhian.errors import DhianError
from dhian.metrics.entities import entity_scores
from dhian.metrics.squad import squad_scores

__all__ = [
    "MetricResult",
    "accuracy",
    "bleu",
    "chrf",
    "confusion_matrix",
    "entity_scores",
    "higher_is_better",
    "macro_f1",
    "perplexity",
    "squad_scores",
]


@dataclasses.dataclass(frozen=True)
class MetricResult:
    """A corpus score with its sacrebleu signature (print both so a score can be reproduced)."""

    name: str
    score: float
    signature: str

    def __str__(self) -> str:
        return f"{self.name} = {self.score:.2f}  ({self.signature})"


def _check_pair(hyps: Sequence[str], refs: Sequence[str]) -> tuple[list[str], list[str]]:
    hyps, refs = list(hyps), list(refs)
    if len(hyps) != len(refs):
        raise DhianError(
            f"got {len(hyps)} hypotheses but {len(refs)} references; they must pair up one to one"
        )
    return hyps, refs


def bleu(
    hyps: Sequence[str], refs: Sequence[str], tokenize: str = "13a", lowercase: bool = False
) -> MetricResult:
    """Corpus BLEU (0-100) of detokenised ``hyps`` against one reference each (sacrebleu)."""
    hyps, refs = _check_pair(hyps, refs)
    metric = BLEU(tokenize=tokenize, lowercase=lowercase)
    score = metric.corpus_score(hyps, [refs]).score if hyps else 0.0
    return MetricResult("BLEU", float(score), str(metric.get_signature()))


def chrf(hyps: Sequence[str], refs: Sequence[str], word_order: int = 0) -> MetricResult:
    """Corpus chrF (0-100; chrF++ when ``word_order=2``) of ``hyps`` against ``refs``."""
    hyps, refs = _check_pair(hyps, refs)
    metric = CHRF(word_order=word_order)
    score = metric.corpus_score(hyps, [refs]).score if hyps else 0.0
    return MetricResult(
        "chrF" if word_order == 0 else "chrF++", float(score), str(metric.get_signature())
    )


def _as_list(x: Any) -> list[int]:
    if hasattr(x, "tolist"):
        x = x.tolist()
    return [int(v) for v in x]


def _check_labels(pred: Any, gold: Any) -> tuple[list[int], list[int]]:
    p, g = _as_list(pred), _as_list(gold)
    if len(p) != len(g):
        raise DhianError(f"got {len(p)} predictions but {len(g)} gold labels")
    return p, g


def accuracy(pred: Any, gold: Any) -> float:
    """Fraction of ``pred`` equal to ``gold`` (0-1); 0.0 for empty input."""
    p, g = _check_labels(pred, gold)
    if not p:
        return 0.0
    return sum(a == b for a, b in zip(p, g, strict=True)) / len(p)


def confusion_matrix(pred: Any, gold: Any, num_classes: int | None = None) -> list[list[int]]:
    """``m[gold][pred]`` counts, (C, C) with C = ``num_classes`` or 1 + the largest label seen."""
    p, g = _check_labels(pred, gold)
    c = num_classes if num_classes is not None else (max(p + g) + 1 if p else 0)
    if p and (min(p + g) < 0 or max(p + g) >= c):
        raise DhianError(f"labels must lie in [0, {c}); got range [{min(p + g)}, {max(p + g)}]")
    m = [[0] * c for _ in range(c)]
    for a, b in zip(p, g, strict=True):
        m[b][a] += 1
    return m


def macro_f1(pred: Any, gold: Any, labels: Iterable[int] | None = None) -> float:
    """Unweighted mean of per-class F1 (0-1) over ``labels`` (default: classes seen in either).

    A class with no predictions and no gold examples is skipped; a class with zero precision
    and recall scores 0 (sklearn's ``zero_division=0``).
    """
    p, g = _check_labels(pred, gold)
    classes = sorted(set(labels) if labels is not None else set(p) | set(g))
    if not classes:
        return 0.0
    f1s = []
    for c in classes:
        tp = sum(1 for a, b in zip(p, g, strict=True) if a == c and b == c)
        fp = sum(1 for a, b in zip(p, g, strict=True) if a == c and b != c)
        fn = sum(1 for a, b in zip(p, g, strict=True) if a != c and b == c)
        denom = 2 * tp + fp + fn
        f1s.append(2 * tp / denom if denom else 0.0)
    return sum(f1s) / len(f1s)


def perplexity(mean_nll: float) -> float:
    """``exp(mean negative log-likelihood per token)``; ``inf`` when it would overflow."""
    if not math.isfinite(mean_nll):
        return math.inf
    try:
        return math.exp(mean_nll)
    except OverflowError:
        return math.inf


_LOWER_IS_BETTER = {
    "loss",
    "ppl",
    "ppl_char",
    "bpc",
    "perplexity",
    "squad_scores",
    "dev_loss",
    "dev_ppl",
    "dev_ppl_char",
    "ter",
    "wer",
    "cer",
}


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is an improvement (False for loss, ppl, error rates)."""
    name = metric.lower().removeprefix("dev_").removeprefix("dev/")
    return name not in _LOWER_IS_BETTER
