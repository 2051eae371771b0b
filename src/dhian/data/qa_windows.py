"""Extractive-QA inputs: ``[CLS] question [SEP] context window [SEP]`` with long contexts split
into overlapping windows, and the answer's token span inside a window.

Owns :class:`QAWindow` (ids, token types, each context token's character span in the context)
built by :func:`qa_windows` from the fast tokenizer's offset mapping, and
:func:`answer_positions` (character span of an answer → start / end token of a window, or
(0, 0) = [CLS] when the window does not hold the whole answer: the SQuAD v2 "no answer").
Windows start every ``max_len - len(question) - 3 - stride`` context tokens, so neighbours share
``stride`` tokens (HF's ``stride`` / ``doc_stride``). Plain Python lists, no torch.
Imports: stdlib, :mod:`dhian.text`, :mod:`dhian.errors`.
"""

from __future__ import annotations

import dataclasses

from dhian.errors import DataError
from dhian.text.tokenizer import Tokenizer
from dhian.text.word_alignment import encode_with_offsets

__all__ = ["MAX_QUERY", "QAWindow", "answer_positions", "qa_windows"]

#: question tokens kept (longer questions are cut), as in the SQuAD reference scripts
MAX_QUERY = 64


@dataclasses.dataclass(frozen=True)
class QAWindow:
    """One model input (T ids): ``ids`` = ``[CLS] q [SEP] c[a:b] [SEP]``, ``type_ids`` 0 for
    the question part and 1 for the context part, ``offsets`` the (start, end) character span
    in the context of each context token and ``None`` for the others (T entries)."""

    ids: list[int]
    type_ids: list[int]
    offsets: list[tuple[int, int] | None]


def qa_windows(
    tok: Tokenizer, question: str, context: str, max_len: int, stride: int = 128
) -> list[QAWindow]:
    """The windows of one (question, context) pair, each at most ``max_len`` ids."""
    q_ids = tok.encode(question)[:MAX_QUERY]
    c_ids, c_off, _ = encode_with_offsets(tok, context)
    budget = max_len - len(q_ids) - 3
    if budget < 1:
        raise DataError(
            f"max_len {max_len} leaves no room for the context after a {len(q_ids)}-token "
            "question; raise data.max_len"
        )
    if not 0 <= stride < budget:
        raise DataError(
            f"stride {stride} must be in 0..{budget - 1} (the context tokens of one window, "
            f"{budget}, minus one)"
        )
    head = [tok.cls_id, *q_ids, tok.sep_id]
    windows: list[QAWindow] = []
    start = 0
    while True:
        part = c_ids[start : start + budget]
        ids = [*head, *part, tok.sep_id]
        types = [0] * len(head) + [1] * (len(part) + 1)
        offsets: list[tuple[int, int] | None] = [None] * len(head)
        offsets += [c_off[start + j] for j in range(len(part))] + [None]
        windows.append(QAWindow(ids, types, offsets))
        if start + budget >= len(c_ids):
            return windows
        start += budget - stride


def answer_positions(window: QAWindow, start_char: int, end_char: int) -> tuple[int, int]:
    """(first, last) token of the answer at characters [``start_char``, ``end_char``) of the
    context in ``window``; (0, 0) when the window does not hold all of it."""
    inside = [i for i, o in enumerate(window.offsets) if o is not None]
    if not inside or end_char <= start_char:
        return 0, 0
    first, last = window.offsets[inside[0]], window.offsets[inside[-1]]
    assert first is not None and last is not None
    if first[0] > start_char or last[1] < end_char:
        return 0, 0
    hit = [
        i
        for i in inside
        if (o := window.offsets[i]) is not None and o[0] < end_char and o[1] > start_char
    ]
    return (hit[0], hit[-1]) if hit else (0, 0)
