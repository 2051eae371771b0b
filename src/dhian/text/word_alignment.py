"""Subword ↔ word and subword ↔ character alignment from the fast (HF ``tokenizers``) encoding.

Owns :func:`encode_words` (pre-split words, e.g. a CoNLL sentence → ids and the word each id
belongs to) and :func:`encode_with_offsets` (raw text → ids, each id's character span in the
text and its word index), which token classification and extractive QA need to map model
positions back to words and characters. No special tokens are added here
(:mod:`dhian.text.bert_inputs` adds them). Plain Python lists, no torch.
Imports: :mod:`dhian.text.tokenizer`.
"""

from __future__ import annotations

from collections.abc import Sequence

from dhian.text.tokenizer import Tokenizer, clean_text

__all__ = ["encode_with_offsets", "encode_words"]


def encode_words(tok: Tokenizer, words: Sequence[str]) -> tuple[list[int], list[int]]:
    """Ids of pre-split ``words`` (T of them) and, per id, the index of its word (T ints).

    A word the tokenizer drops entirely (e.g. a control character) gets no id."""
    enc = tok.hf.encode(
        [clean_text(w) for w in words], is_pretokenized=True, add_special_tokens=False
    )
    word_ids = [int(w) if w is not None else -1 for w in enc.word_ids]
    return list(enc.ids), word_ids


def encode_with_offsets(
    tok: Tokenizer, text: str
) -> tuple[list[int], list[tuple[int, int]], list[int]]:
    """Ids of ``text`` (T), each id's (start, end) character span in ``text`` and its word
    index (the tokenizer's pre-tokenisation: whitespace and punctuation split words)."""
    enc = tok.hf.encode(clean_text(text), add_special_tokens=False)
    offsets = [(int(a), int(b)) for a, b in enc.offsets]
    word_ids = [int(w) if w is not None else -1 for w in enc.word_ids]
    return list(enc.ids), offsets, word_ids
