"""Classification of texts by a loaded classifier (BERT or Keras-style): labels and class
probabilities, batched by length, in input order.

Owns :class:`ClassifyResult`, :func:`classify` (a model + tokenizer) and :func:`classify_texts`
(a :class:`~dhian.models.model_dir.LoadedModel`, one batch: the server's entry point).
Notation: B texts, C classes. Imports: torch, :mod:`dhian.inference.encode`,
:mod:`dhian.models.model_dir`, :mod:`dhian.errors`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from dhian.errors import DataError
from dhian.inference.encode import encode_texts, input_limit
from dhian.models.model_dir import LoadedModel

__all__ = ["ClassifyResult", "classify", "classify_texts"]


class ClassifyResult(NamedTuple):
    """The predicted ``label`` and ``probs``: class name → probability (sums to 1)."""

    label: str
    probs: dict[str, float]


@torch.no_grad()
def classify(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    batch_size: int = 32,
    labels: Sequence[str] | None = None,
) -> list[ClassifyResult]:
    """Label and class probabilities of each text, run ``batch_size`` texts at a time.

    Works for any classifier returning :class:`ClassifierOutput` from
    ``model(ids, lengths, ...)``: BERT (``[CLS] x [SEP]`` inputs) or the Keras-style model
    (plain ids). ``labels`` default to the model's own ``labels``. Results are in input order;
    texts are batched by length so padding stays small.
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be at least 1, got {batch_size}")
    names = tuple(labels) if labels is not None else tuple(getattr(model, "labels", ()))
    style = str(getattr(model, "input_style", "bert"))
    max_len, too_long = input_limit(model)
    device = next(model.parameters()).device
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    results: dict[int, ClassifyResult] = {}
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            ids, _types, lengths = encode_texts(
                tokenizer, [texts[i] for i in chunk], max_len, too_long, style
            )
            logits = model(ids.to(device), lengths.to(device)).logits  # (B, C)
            probs = torch.softmax(logits.float(), dim=-1).cpu()  # (B, C)
            if not names:
                names = tuple(str(c) for c in range(probs.size(-1)))
            if len(names) != probs.size(-1):
                raise DataError(f"{len(names)} label names for {probs.size(-1)} classes")
            for i, row in zip(chunk, probs, strict=True):
                values = [float(p) for p in row]
                best = max(range(len(values)), key=values.__getitem__)
                results[i] = ClassifyResult(names[best], dict(zip(names, values, strict=True)))
    finally:
        model.train(was_training)
    return [results[i] for i in range(len(texts))]


def classify_texts(loaded: LoadedModel, texts: Sequence[str]) -> list[dict[str, Any]]:
    """``[{"text", "label", "probs": {name: p}}]`` for B texts, run as one batch."""
    if loaded.kind != "classification":
        raise DataError(f"classification needs a classifier, this one is {loaded.kind!r}")
    results = classify(loaded.model, loaded.tokenizers["src"], list(texts), max(len(texts), 1))
    return [
        {"text": t, "label": r.label, "probs": r.probs} for t, r in zip(texts, results, strict=True)
    ]
