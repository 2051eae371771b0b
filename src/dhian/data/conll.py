"""CoNLL-2003-style column files for token classification (named entities, BIO tags).

Owns reading a column file (one token a line, the word first and its tag last, blank lines
between sentences, ``-DOCSTART-`` lines skipped), finding the split files of a corpus spec
(``conll:DIR`` or ``DIR`` with ``train.txt`` / ``dev.txt`` (or ``valid.txt``, ``testa.txt``) /
``test.txt`` (or ``testb.txt``)), the tag set, and encoding sentences for a BERT token
classifier: ``[CLS] subwords [SEP]`` with each word's tag on its *first* subword and
``-100`` (ignored by the loss) on the other subwords and the specials.
Imports: stdlib, :mod:`dhian.data` (examples, mlm), :mod:`dhian.text`, :mod:`dhian.errors`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from dhian.data.examples import Examples
from dhian.data.mlm import IGNORE_INDEX
from dhian.errors import DataError
from dhian.text.tokenizer import Tokenizer
from dhian.text.word_alignment import encode_words

__all__ = [
    "IGNORE",
    "SPLIT_FILES",
    "TaggedSentence",
    "conll_path",
    "encode_tagged",
    "read_conll",
    "tag_names",
]

#: the label of positions the loss ignores (subwords after the first, [CLS], [SEP], padding)
IGNORE = IGNORE_INDEX
#: split → file names tried in order inside the corpus dir
SPLIT_FILES = {
    "train": ("train.txt",),
    "dev": ("dev.txt", "valid.txt", "testa.txt"),
    "test": ("test.txt", "testb.txt"),
}


@dataclasses.dataclass(frozen=True)
class TaggedSentence:
    """One sentence: its ``words`` and their ``tags`` (same length)."""

    words: tuple[str, ...]
    tags: tuple[str, ...]


def read_conll(path: str | Path) -> list[TaggedSentence]:
    """The sentences of a CoNLL column file (word = first column, tag = last column)."""
    p = Path(path)
    sentences: list[TaggedSentence] = []
    words: list[str] = []
    tags: list[str] = []

    def flush() -> None:
        if words:
            sentences.append(TaggedSentence(tuple(words), tuple(tags)))
        words.clear()
        tags.clear()

    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        cols = line.split()
        if not cols:
            flush()
            continue
        if cols[0] == "-DOCSTART-":
            flush()
            continue
        if len(cols) < 2:
            raise DataError(f"{p}:{n}: a token line needs a word and a tag, got {line!r}")
        words.append(cols[0])
        tags.append(cols[-1])
    flush()
    return sentences


def conll_path(spec: str, split: str) -> Path:
    """The file of ``split`` (train | dev | test) of ``conll:DIR`` / ``DIR`` / a ``.txt`` file."""
    base = Path(spec.removeprefix("conll:"))
    if base.is_file():
        return base
    if split not in SPLIT_FILES:
        raise DataError(f"unknown split {split!r}; valid: {', '.join(SPLIT_FILES)}")
    for name in SPLIT_FILES[split]:
        if (base / name).is_file():
            return base / name
    raise DataError(
        f"no {split} file in {base} (looked for {', '.join(SPLIT_FILES[split])}); a CoNLL corpus "
        "dir holds train.txt, dev.txt and test.txt"
    )


def tag_names(sentences: Sequence[TaggedSentence]) -> list[str]:
    """The tag set: ``O`` first (when present), then the others sorted by entity type and
    B before I (``B-LOC``, ``I-LOC``, ``B-PER`` ...)."""
    seen = {t for s in sentences for t in s.tags}
    rest = sorted(seen - {"O"}, key=lambda t: (t[2:], t[:2]) if t[1:2] == "-" else (t, ""))
    return (["O"] if "O" in seen else []) + rest


def encode_tagged(
    sentences: Sequence[TaggedSentence],
    tok: Tokenizer,
    names: Sequence[str],
    max_len: int,
    name: str = "corpus",
) -> Examples:
    """``[CLS] subwords [SEP]`` ids and their tags (first subword of each word; ``-100`` on
    later subwords and specials) → :class:`Examples` of task ``tag`` (``tgt`` = tag ids).
    Sentences longer than ``max_len`` ids are cut (counted in ``truncated``); a tag not in
    ``names`` is a :class:`DataError`."""
    index = {t: i for i, t in enumerate(names)}
    out = Examples("tag", [], [], tgt=[], type_ids=[], pad_id=tok.pad_id)
    assert out.tgt is not None and out.type_ids is not None
    for i, sent in enumerate(sentences):
        unknown = [t for t in sent.tags if t not in index]
        if unknown:
            raise DataError(
                f"{name} sentence {i} has tag {unknown[0]!r}, not one of the model's "
                f"({', '.join(names)})"
            )
        ids, word_ids = encode_words(tok, sent.words)
        labels: list[int] = []
        prev = -1
        for w in word_ids:
            labels.append(index[sent.tags[w]] if w >= 0 and w != prev else IGNORE)
            prev = w
        keep = max_len - 2
        if len(ids) > keep:
            ids, labels = ids[:keep], labels[:keep]
            out.truncated += 1
        out.src.append([tok.cls_id, *ids, tok.sep_id])
        out.tgt.append([IGNORE, *labels, IGNORE])
        out.type_ids.append([0] * (len(ids) + 2))
        out.ids.append(i)
    return out
