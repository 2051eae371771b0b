"""Standard data sets in their distributed formats (read from a local directory, never downloaded).

- ``multi30k:DIR[@de-en]``: ``train.de``/``train.en``, ``val.*``, ``test_2016_flickr.*`` or
  ``test2016.*`` (``.gz`` accepted).
- ``iwslt:DIR[@de-en]``: ``train.tags.de-en.de`` (XML-tagged lines; metadata lines ``<url>``…
  dropped), dev/test ``IWSLT*.TED.dev2010.de-en.de.xml`` / ``*.tst2010…xml`` (``<seg>`` lines;
  dev = files named ``dev*``, test = every ``tst*`` file in sorted order).
- ``agnews:DIR``: canonical ``train.csv``/``test.csv`` (no header: class 1–4, title,
  description; text = title + " " + description) or HF parquet (``train-*.parquet``,
  ``test-*.parquet``: text, label 0–3; needs pyarrow). dev = a fixed seeded 5% of train
  (taken out of train).
- ``wikitext:DIR``: ``wiki.train.raw``/``wiki.valid.raw``/``wiki.test.raw`` (or ``.tokens``);
  one document per `` = Title = `` article.
- ``hf:NAME[/CONFIG][@SRC-TGT]``: any HF ``datasets`` set (optional import).
Imports: stdlib, :mod:`dhian.data.local_files`, :mod:`dhian.data.corpus`, :mod:`dhian.errors`.
"""

from __future__ import annotations

import gzip
import html
import random
import re
from pathlib import Path
from typing import Any

from dhian.data.corpus import (
    AnyCorpus,
    MonolingualCorpus,
    ParallelCorpus,
    TextClassificationCorpus,
    iter_lines,
)
from dhian.data.local_files import (
    aligned_pairs,
    make_parallel,
    read_lines,
    require_dir,
)
from dhian.errors import DataError

AGNEWS_LABELS = ["World", "Sports", "Business", "Sci/Tech"]
AGNEWS_DEV_FRACTION = 0.05
SEED = 20240601
_SEG = re.compile(r"<seg[^>]*>(.*?)</seg>", re.IGNORECASE)
_HEADING = re.compile(r"^ = [^=].* = $")


def _first(d: Path, names: list[str], what: str) -> Path:
    for n in names:
        for p in (d / n, d / f"{n}.gz"):
            if p.is_file():
                return p
    raise DataError(f"no {what} in {str(d)!r}: expected one of {', '.join(names)}")


def _lines_maybe_gz(path: Path) -> list[str]:
    if path.suffix != ".gz":
        return read_lines(path)
    tmp = path.with_suffix("")
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable gzip file ({exc}); re-download it") from exc
    lines: list[str] = []
    for n, b in enumerate(raw.split(b"\n"), 1):
        try:
            lines.append(b.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{path}:{n}: invalid UTF-8 ({exc.reason}) in {tmp.name}; re-save as UTF-8"
            ) from exc
    if lines and lines[-1] == "":
        lines.pop()
    if not any(x.strip() for x in lines):
        raise DataError(f"{path} is empty; re-download it")
    return lines


def multi30k(spec: str, d: Path, split: str, langs: tuple[str, str]) -> ParallelCorpus:
    """Multi30k text files (``train``/``val``/``test_2016_flickr`` per language)."""
    names = {
        "train": ["train"],
        "dev": ["val", "valid", "dev"],
        "test": ["test_2016_flickr", "test2016", "test"],
    }[split]
    s, t = langs
    src = _first(d, [f"{n}.{s}" for n in names], f"Multi30k {split} source")
    tgt = _first(d, [f"{n}.{t}" for n in names], f"Multi30k {split} target")
    if src.suffix != ".gz" and tgt.suffix != ".gz":
        return aligned_pairs(src, tgt, spec, split, langs)
    a, b = _lines_maybe_gz(src), _lines_maybe_gz(tgt)
    if len(a) != len(b):
        raise DataError(
            f"{src} has {len(a)} lines but {tgt} has {len(b)}; sides must be line-aligned"
        )
    return make_parallel(spec, split, langs, zip(a, b, strict=True), src)


def _iwslt_train(path: Path) -> list[str]:
    lines = read_lines(path)
    return [ln for ln in lines if not ln.lstrip().startswith("<")]


def _iwslt_xml(path: Path) -> list[str]:
    segs = [html.unescape(m.group(1)) for _, line in iter_lines(path) for m in _SEG.finditer(line)]
    if not segs:
        raise DataError(f"{path} has no <seg> lines; is it an IWSLT .xml file?")
    return segs


def iwslt(spec: str, d: Path, split: str, langs: tuple[str, str]) -> ParallelCorpus:
    """IWSLT TED files: ``train.tags.S-T.S`` and ``*.dev*/tst*.S-T.S.xml``."""
    s, t = langs
    pair = f"{s}-{t}"
    if split == "train":
        src = _first(d, [f"train.tags.{pair}.{s}"], "IWSLT train source")
        tgt = _first(d, [f"train.tags.{pair}.{t}"], "IWSLT train target")
        a, b = _iwslt_train(src), _iwslt_train(tgt)
    else:
        key = "dev" if split == "dev" else "tst"
        srcs = sorted(p for p in d.glob(f"*.{key}*.{pair}.{s}.xml"))
        if not srcs:
            raise DataError(
                f"no IWSLT {split} files in {str(d)!r}: expected *.{key}20XX.{pair}.{s}.xml"
            )
        a, b = [], []
        for p in srcs:
            q = p.with_name(p.name[: -len(f".{s}.xml")] + f".{t}.xml")
            if not q.is_file():
                raise DataError(f"{p} has no target file {q.name}; put both sides in {d}")
            sa, sb = _iwslt_xml(p), _iwslt_xml(q)
            if len(sa) != len(sb):
                raise DataError(
                    f"{p} has {len(sa)} segments but {q} has {len(sb)}; sides must align"
                )
            a += sa
            b += sb
        src = srcs[0]
    if len(a) != len(b):
        raise DataError(
            f"{src} has {len(a)} text lines but its target has {len(b)}; sides must align"
        )
    return make_parallel(spec, split, langs, zip(a, b, strict=True), src)


def _agnews_csv(path: Path) -> list[tuple[str, int]]:
    import csv

    out: list[tuple[str, int]] = []
    for n, row in enumerate(csv.reader(read_lines(path)), 1):
        if not row:
            continue
        if len(row) != 3 or not row[0].strip().isdigit() or not 1 <= int(row[0]) <= 4:
            raise DataError(
                f"{path}:{n}: expected 'class index (1-4)', 'title', 'description' (AG News CSV, no header)"
            )
        text = " ".join(f"{row[1]} {row[2]}".replace("\\", " ").split())
        out.append((html.unescape(text), int(row[0]) - 1))
    return out


def _agnews_parquet(paths: list[Path]) -> list[tuple[str, int]]:
    try:
        import pyarrow.parquet as pq  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError as exc:
        raise DataError(
            f"reading {paths[0].name} needs pyarrow; pip install pyarrow (or use the CSV files)"
        ) from exc
    out: list[tuple[str, int]] = []
    for p in paths:
        table = pq.read_table(p).to_pydict()
        for col in ("text", "label"):
            if col not in table:
                raise DataError(
                    f"{p}: no {col!r} column (columns: {', '.join(table)}); not AG News parquet"
                )
        out += [
            (" ".join(str(x).split()), int(y))
            for x, y in zip(table["text"], table["label"], strict=True)
        ]
    return out


def agnews(spec: str, d: Path, split: str) -> TextClassificationCorpus:
    """AG News (CSV or HF parquet); dev is a fixed seeded 5% carved out of train."""
    source = "test" if split == "test" else "train"
    csv_path = d / f"{source}.csv"
    if csv_path.is_file():
        rows = _agnews_csv(csv_path)
    else:
        parquet = sorted(d.glob(f"{source}-*.parquet")) or sorted(d.glob(f"{source}.parquet"))
        if not parquet:
            raise DataError(
                f"no AG News {source} data in {str(d)!r}: expected {source}.csv or {source}-*.parquet"
            )
        rows = _agnews_parquet(parquet)
    refs = [f"{source}:{n}" for n in range(1, len(rows) + 1)]
    if split != "test":
        order = list(range(len(rows)))
        random.Random(SEED).shuffle(order)
        dev = set(order[: round(len(rows) * AGNEWS_DEV_FRACTION)])
        keep = [i for i in range(len(rows)) if (i in dev) == (split == "dev")]
        rows, refs = [rows[i] for i in keep], [refs[i] for i in keep]
    return TextClassificationCorpus(spec, split, rows, list(AGNEWS_LABELS), refs)


def wikitext(spec: str, d: Path, split: str) -> MonolingualCorpus:
    """WikiText raw files, one document per top-level `` = Title = `` article."""
    name = {"train": "train", "dev": "valid", "test": "test"}[split]
    path = _first(d, [f"wiki.{name}.raw", f"wiki.{name}.tokens"], f"WikiText {split} file")
    docs: list[str] = []
    cur: list[str] = []
    for line in read_lines(path):
        if _HEADING.match(line) and cur:
            docs.append("\n".join(cur))
            cur = []
        if line.strip():
            cur.append(line.strip())
    if cur:
        docs.append("\n".join(cur))
    return MonolingualCorpus(
        spec, split, "en", docs, [f"{split}:article{i}" for i in range(len(docs))]
    )


def hf_dataset(spec: str, name: str, split: str, langs: tuple[str, str] | None) -> AnyCorpus:
    """A Hugging Face ``datasets`` set (optional dependency): translation, text+label or text."""
    try:
        import datasets  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError as exc:
        raise DataError(
            f"corpus {spec!r} needs the optional package 'datasets'; pip install datasets "
            "(or download the files and use multi30k:/iwslt:/agnews:/wikitext:DIR)"
        ) from exc
    path, _, config = name.partition("/") if name.count("/") == 2 else (name, "", "")
    hf_split = {"train": "train", "dev": "validation", "test": "test"}[split]
    ds: Any = datasets.load_dataset(path, config or None, split=hf_split)
    cols = set(ds.column_names)
    refs = [f"{split}:{i}" for i in range(len(ds))]
    if "translation" in cols or (langs and set(langs) <= cols):
        if not langs:
            raise DataError(
                f"corpus {spec!r} is a translation set; add the pair, e.g. {spec}@de-en"
            )
        s, t = langs
        rows = (
            ds["translation"]
            if "translation" in cols
            else [{s: a, t: b} for a, b in zip(ds[s], ds[t], strict=True)]
        )
        return make_parallel(spec, split, langs, [(r[s], r[t]) for r in rows], Path(name))
    if "text" in cols and "label" in cols:
        names = list(getattr(ds.features["label"], "names", []) or sorted(set(ds["label"])))
        return TextClassificationCorpus(
            spec,
            split,
            list(zip(ds["text"], ds["label"], strict=True)),
            [str(n) for n in names],
            refs,
        )
    if "text" in cols:
        return MonolingualCorpus(spec, split, "", [t for t in ds["text"] if t.strip()], refs)
    raise DataError(
        f"corpus {spec!r}: columns {sorted(cols)} are not translation, text+label or text"
    )


def load_standard(
    kind: str, path: str, split: str, langs: tuple[str, str] | None, spec: str
) -> AnyCorpus:
    """Dispatch a standard-set spec (``multi30k``, ``iwslt``, ``agnews``, ``wikitext``, ``hf``)."""
    if kind == "hf":
        return hf_dataset(spec, path, split, langs)
    d = require_dir(path, spec)
    if kind == "multi30k":
        return multi30k(spec, d, split, langs or ("de", "en"))
    if kind == "iwslt":
        return iwslt(spec, d, split, langs or ("de", "en"))
    if kind == "agnews":
        return agnews(spec, d, split)
    return wikitext(spec, d, split)
