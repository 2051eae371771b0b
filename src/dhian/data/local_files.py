"""Local corpus files: ``KIND:DIR`` specs and the generic formats.

Generic kinds (one file per split; dev may be named dev/valid/val/validation):
``tsv:DIR`` (``train.tsv``: source TAB target, no header), ``files:DIR[@SRC-TGT]`` (two aligned
files ``train.SRC``/``train.TGT``; default suffixes ``src``/``tgt``), ``jsonl:DIR``
(``train.jsonl`` rows ``{"src","tgt"}`` → parallel, ``{"text","label"}`` → classification,
``{"text"}`` → monolingual), ``csv:DIR`` (``train.csv``/``.tsv`` with a header, text and label
columns), ``text:DIR`` (``train.txt``; documents separated by blank lines).
Standard sets (``multi30k``, ``iwslt``, ``agnews``, ``wikitext``, ``hf``) live in
:mod:`dhian.data.standard_sets` (which reuses the file helpers here); :func:`dhian.data.corpus_loader.load_corpus`
picks between the two. Every error names the file, line or value and the fix.
Imports: stdlib (csv, json), :mod:`dhian.data.corpus`, :mod:`dhian.errors`; no torch.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from dhian.data.corpus import (
    AnyCorpus,
    MonolingualCorpus,
    ParallelCorpus,
    TextClassificationCorpus,
    check_split,
    iter_lines,
    read_jsonl,
)
from dhian.errors import DataError, nearest

SPLIT_ALIASES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "dev": ("dev", "valid", "val", "validation"),
    "test": ("test",),
}
GENERIC = ("tsv", "files", "jsonl", "csv", "text")
STANDARD = ("multi30k", "iwslt", "agnews", "wikitext", "hf")
KINDS = (*GENERIC, *STANDARD)
_LANGS = re.compile(r"^(?P<src>[A-Za-z][\w]*)-(?P<tgt>[A-Za-z][\w]*)$")


def parse_local_spec(spec: str) -> tuple[str, str, tuple[str, str] | None]:
    """``KIND:PATH[@SRC-TGT]`` → (kind, path, (src, tgt) or None)."""
    if ":" not in spec:
        raise DataError(
            f"unknown corpus {spec!r}; use a built-in (dhian data list) or KIND:PATH with KIND in "
            f"{', '.join(KINDS)}"
        )
    kind, rest = spec.split(":", 1)
    if kind not in KINDS:
        raise DataError(
            f"unknown corpus kind {kind!r}{nearest(kind, KINDS)}; valid: {', '.join(KINDS)}"
        )
    langs = None
    if "@" in rest:
        head, tail = rest.rsplit("@", 1)
        m = _LANGS.match(tail)
        if m:
            rest, langs = head, (m["src"], m["tgt"])
    if not rest:
        raise DataError(f"corpus spec {spec!r} has no path; write {kind}:DIR")
    return kind, rest, langs


def require_dir(path: str, spec: str) -> Path:
    """``path`` as an existing directory, else a DataError naming it."""
    d = Path(path).expanduser()
    if not d.is_dir():
        raise DataError(
            f"corpus directory {str(d)!r} (from {spec!r}) does not exist; check the path"
        )
    return d


def find_split_file(d: Path, split: str, suffixes: Sequence[str]) -> Path:
    """The file of ``split`` in ``d``: ``{alias}{suffix}`` for the split's aliases."""
    for alias in SPLIT_ALIASES[split]:
        for suf in suffixes:
            p = d / f"{alias}{suf}"
            if p.is_file():
                return p
    expected = " or ".join(f"{SPLIT_ALIASES[split][0]}{s}" for s in suffixes)
    raise DataError(f"no {split} file in {str(d)!r}: expected {expected}")


def read_lines(path: Path, allow_empty_lines: bool = True) -> list[str]:
    """Lines of a UTF-8 text file (no newline); an empty file is an error."""
    lines = [text for _, text in iter_lines(path)]
    if not any(line.strip() for line in lines):
        raise DataError(f"{path} is empty; put one example per line (or remove the split)")
    if not allow_empty_lines:
        for n, line in enumerate(lines, 1):
            if not line.strip():
                raise DataError(f"{path}:{n}: empty line; every line must hold an example")
    return lines


def aligned_pairs(
    src_path: Path, tgt_path: Path, name: str, split: str, langs: tuple[str, str]
) -> ParallelCorpus:
    """Two line-aligned files → a parallel split; different line counts or empty sides fail."""
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise DataError(
            f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}; the two sides of a "
            "parallel corpus must be line-aligned"
        )
    return make_parallel(name, split, langs, zip(src, tgt, strict=True), src_path)


def make_parallel(
    name: str, split: str, langs: tuple[str, str], pairs: Iterable[tuple[str, str]], where: Path
) -> ParallelCorpus:
    """A parallel split from raw pairs; a pair empty on one side only is an error."""
    out: list[tuple[str, str]] = []
    refs: list[str] = []
    for n, (s, t) in enumerate(pairs, 1):
        s, t = " ".join(s.split()), " ".join(t.split())
        if not s and not t:
            continue  # blank line on both sides: not an example
        if not s or not t:
            side = "source" if not s else "target"
            raise DataError(f"{where}:{n}: empty {side} side; remove the pair or fill it in")
        out.append((s, t))
        refs.append(f"{split}:{n}")
    return ParallelCorpus(name, split, langs[0], langs[1], out, refs)


def label_ids(
    train_labels: Sequence[str], labels: Sequence[str], where: Path
) -> tuple[list[int], list[str]]:
    """Map label strings to ids 0..K-1 named by the train split (numeric order if all ints)."""
    names = sorted(set(train_labels), key=lambda x: (0, int(x), "") if _is_int(x) else (1, 0, x))
    index = {n: i for i, n in enumerate(names)}
    for lab in labels:
        if lab not in index:
            raise DataError(
                f"{where}: label {lab!r} does not occur in the train split{nearest(lab, names)}; "
                f"train labels: {', '.join(names)}"
            )
    return [index[lab] for lab in labels], names


def _is_int(s: str) -> bool:
    return s.lstrip("-").isdigit()


# ---- generic kinds -------------------------------------------------------------------------------
def _tsv(spec: str, d: Path, split: str, langs: tuple[str, str] | None) -> ParallelCorpus:
    path = find_split_file(d, split, (".tsv",))
    pairs: list[tuple[str, str]] = []
    for n, line in enumerate(read_lines(path), 1):
        if not line.strip():
            pairs.append(("", ""))
            continue
        cols = line.split("\t")
        if len(cols) != 2:
            raise DataError(
                f"{path}:{n}: expected 2 tab-separated columns (source, target), got {len(cols)}"
            )
        pairs.append((cols[0], cols[1]))
    return make_parallel(spec, split, langs or ("src", "tgt"), pairs, path)


def _files(spec: str, d: Path, split: str, langs: tuple[str, str] | None) -> ParallelCorpus:
    s, t = langs or ("src", "tgt")
    src = find_split_file(d, split, (f".{s}",))
    tgt = find_split_file(d, split, (f".{t}",))
    return aligned_pairs(src, tgt, spec, split, (s, t))


def _jsonl(spec: str, d: Path, split: str, text_col: str, label_col: str) -> AnyCorpus:
    path = find_split_file(d, split, (".jsonl",))
    rows = read_jsonl(path)
    if not rows:
        raise DataError(f"{path} is empty; put one JSON object per line")
    keys = set(rows[0])
    if {"src", "tgt"} <= keys:
        pairs = [
            (str(_get(r, "src", path, n)), str(_get(r, "tgt", path, n)))
            for n, r in enumerate(rows, 1)
        ]
        return make_parallel(spec, split, ("src", "tgt"), pairs, path)
    texts = [str(_get(r, text_col, path, n)) for n, r in enumerate(rows, 1)]
    refs = [f"{split}:{n}" for n in range(1, len(rows) + 1)]
    if label_col in keys:
        labels = [str(_get(r, label_col, path, n)) for n, r in enumerate(rows, 1)]
        train = labels if split == "train" else _train_labels_jsonl(d, label_col)
        ids, names = label_ids(train, labels, path)
        return TextClassificationCorpus(
            spec, split, list(zip(texts, ids, strict=True)), names, refs
        )
    return MonolingualCorpus(spec, split, "", texts, refs)


def _get(row: dict[str, object], key: str, path: Path, n: int) -> object:
    if key not in row:
        raise DataError(
            f"{path}:{n}: no {key!r} field{nearest(key, row)} (fields: {', '.join(row)}); "
            "fix the row or set data.text_column / data.label_column"
        )
    return row[key]


def _train_labels_jsonl(d: Path, label_col: str) -> list[str]:
    path = find_split_file(d, "train", (".jsonl",))
    return [str(_get(r, label_col, path, n)) for n, r in enumerate(read_jsonl(path), 1)]


def read_labelled_csv(path: Path, text_col: str, label_col: str) -> tuple[list[str], list[str]]:
    """(texts, label strings) of a CSV/TSV file with a header row."""
    lines = read_lines(path)
    delim = "\t" if path.suffix == ".tsv" else ","
    reader = csv.reader(lines, delimiter=delim)
    header = next(reader)
    for col in (text_col, label_col):
        if col not in header:
            what = "label" if col == label_col else "text"
            raise DataError(
                f"{path}: no {what} column {col!r}{nearest(col, header)} (columns: {', '.join(header)}); "
                f"set data.{what}_column"
            )
    ti, li = header.index(text_col), header.index(label_col)
    texts: list[str] = []
    labels: list[str] = []
    for n, row in enumerate(reader, 2):
        if not row:
            continue
        if len(row) != len(header):
            raise DataError(
                f"{path}:{n}: {len(row)} columns but the header has {len(header)}; fix the quoting"
            )
        texts.append(" ".join(row[ti].split()))
        labels.append(row[li].strip())
    if not texts:
        raise DataError(f"{path} has a header but no rows")
    return texts, labels


def _csv(spec: str, d: Path, split: str, text_col: str, label_col: str) -> TextClassificationCorpus:
    path = find_split_file(d, split, (".csv", ".tsv"))
    texts, labels = read_labelled_csv(path, text_col, label_col)
    train_path = find_split_file(d, "train", (".csv", ".tsv"))
    train = labels if train_path == path else read_labelled_csv(train_path, text_col, label_col)[1]
    ids, names = label_ids(train, labels, path)
    refs = [f"{split}:{n}" for n in range(1, len(texts) + 1)]
    return TextClassificationCorpus(spec, split, list(zip(texts, ids, strict=True)), names, refs)


def split_documents(lines: Sequence[str]) -> list[str]:
    """Group lines into documents separated by blank lines (inner lines joined by newline)."""
    docs: list[str] = []
    cur: list[str] = []
    for line in [*lines, ""]:
        if line.strip():
            cur.append(line.strip())
        elif cur:
            docs.append("\n".join(cur))
            cur = []
    return docs


def _text(spec: str, d: Path, split: str) -> MonolingualCorpus:
    path = find_split_file(d, split, (".txt",))
    docs = split_documents(read_lines(path))
    return MonolingualCorpus(spec, split, "", docs, [f"{split}:doc{i}" for i in range(len(docs))])


def load_local(
    spec: str, split: str, text_column: str = "text", label_column: str = "label"
) -> AnyCorpus:
    """One split of a local ``KIND:PATH`` corpus (see the module docstring for the kinds)."""
    check_split(split)
    kind, path, langs = parse_local_spec(spec)
    if kind in STANDARD:
        raise DataError(f"{spec}: {kind} is a standard set; load it with dhian.data.standard_sets")
    d = require_dir(path, spec)
    if kind == "tsv":
        return _tsv(spec, d, split, langs)
    if kind == "files":
        return _files(spec, d, split, langs)
    if kind == "jsonl":
        return _jsonl(spec, d, split, text_column, label_column)
    if kind == "csv":
        return _csv(spec, d, split, text_column, label_column)
    return _text(spec, d, split)
