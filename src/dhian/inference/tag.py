"""Token classification (named entities, BIO tags) with a loaded BERT token classifier: words
with their labels, and the entity spans those labels make.

Owns :func:`bio_entities` (BIO / IOB2 labels → (type, first word, end word) spans; an ``I-``
that does not continue an entity of its type starts one, as seqeval does), :class:`TagResult`,
:func:`tag` (a model + tokenizer, batched by length, in input order) and :func:`tag_texts` (a
:class:`~dhian.models.model_dir.LoadedModel`: the server's entry point). Words are the
tokenizer's pre-tokenisation (whitespace and punctuation split words, as CoNLL files do); a
word's label is its *first* subword's (the convention the model was trained with).
Notation: B texts, T tokens, C labels. Imports: torch, :mod:`dhian.inference.encode`,
:mod:`dhian.models` (bert length policy, model_dir), :mod:`dhian.text`, :mod:`dhian.errors`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from dhian.errors import DataError
from dhian.inference.encode import input_limit
from dhian.models.bert.model import check_length
from dhian.models.model_dir import LoadedModel
from dhian.text.word_alignment import encode_with_offsets

__all__ = ["Entity", "TagResult", "TaggedWord", "bio_entities", "tag", "tag_texts"]


@dataclasses.dataclass(frozen=True)
class TaggedWord:
    """One word: its ``text``, characters [``start``, ``end``) of the input, ``label`` and
    the model's probability ``prob`` of that label."""

    text: str
    start: int
    end: int
    label: str
    prob: float


@dataclasses.dataclass(frozen=True)
class Entity:
    """An entity span: ``type`` (``PER`` ...), its ``text``, characters [``start``, ``end``)
    and words [``first``, ``last``] of the input."""

    type: str
    text: str
    start: int
    end: int
    first: int
    last: int


@dataclasses.dataclass(frozen=True)
class TagResult:
    """The tagged ``words`` of one input line and the ``entities`` they make."""

    text: str
    words: list[TaggedWord]
    entities: list[Entity]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"text", "tokens": [{text, start, end, label, prob}], "entities":
        [{type, text, start, end}]}``."""
        return {
            "text": self.text,
            "tokens": [dataclasses.asdict(w) for w in self.words],
            "entities": [
                {"type": e.type, "text": e.text, "start": e.start, "end": e.end}
                for e in self.entities
            ],
        }


def bio_entities(labels: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, first, end) word spans (end exclusive) of BIO labels: ``B-X`` starts an ``X``;
    ``I-X`` continues an open ``X`` or else starts one; ``O`` and anything else close it."""
    spans: list[tuple[str, int, int]] = []
    kind: str | None = None
    first = 0
    for i, label in enumerate([*labels, "O"]):
        prefix, _, typ = label.partition("-")
        continues = prefix == "I" and typ == kind
        if kind is not None and not continues:
            spans.append((kind, first, i))
            kind = None
        if prefix in ("B", "I") and typ and not continues:
            kind, first = typ, i
    return spans


@torch.no_grad()
def tag(
    model: nn.Module, tokenizer: Any, texts: Sequence[str], batch_size: int = 32
) -> list[TagResult]:
    """Words, labels and entities of each text, ``batch_size`` texts at a time, in input order.

    A text longer than the model's positions is cut with a warning (its last words are not
    tagged), or refused when the model says ``too_long="error"``."""
    if batch_size < 1:
        raise DataError(f"batch_size must be at least 1, got {batch_size}")
    names = tuple(getattr(model, "labels", ()))
    if not names:
        raise DataError(f"{type(model).__name__} has no label names; is it a token classifier?")
    max_len, too_long = input_limit(model)
    device = next(model.parameters()).device
    encoded = [encode_with_offsets(tokenizer, t) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: len(encoded[i][0]))
    results: dict[int, TagResult] = {}
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            rows: list[list[int]] = []
            for i in chunk:
                ids = encoded[i][0]
                keep = check_length(len(ids) + 2, max_len, too_long, f"text {i}") - 2
                rows.append([tokenizer.cls_id, *ids[:keep], tokenizer.sep_id])
            width = max(len(r) for r in rows)
            batch = torch.full((len(rows), width), int(tokenizer.pad_id), dtype=torch.long)
            for r, row in enumerate(rows):
                batch[r, : len(row)] = torch.tensor(row, dtype=torch.long)
            lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
            logits = model(batch.to(device), lengths.to(device)).logits  # (B, T, C)
            if logits.size(-1) != len(names):
                raise DataError(f"{len(names)} label names for {logits.size(-1)} classes")
            probs = torch.softmax(logits.float(), dim=-1).cpu()  # (B, T, C)
            for r, i in enumerate(chunk):
                results[i] = _words(texts[i], encoded[i], probs[r, 1 : lengths[r] - 1], names)
    finally:
        model.train(was_training)
    return [results[i] for i in range(len(texts))]


def _words(
    text: str,
    encoded: tuple[list[int], list[tuple[int, int]], list[int]],
    probs: torch.Tensor,
    names: Sequence[str],
) -> TagResult:
    """The tagged words of one text from its subword probabilities (T', C) (T' kept tokens)."""
    _, offsets, word_ids = encoded
    words: list[TaggedWord] = []
    seen: dict[int, int] = {}  # word id → index in words
    for t in range(probs.size(0)):
        w = word_ids[t]
        a, b = offsets[t]
        if w in seen:  # a later subword: widen the word, keep the first subword's label
            k = seen[w]
            old = words[k]
            words[k] = dataclasses.replace(old, end=b, text=text[old.start : b])
            continue
        seen[w] = len(words)
        best = int(probs[t].argmax())
        words.append(TaggedWord(text[a:b], a, b, names[best], float(probs[t, best])))
    entities = [
        Entity(
            typ,
            text[words[f].start : words[e - 1].end],
            words[f].start,
            words[e - 1].end,
            f,
            e - 1,
        )
        for typ, f, e in bio_entities([w.label for w in words])
    ]
    return TagResult(text, words, entities)


def tag_texts(loaded: LoadedModel, texts: Sequence[str]) -> list[dict[str, Any]]:
    """:meth:`TagResult.as_dict` of B texts, run as one batch (the server's entry point)."""
    if loaded.kind != "token_classification":
        raise DataError(f"tagging needs a token classifier, this one is {loaded.kind!r}")
    results = tag(loaded.model, loaded.tokenizers["src"], list(texts), max(len(texts), 1))
    return [r.as_dict() for r in results]
