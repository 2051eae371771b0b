"""The split dataclasses every corpus loader returns, and the JSONL cache of processed splits.

Owns :class:`ParallelCorpus`, :class:`TextClassificationCorpus`, :class:`MonolingualCorpus`,
:class:`CorpusInfo`, whitespace token counting, and atomic JSONL read/write.
Imports: stdlib, :mod:`dhian.errors`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from dhian.errors import DataError

SPLITS = ("train", "dev", "test")


@dataclasses.dataclass
class ParallelCorpus:
    """Aligned (source, target) sentence pairs of one split; ``refs`` are stable example ids."""

    name: str
    split: str
    src_lang: str
    tgt_lang: str
    pairs: list[tuple[str, str]]
    refs: list[str]

    kind = "parallel"

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def sources(self) -> list[str]:
        """Source sides, in order."""
        return [p[0] for p in self.pairs]

    @property
    def targets(self) -> list[str]:
        """Target sides, in order."""
        return [p[1] for p in self.pairs]

    def texts(self) -> list[str]:
        """All text (both sides), e.g. to train a joint tokenizer."""
        return [t for p in self.pairs for t in p]


@dataclasses.dataclass
class TextClassificationCorpus:
    """(text, label id) examples of one split; ``label_names[label]`` names a label."""

    name: str
    split: str
    examples: list[tuple[str, int]]
    label_names: list[str]
    refs: list[str]

    kind = "classification"

    def __len__(self) -> int:
        return len(self.examples)

    def texts(self) -> list[str]:
        """The texts, in order."""
        return [e[0] for e in self.examples]

    @property
    def labels(self) -> list[int]:
        """The label ids, in order."""
        return [e[1] for e in self.examples]


@dataclasses.dataclass
class MonolingualCorpus:
    """Documents (or lines) of running text of one split, for language modelling."""

    name: str
    split: str
    lang: str
    docs: list[str]
    refs: list[str]

    kind = "monolingual"

    def __len__(self) -> int:
        return len(self.docs)

    def texts(self) -> list[str]:
        """The documents, in order."""
        return list(self.docs)


AnyCorpus = ParallelCorpus | TextClassificationCorpus | MonolingualCorpus


@dataclasses.dataclass
class CorpusInfo:
    """What ``dhian data info NAME`` prints: source, license, and per-split sizes."""

    name: str
    kind: str
    source: str
    license: str
    sizes: dict[str, int]
    tokens: dict[str, dict[str, int]]  # split → side/"text" → whitespace tokens
    notes: list[str] = dataclasses.field(default_factory=list)

    def lines(self) -> list[str]:
        """Human-readable lines."""
        out = [
            f"{self.name} ({self.kind})",
            f"  source:  {self.source}",
            f"  license: {self.license}",
        ]
        for split, n in self.sizes.items():
            toks = ", ".join(f"{k} {v:,}" for k, v in self.tokens.get(split, {}).items())
            out.append(f"  {split:<5} {n:>7,} examples   whitespace tokens: {toks}")
        out.extend(f"  note: {n}" for n in self.notes)
        return out


def whitespace_tokens(texts: Iterable[str]) -> int:
    """Number of whitespace-separated tokens in ``texts``."""
    return sum(len(t.split()) for t in texts)


def split_tokens(corpus: AnyCorpus) -> dict[str, int]:
    """Whitespace token counts of a split: per side for parallel, else ``text``."""
    if isinstance(corpus, ParallelCorpus):
        return {
            corpus.src_lang: whitespace_tokens(corpus.sources),
            corpus.tgt_lang: whitespace_tokens(corpus.targets),
        }
    return {"text": whitespace_tokens(corpus.texts())}


def check_split(split: str) -> None:
    """Raise :class:`DataError` unless ``split`` is train, dev or test."""
    if split not in SPLITS:
        hint = " (did you mean 'dev'?)" if split in {"valid", "validation", "val"} else ""
        raise DataError(f"unknown split {split!r}{hint}; valid: {', '.join(SPLITS)}")


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write rows as JSON lines, atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text without the newline) of a UTF-8 file; bad bytes name file and line."""
    try:
        f = path.open("rb")
    except OSError as exc:
        raise DataError(f"cannot open {str(path)!r} ({exc.strerror}); check the path") from exc
    with f:
        for n, raw in enumerate(f, 1):
            try:
                text = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{path}:{n}: invalid UTF-8 (byte {raw[exc.start]:#04x} at column {exc.start + 1}); "
                    "re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
                ) from exc
            yield n, text.rstrip("\r\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file (blank lines skipped); errors name the file and line."""
    rows: list[dict[str, Any]] = []
    for n, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path}:{n}: not valid JSON ({exc.msg}); fix or delete the line"
            ) from exc
        if not isinstance(row, dict):
            raise DataError(
                f"{path}:{n}: expected a JSON object per line, got {type(row).__name__}"
            )
        rows.append(row)
    return rows
