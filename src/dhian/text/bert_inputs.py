"""BERT-style inputs: ``[CLS] a [SEP]`` / ``[CLS] a [SEP] b [SEP]`` with token type ids.

Owns truncation to a maximum length (longest side first for pairs, as HF does) and the
(ids, type_ids, lengths) triple that BERT models and classification batches consume. Works with
any :class:`~dhian.text.tokenizer.Tokenizer` that has cls/sep tokens. Plain Python lists, no torch.
"""

from __future__ import annotations

from collections.abc import Sequence

from dhian.errors import DataError
from dhian.text.tokenizer import Tokenizer


def _truncate_pair(a: list[int], b: list[int], budget: int) -> tuple[list[int], list[int]]:
    """Shorten ``a``/``b`` so ``len(a) + len(b) <= budget``, longest first (HF tokenizers' rule)."""
    if len(a) + len(b) <= budget:
        return list(a), list(b)
    short = min(len(a), len(b))
    keep_long = short if short > budget else max(short, budget - short)
    keep_short = short
    if keep_short + keep_long > budget:
        keep_short = budget // 2
        keep_long = keep_short + budget % 2
    if len(a) > len(b):
        return list(a[:keep_long]), list(b[:keep_short])
    return list(a[:keep_short]), list(b[:keep_long])


def build_bert_input(
    tok: Tokenizer, a: list[int], b: list[int] | None, max_len: int
) -> tuple[list[int], list[int]]:
    """``[CLS] a [SEP] (b [SEP])`` truncated to ``max_len`` ids → (ids, type_ids), both length T."""
    if b is None:
        if max_len < 2:
            raise DataError(f"max_len {max_len} is too small for [CLS] x [SEP]; use at least 3")
        a = a[: max_len - 2]
        ids = [tok.cls_id, *a, tok.sep_id]
        return ids, [0] * len(ids)
    if max_len < 3:
        raise DataError(f"max_len {max_len} is too small for [CLS] a [SEP] b [SEP]; use at least 4")
    a, b = _truncate_pair(a, b, max_len - 3)
    ids = [tok.cls_id, *a, tok.sep_id, *b, tok.sep_id]
    types = [0] * (len(a) + 2) + [1] * (len(b) + 1)
    return ids, types


def encode_pair(
    tok: Tokenizer, a: str, b: str | None = None, max_len: int = 512
) -> tuple[list[int], list[int]]:
    """Encode one text (or a pair) for BERT → (ids, type_ids), each of length T ≤ ``max_len``."""
    ids_a = tok.encode(a)
    ids_b = tok.encode(b) if b is not None else None
    return build_bert_input(tok, ids_a, ids_b, max_len)


def encode_for_bert(
    tok: Tokenizer,
    texts: Sequence[str],
    max_len: int,
    pairs: Sequence[str] | None = None,
) -> tuple[list[list[int]], list[list[int]], list[int]]:
    """Encode B texts (optionally paired with ``pairs``) for BERT.

    Returns ``(ids, type_ids, lengths)``: B unpadded id lists ``[CLS] x [SEP]`` (each T_b ≤
    ``max_len``), B token-type lists (0 for the first segment, 1 for the second) and the B
    lengths T_b (the attention length; pad to max T_b with ``tok.pad_id``).
    """
    if pairs is not None and len(pairs) != len(texts):
        raise DataError(f"encode_for_bert got {len(texts)} texts but {len(pairs)} pair texts")
    first = tok.encode_batch(texts)
    second = tok.encode_batch(pairs) if pairs is not None else [None] * len(first)
    ids: list[list[int]] = []
    types: list[list[int]] = []
    for a, b in zip(first, second, strict=True):
        i, t = build_bert_input(tok, a, b, max_len)
        ids.append(i)
        types.append(t)
    return ids, types, [len(i) for i in ids]
