"""Token strings for people: subword pieces with the tokenizer's markers cleaned up.

Owns :func:`display_tokens`, the one convention every attention picture and the web page use:

- word-start markers are dropped (``▁`` of SentencePiece-style BPE, ``Ġ`` of byte-level BPE,
  whose other bytes are decoded back to text: ``ĠÃ¼ber`` → ``über``);
- a piece that continues the previous word gets a leading ``·`` (``##ing`` → ``·ing``,
  ``▁Anf`` ``ang`` → ``Anf`` ``·ang``) unless it is punctuation, the first token, or follows a
  space piece or a special token;
- a bare space piece is shown as ``␣``; special tokens (``[CLS]``, ``</s>``, ``<unk>``) are kept
  as they are, so :func:`dhian.viz.head_summary` still recognises separators.

Imports: HF ``tokenizers`` (its byte-level decoder) and the standard library; the tokenizer is
duck-typed (``id_to_token``, optional ``kind`` and ``special_ids``, see :mod:`dhian.text`).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Any

from tokenizers import decoders

__all__ = ["CONTINUATION", "SPACE", "clean_token", "display_tokens"]

#: Prefix of a piece that continues the previous word.
CONTINUATION = "·"
#: How a piece made only of a space marker is shown.
SPACE = "␣"
_METASPACE = "▁"
_BYTE_SPACE = "Ġ"
_BYTE_LEVEL = decoders.ByteLevel()


def _is_punctuation(piece: str) -> bool:
    return bool(piece) and all(unicodedata.category(c)[0] in "PS" for c in piece)


def _scheme(tokenizer: Any, raw: Sequence[str]) -> str:
    """``wordpiece`` | ``bpe`` (▁ marks a word start) | ``bytebpe`` (Ġ) | ``char`` | ``plain``."""
    kind = str(getattr(tokenizer, "kind", ""))
    if kind in ("wordpiece", "bpe", "bytebpe", "char"):
        return kind
    if any(t.startswith("##") for t in raw):
        return "wordpiece"
    if any(t.startswith(_BYTE_SPACE) for t in raw):
        return "bytebpe"
    if any(t.startswith(_METASPACE) for t in raw):
        return "bpe"
    return "plain"


def clean_token(raw: str, scheme: str) -> tuple[str, bool]:
    """``(text, starts_word)`` of one raw piece under ``scheme`` (see :func:`display_tokens`)."""
    if scheme == "wordpiece":
        return (raw[2:], False) if raw.startswith("##") and len(raw) > 2 else (raw, True)
    if scheme == "bytebpe":
        text = _BYTE_LEVEL.decode([raw])
        return (text[1:], True) if text.startswith(" ") else (text, False)
    if scheme in ("bpe", "char"):
        if raw.startswith(_METASPACE):
            return raw[1:], True
        return raw, scheme == "char"
    return raw, True


def display_tokens(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Readable strings of ``ids`` (T,) for plots and the viewer, aligned one to one with ids.

    ``tokenizer`` needs ``id_to_token(id) -> str``; its ``kind`` (wordpiece | bpe | bytebpe |
    char) picks the marker convention, else it is guessed from the pieces. Specials (ids in
    ``tokenizer.special_ids``) keep their raw strings.
    """
    ids = [int(i) for i in ids]
    raw = [str(tokenizer.id_to_token(i)) for i in ids]
    specials = set(getattr(tokenizer, "special_ids", ()) or ())
    scheme = _scheme(tokenizer, raw)
    out: list[str] = []
    after_space = True  # the first piece starts a word
    for tid, piece in zip(ids, raw, strict=True):
        if tid in specials:
            out.append(piece)
            after_space = True
            continue
        text, starts_word = clean_token(piece, scheme)
        if not text.strip():
            out.append(SPACE if not text or text.isspace() else text)
            after_space = True
            continue
        if not (starts_word or after_space or _is_punctuation(text)):
            text = CONTINUATION + text
        out.append(text)
        after_space = False
    return out
