"""Tiny BERT pieces for tests: a WordPiece ``vocab.txt`` and a two-layer :class:`BertConfig`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from dhian.models.bert.config import BertConfig
from dhian.models.bert.heads import build_bert
from dhian.text import Tokenizer, wordpiece_from_vocab

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


#: words of the small WordPiece vocabulary the BERT tests share
WORDS = ["the", "of", "is", "and", "to", "in", "capital", "france", "paris"]
WORDS += ["city", "river", "big", "small", "cat", "dog", "sat", "on", "mat"]


def word_tokenizer(directory: Path) -> Tokenizer:
    """A lower-casing WordPiece tokenizer over :data:`WORDS` (its vocab.txt in ``directory``)."""
    return wordpiece_from_vocab(write_vocab(directory, WORDS, punctuation=".,!?'"), lowercase=True)


def tiny_cfg(**kw: object) -> BertConfig:
    """A 2-layer BERT over a 90-token vocabulary, 24 positions; ``kw`` override fields."""
    args: dict[str, object] = dict(
        vocab_size=90, embed_dim=16, layers=2, heads=2, ff_dim=32, max_positions=24
    )
    args.update(kw)
    return BertConfig(**args)  # type: ignore[arg-type]


def tiny(task: str = "backbone", seed: int = 0, **kw: object) -> torch.nn.Module:
    """:func:`tiny_cfg` built for ``task`` with seed ``seed``, in eval mode."""
    torch.manual_seed(seed)
    return build_bert(tiny_cfg(task=task, **kw)).eval()
