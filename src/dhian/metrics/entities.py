"""Entity-level precision / recall / F1 of BIO tag sequences, computed by ``seqeval``.

Owns :func:`entity_scores`: an entity counts as found only when its type and its exact span
match (CoNLL-2003 ``conlleval`` semantics, seqeval's default mode), micro-averaged over all
entities, with per-type scores. Inputs are word-level tag strings, one list per sentence.
Imports: seqeval, :mod:`dhian.errors`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

from dhian.errors import DhianError

__all__ = ["entity_scores"]


def entity_scores(pred: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> dict[str, Any]:
    """``{"precision", "recall", "f1", "entities" (gold count), "types": {type: {precision,
    recall, f1, support}}}`` of predicted vs gold BIO tags (same shape: sentences × words)."""
    if len(pred) != len(gold) or any(len(p) != len(g) for p, g in zip(pred, gold, strict=False)):
        raise DhianError("entity_scores needs as many predicted tags as gold tags per sentence")
    p = [list(map(str, s)) for s in pred]
    g = [list(map(str, s)) for s in gold]
    report = classification_report(g, p, output_dict=True, zero_division=0)
    types = {
        k: {
            "precision": float(v["precision"]),
            "recall": float(v["recall"]),
            "f1": float(v["f1-score"]),
            "support": int(v["support"]),
        }
        for k, v in report.items()
        if not k.endswith(" avg")
    }
    return {
        "precision": float(precision_score(g, p, zero_division=0)),
        "recall": float(recall_score(g, p, zero_division=0)),
        "f1": float(f1_score(g, p, zero_division=0)),
        "entities": sum(t["support"] for t in types.values()),
        "types": types,
    }
