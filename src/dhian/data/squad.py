"""SQuAD v1.1 / v2.0 JSON for extractive question answering.

Owns reading a SQuAD file (``data`` → ``paragraphs`` → ``context`` + ``qas`` with ``answers``
(text, ``answer_start``) and, in v2, ``is_impossible``) into :class:`QAExample`, finding the
split file of a corpus spec (``squad:DIR`` or ``DIR`` with ``train.json`` / ``dev.json`` /
``test.json``, or the official ``train-v1.1.json`` / ``dev-v2.0.json`` names, or a ``.json``
file) and encoding examples into windows with start/end labels (:func:`encode_squad`, windows
from :mod:`dhian.data.qa_windows`; training labels the first gold answer, a window without it
and every window of an unanswerable question point at [CLS]).
Imports: stdlib, :mod:`dhian.data` (examples, qa_windows), :mod:`dhian.text`,
:mod:`dhian.errors`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from dhian.data.examples import Examples
from dhian.data.qa_windows import MAX_QUERY, QAWindow, answer_positions, qa_windows
from dhian.errors import DataError
from dhian.text.tokenizer import Tokenizer

__all__ = ["QAExample", "QAFeatures", "encode_squad", "read_squad", "squad_path"]

SPLIT_FILES = {
    "train": ("train.json", "train-v2.0.json", "train-v1.1.json"),
    "dev": ("dev.json", "dev-v2.0.json", "dev-v1.1.json"),
    "test": ("test.json",),
}


@dataclasses.dataclass(frozen=True)
class QAExample:
    """One question on one context: gold ``answers`` as (text, start character) pairs (empty
    and ``impossible`` for a v2 question without an answer)."""

    id: str
    question: str
    context: str
    answers: tuple[tuple[str, int], ...]
    impossible: bool = False


@dataclasses.dataclass
class QAFeatures:
    """Encoded windows of a split: ``data`` (:class:`Examples` of task ``span``, one row per
    window, ``spans`` = gold (start, end) tokens), ``windows`` (same order) and ``example``:
    the index in ``examples`` each window came from."""

    data: Examples
    windows: list[QAWindow]
    example: list[int]
    examples: list[QAExample]


def read_squad(path: str | Path) -> list[QAExample]:
    """The questions of a SQuAD v1.1 / v2.0 JSON file, in file order."""
    p = Path(path)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
        out: list[QAExample] = []
        for article in raw["data"]:
            for para in article["paragraphs"]:
                context = str(para["context"])
                for qa in para["qas"]:
                    answers = tuple(
                        (str(a["text"]), int(a["answer_start"])) for a in qa.get("answers", [])
                    )
                    impossible = bool(qa.get("is_impossible", False)) or not answers
                    for text, start in answers:
                        if context[start : start + len(text)] != text:
                            raise DataError(
                                f"{p}: answer {text!r} of question {qa['id']} is not at "
                                f"character {start} of its context"
                            )
                    out.append(
                        QAExample(str(qa["id"]), str(qa["question"]), context, answers, impossible)
                    )
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{p} is not SQuAD JSON (data → paragraphs → qas): {exc}") from exc
    return out


def squad_path(spec: str, split: str) -> Path:
    """The file of ``split`` of ``squad:DIR`` / ``DIR`` / a ``.json`` file."""
    base = Path(spec.removeprefix("squad:"))
    if base.is_file():
        return base
    if split not in SPLIT_FILES:
        raise DataError(f"unknown split {split!r}; valid: {', '.join(SPLIT_FILES)}")
    for name in SPLIT_FILES[split]:
        if (base / name).is_file():
            return base / name
    raise DataError(
        f"no {split} file in {base} (looked for {', '.join(SPLIT_FILES[split])}); a SQuAD "
        "corpus dir holds train.json and dev.json"
    )


def encode_squad(
    examples: Sequence[QAExample],
    tok: Tokenizer,
    max_len: int,
    stride: int = 128,
    fit_stride: bool = False,
) -> QAFeatures:
    """Every window of every example, labelled with the first gold answer's tokens.

    ``fit_stride``: lower ``stride`` per question to fit its windows (evaluation of a model
    whose positions are fewer than its recipe's ``data.max_len``) instead of refusing it."""
    data = Examples("span", [], [], type_ids=[], spans=[], pad_id=tok.pad_id)
    assert data.type_ids is not None and data.spans is not None
    windows: list[QAWindow] = []
    owner: list[int] = []
    for i, ex in enumerate(examples):
        step = stride
        if fit_stride:
            room = max_len - len(tok.encode(ex.question)[:MAX_QUERY]) - 3
            step = min(stride, max(room - 1, 0))
        for w in qa_windows(tok, ex.question, ex.context, max_len, step):
            span = (0, 0)
            if ex.answers and not ex.impossible:
                text, start = ex.answers[0]
                span = answer_positions(w, start, start + len(text))
            data.src.append(w.ids)
            data.type_ids.append(w.type_ids)
            data.spans.append(span)
            data.ids.append(len(windows))
            windows.append(w)
            owner.append(i)
    return QAFeatures(data, windows, owner, list(examples))
