"""Extractive question answering with a loaded BERT QA model: the best answer span of a
context, over every window of a long context, with a maximum answer length and a no-answer
threshold (SQuAD v2).

Owns :class:`Answer`, :func:`best_span` (the highest start + end logit over the context tokens
of one window with start ≤ end < start + ``max_answer_len``), :func:`window_logits` (the
model's start / end logits of windows, batched), :func:`pick_answer` (one question's answer
over its windows), :func:`answer_many` / :func:`answer` (a model
+ tokenizer) and :func:`answer_one` (a :class:`~dhian.models.model_dir.LoadedModel`: the
server's entry point). No answer: the [CLS] score start[0] + end[0] (the lowest over windows,
as the SQuAD v2 reference post-processing does) beats the best span by more than
``null_threshold``; ``null_threshold=None`` always answers (SQuAD v1).
Notation: W windows, T tokens. Imports: torch, :mod:`dhian.data.qa_windows`,
:mod:`dhian.inference.encode`, :mod:`dhian.models.model_dir`, :mod:`dhian.errors`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from dhian.data.qa_windows import QAWindow, qa_windows
from dhian.errors import DataError
from dhian.inference.encode import input_limit
from dhian.models.model_dir import LoadedModel

__all__ = [
    "Answer",
    "answer",
    "answer_many",
    "answer_one",
    "best_span",
    "pick_answer",
    "window_logits",
]

#: start / end candidates tried per window (the reference scripts' n_best_size)
TOP_K = 20


@dataclasses.dataclass(frozen=True)
class Answer:
    """The answer ``text`` = ``context[start:end]`` ("" and start = end = 0 for no answer),
    its ``score`` (start + end logit) and the ``null_score`` of answering nothing."""

    text: str
    start: int
    end: int
    score: float
    null_score: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return dataclasses.asdict(self)


def best_span(
    start_logits: Tensor, end_logits: Tensor, window: QAWindow, max_answer_len: int = 30
) -> tuple[float, int, int] | None:
    """(score, first token, last token) of the best context span of one window, or None when
    no valid span exists. Logits (T,) over the window's tokens."""
    t = len(window.ids)
    s_top = start_logits[:t].topk(min(TOP_K, t)).indices.tolist()
    e_top = end_logits[:t].topk(min(TOP_K, t)).indices.tolist()
    best: tuple[float, int, int] | None = None
    for s in s_top:
        if window.offsets[s] is None:
            continue
        for e in e_top:
            if window.offsets[e] is None or e < s or e - s + 1 > max_answer_len:
                continue
            score = float(start_logits[s] + end_logits[e])
            if best is None or score > best[0]:
                best = (score, s, e)
    return best


@torch.no_grad()
def window_logits(
    model: nn.Module, windows: Sequence[QAWindow], batch_size: int = 32
) -> list[tuple[Tensor, Tensor]]:
    """(start, end) logits (T_w,) of each window, run ``batch_size`` windows at a time."""
    device = next(model.parameters()).device
    out: list[tuple[Tensor, Tensor]] = []
    was_training = model.training
    model.eval()
    try:
        for first in range(0, len(windows), batch_size):
            chunk = windows[first : first + batch_size]
            width = max(len(w.ids) for w in chunk)
            ids = torch.zeros((len(chunk), width), dtype=torch.long)
            types = torch.zeros_like(ids)
            for r, w in enumerate(chunk):
                ids[r, : len(w.ids)] = torch.tensor(w.ids)
                types[r, : len(w.ids)] = torch.tensor(w.type_ids)
            lengths = torch.tensor([len(w.ids) for w in chunk], dtype=torch.long)
            res = model(ids.to(device), lengths.to(device), types.to(device))
            starts, ends = res.start_logits.float().cpu(), res.end_logits.float().cpu()  # (B, T)
            out += [(starts[r, : len(w.ids)], ends[r, : len(w.ids)]) for r, w in enumerate(chunk)]
    finally:
        model.train(was_training)
    return out


def pick_answer(
    context: str,
    windows: Sequence[QAWindow],
    logits: Sequence[tuple[Tensor, Tensor]],
    max_answer_len: int,
    null_threshold: float | None,
) -> Answer:
    """The best answer of one question over its ``windows`` and their (start, end) logits."""
    best: tuple[float, int, int, int] | None = None  # score, window, start, end
    null = min(float(s[0] + e[0]) for s, e in logits)
    for k, (w, (s, e)) in enumerate(zip(windows, logits, strict=True)):
        span = best_span(s, e, w, max_answer_len)
        if span is not None and (best is None or span[0] > best[0]):
            best = (span[0], k, span[1], span[2])
    if best is None or (null_threshold is not None and null - best[0] > null_threshold):
        return Answer("", 0, 0, null if best is None else best[0], null)
    score, k, s_tok, e_tok = best
    a, b = windows[k].offsets[s_tok], windows[k].offsets[e_tok]
    assert a is not None and b is not None
    return Answer(context[a[0] : b[1]], a[0], b[1], score, null)


def answer_many(
    model: nn.Module,
    tokenizer: Any,
    pairs: Sequence[tuple[str, str]],
    *,
    max_answer_len: int = 30,
    stride: int = 128,
    null_threshold: float | None = None,
    max_len: int | None = None,
    batch_size: int = 32,
) -> list[Answer]:
    """The answer of each (question, context) pair; contexts longer than ``max_len`` tokens
    (default: the model's positions, at most 384) are read in windows overlapping by
    ``stride`` tokens (lowered to fit short windows)."""
    if max_answer_len < 1:
        raise DataError(f"max_answer_len must be at least 1, got {max_answer_len}")
    limit = min(input_limit(model)[0], max_len or 384)
    windows: list[QAWindow] = []
    owner: list[int] = []
    for i, (question, context) in enumerate(pairs):
        q_len = len(tokenizer.encode(question)[:64])
        room = limit - q_len - 3
        for w in qa_windows(tokenizer, question, context, limit, min(stride, max(room - 1, 0))):
            windows.append(w)
            owner.append(i)
    logits = window_logits(model, windows, batch_size)
    by_pair: dict[int, list[int]] = {}
    for k, o in enumerate(owner):
        by_pair.setdefault(o, []).append(k)
    out: list[Answer] = []
    for i, (_, context) in enumerate(pairs):
        mine = by_pair[i]
        out.append(
            pick_answer(
                context,
                [windows[k] for k in mine],
                [logits[k] for k in mine],
                max_answer_len,
                null_threshold,
            )
        )
    return out


def answer(model: nn.Module, tokenizer: Any, question: str, context: str, **kw: Any) -> Answer:
    """The answer to ``question`` in ``context`` (keywords as :func:`answer_many`)."""
    if not context.strip():
        raise DataError("the context is empty; give the text to answer from")
    return answer_many(model, tokenizer, [(question, context)], **kw)[0]


def answer_one(loaded: LoadedModel, question: str, context: str, **kw: Any) -> dict[str, Any]:
    """:meth:`Answer.as_dict` of one question (the server's entry point)."""
    if loaded.kind != "question_answering":
        raise DataError(f"answering needs a question-answering model, this one is {loaded.kind!r}")
    return answer(loaded.model, loaded.tokenizers["src"], question, context, **kw).as_dict()
