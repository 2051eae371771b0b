"""Tiny NER (CoNLL columns) and QA (SQuAD JSON) fixtures written by the tests, and a WordPiece
vocabulary that spells them."""

from __future__ import annotations

import json
from pathlib import Path

from dhian.text import Tokenizer, wordpiece_from_vocab
from helpers.bert import write_vocab

NER_WORDS = ["anna", "lives", "in", "paris", "and", "works", "at", "acme", "corp", "berlin"]
NER_WORDS += ["bob", "visited", "london", "with", "the", "who", "where", "does", "live", "work"]

#: (words, tags) sentences; "Parisian" is split into several subwords by the tokenizer
NER_SENTENCES = [
    (["Anna", "lives", "in", "Paris", "."], ["B-PER", "O", "O", "B-LOC", "O"]),
    (["Bob", "works", "at", "Acme", "Corp", "."], ["B-PER", "O", "O", "B-ORG", "I-ORG", "O"]),
    (["Anna", "visited", "Berlin", "with", "Bob"], ["B-PER", "O", "B-LOC", "O", "B-PER"]),
    (["the", "Parisian", "lives", "in", "London"], ["O", "B-MISC", "O", "O", "B-LOC"]),
]


def ner_tokenizer(directory: Path) -> Tokenizer:
    """A lower-casing WordPiece over :data:`NER_WORDS` (its vocab.txt in ``directory``)."""
    return wordpiece_from_vocab(write_vocab(directory, NER_WORDS), lowercase=True)


def write_conll(directory: Path, copies: int = 1) -> Path:
    """``train.txt``, ``dev.txt`` and ``test.txt`` of :data:`NER_SENTENCES` (``copies`` times
    in train) in CoNLL-2003 columns (word POS chunk tag) with a -DOCSTART- line."""
    directory.mkdir(parents=True, exist_ok=True)

    def block(sentences: list[tuple[list[str], list[str]]]) -> str:
        out = ["-DOCSTART- -X- -X- O", ""]
        for words, tags in sentences:
            out += [f"{w} NNP B-NP {t}" for w, t in zip(words, tags, strict=True)] + [""]
        return "\n".join(out)

    (directory / "train.txt").write_text(block(NER_SENTENCES * copies), encoding="utf-8")
    (directory / "dev.txt").write_text(block(NER_SENTENCES), encoding="utf-8")
    (directory / "test.txt").write_text(block(NER_SENTENCES[:2]), encoding="utf-8")
    return directory


CONTEXT = "Anna lives in Paris and works at Acme Corp. Bob lives in London."
QUESTIONS = [
    ("q1", "Where does Anna live?", "Paris"),
    ("q2", "Where does Bob live?", "London"),
    ("q3", "Who works at Acme Corp?", "Anna"),
]


def write_squad(directory: Path, v2: bool = True, copies: int = 1) -> Path:
    """``train.json`` and ``dev.json`` over :data:`CONTEXT` (v2 adds an unanswerable question)."""
    directory.mkdir(parents=True, exist_ok=True)
    qas = [
        {
            "id": q,
            "question": question,
            "answers": [{"text": a, "answer_start": CONTEXT.index(a)}],
            **({"is_impossible": False} if v2 else {}),
        }
        for q, question, a in QUESTIONS
    ]
    if v2:
        qas.append(
            {"id": "q4", "question": "Who works in Berlin?", "answers": [], "is_impossible": True}
        )
    for name, n in (("train.json", copies), ("dev.json", 1)):
        paragraphs = [{"context": CONTEXT, "qas": qas} for _ in range(n)]
        doc = {
            "version": "v2.0" if v2 else "1.1",
            "data": [{"title": "t", "paragraphs": paragraphs}],
        }
        (directory / name).write_text(json.dumps(doc), encoding="utf-8")
    return directory


TAGS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")


def tiny_task_dir(directory: Path, task: str, seed: int = 0) -> Path:
    """A random 2-layer BERT of ``task`` (token_classification | question_answering) over the
    :func:`ner_tokenizer` vocabulary, saved as a dhian model dir ``directory/task``."""
    import torch

    from dhian.config import RunConfig
    from dhian.models.bert.config import BertConfig
    from dhian.models.bert.heads import build_bert
    from dhian.models.model_dir import save_model_dir

    tok = ner_tokenizer(directory)
    labelled = task == "token_classification"
    cfg = BertConfig(
        task=task,
        vocab_size=tok.vocab_size,
        embed_dim=16,
        layers=2,
        heads=2,
        ff_dim=32,
        max_positions=64,
        num_labels=len(TAGS) if labelled else 2,
        labels=TAGS if labelled else (),
    )
    torch.manual_seed(seed)
    model = build_bert(cfg).eval()
    return save_model_dir(directory / task, model, RunConfig(model=cfg), tok, kind=task)
