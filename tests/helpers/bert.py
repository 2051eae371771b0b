"""Tiny BERT pieces for tests: a WordPiece ``vocab.txt`` and a two-layer :class:`BertConfig`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dhian.models.bert.config import BertConfig

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]


def write_vocab(directory: Path, words: Sequence[str], punctuation: str = ".,!?") -> Path:
    """``directory/vocab.txt``: the BERT specials, ``words``, single letters, ``##`` letters and
    ``punctuation`` (one token a char) — every lowercase word can be spelled. Returns the path."""
    tokens = [*SPECIALS, *words, *LETTERS, *(f"##{c}" for c in LETTERS), *punctuation]
    path = directory / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path


def tiny_bert_config(
    task: str, vocab_size: int, labels: Sequence[str], max_positions: int = 32
) -> BertConfig:
    """A 2-layer, 2-head, E=16 BERT for ``task``; ``labels`` are used by classification only."""
    return BertConfig(
        task=task,
        vocab_size=vocab_size,
        embed_dim=16,
        layers=2,
        heads=2,
        ff_dim=32,
        max_positions=max_positions,
        num_labels=len(labels),
        labels=tuple(labels) if task == "classification" else (),
    )
