"""Local and standard-format loaders on fixtures written in the real formats, and bad input."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest

from dhian.data.corpus import MonolingualCorpus, ParallelCorpus, TextClassificationCorpus
from dhian.data.corpus_loader import corpus_info, load_corpus
from dhian.errors import DataError

DE = ["Ein Mann fährt Rad.", "Zwei Hunde spielen im Schnee.", "Eine Frau liest ein Buch."]
EN = ["A man rides a bike.", "Two dogs play in the snow.", "A woman reads a book."]


def _pairs(spec: str, split: str) -> list[tuple[str, str]]:
    c = load_corpus(spec, split)
    assert isinstance(c, ParallelCorpus)
    return c.pairs


def _write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{x}\n" for x in lines), encoding="utf-8")
    return path


# ---- parallel -------------------------------------------------------------------------------------
def test_multi30k_files_and_gzip(tmp_path: Path) -> None:
    _write(tmp_path / "train.de", DE)
    _write(tmp_path / "train.en", EN)
    _write(tmp_path / "val.de", DE[:1])
    _write(tmp_path / "val.en", EN[:1])
    for lang, lines in (("de", DE[1:]), ("en", EN[1:])):
        (tmp_path / f"test_2016_flickr.{lang}.gz").write_bytes(
            gzip.compress("\n".join(lines).encode())
        )
    train = load_corpus(f"multi30k:{tmp_path}", "train")
    assert isinstance(train, ParallelCorpus)
    assert train.pairs == list(zip(DE, EN, strict=True))
    assert (train.src_lang, train.tgt_lang) == ("de", "en")
    assert _pairs(f"multi30k:{tmp_path}", "dev") == [(DE[0], EN[0])]
    assert _pairs(f"multi30k:{tmp_path}", "test") == list(zip(DE[1:], EN[1:], strict=True))
    reverse = load_corpus(f"multi30k:{tmp_path}@en-de", "train")
    assert isinstance(reverse, ParallelCorpus) and reverse.pairs[0] == (EN[0], DE[0])


def test_iwslt_tags_and_xml(tmp_path: Path) -> None:
    meta = [
        "<url>http://www.ted.com/talks/x</url>",
        "<keywords>talks</keywords>",
        "<speaker>Someone</speaker>",
    ]
    _write(tmp_path / "train.tags.de-en.de", [*meta, *DE, "<talkid>1</talkid>"])
    _write(tmp_path / "train.tags.de-en.en", [*meta, *EN, "<talkid>1</talkid>"])

    def xml(lang: str, lines: list[str]) -> list[str]:
        segs = [f'<seg id="{i}"> {x.replace("&", "&amp;")} </seg>' for i, x in enumerate(lines, 1)]
        return ['<mteval>', f'<srcset setid="x" srclang="{lang}">', '<doc docid="1">', "<talkid>1</talkid>", *segs, "</doc>", "</srcset>", "</mteval>"]  # fmt: skip

    _write(tmp_path / "IWSLT14.TED.dev2010.de-en.de.xml", xml("de", DE[:2]))
    _write(tmp_path / "IWSLT14.TED.dev2010.de-en.en.xml", xml("en", EN[:2]))
    _write(tmp_path / "IWSLT14.TED.tst2010.de-en.de.xml", xml("de", ["Salz & Pfeffer."]))
    _write(tmp_path / "IWSLT14.TED.tst2010.de-en.en.xml", xml("en", ["Salt & pepper."]))
    _write(tmp_path / "IWSLT14.TED.tst2011.de-en.de.xml", xml("de", DE[2:]))
    _write(tmp_path / "IWSLT14.TED.tst2011.de-en.en.xml", xml("en", EN[2:]))
    spec = f"iwslt:{tmp_path}"
    assert _pairs(spec, "train") == list(zip(DE, EN, strict=True))
    assert len(load_corpus(spec, "dev")) == 2
    assert _pairs(spec, "test") == [("Salz & Pfeffer.", "Salt & pepper."), (DE[2], EN[2])]


def test_tsv_and_aligned_files(tmp_path: Path) -> None:
    _write(tmp_path / "t" / "train.tsv", [f"{d}\t{e}" for d, e in zip(DE, EN, strict=True)])
    c = load_corpus(f"tsv:{tmp_path / 't'}", "train")
    assert isinstance(c, ParallelCorpus) and c.pairs[2] == (DE[2], EN[2]) and c.refs[0] == "train:1"
    _write(tmp_path / "f" / "valid.src", DE)
    _write(tmp_path / "f" / "valid.tgt", EN)
    assert _pairs(f"files:{tmp_path / 'f'}", "dev") == list(zip(DE, EN, strict=True))


# ---- classification ---------------------------------------------------------------------------
def test_agnews_canonical_csv(tmp_path: Path) -> None:
    rows = [
        [str(1 + i % 4), f"Title {i}", f"Description number {i} with \\ backslash &amp; more"]
        for i in range(200)
    ]
    for name, part in (("train.csv", rows), ("test.csv", rows[:40])):
        with (tmp_path / name).open("w", encoding="utf-8", newline="") as f:
            csv.writer(f, quoting=csv.QUOTE_ALL).writerows(part)
    train = load_corpus(f"agnews:{tmp_path}", "train")
    dev = load_corpus(f"agnews:{tmp_path}", "dev")
    test = load_corpus(f"agnews:{tmp_path}", "test")
    assert isinstance(test, TextClassificationCorpus)
    assert isinstance(train, TextClassificationCorpus) and isinstance(dev, TextClassificationCorpus)
    assert train.label_names == ["World", "Sports", "Business", "Sci/Tech"]
    assert len(train) + len(dev) == 200 and len(dev) == 10 and len(test) == 40
    assert not set(train.refs) & set(dev.refs)  # dev is carved out of train
    assert test.examples[0] == ("Title 0 Description number 0 with backslash & more", 0)
    assert test.examples[3][1] == 3
    again = load_corpus(f"agnews:{tmp_path}", "dev")
    assert again.refs == dev.refs  # fixed split


def test_agnews_parquet_needs_pyarrow_or_reads_it(tmp_path: Path) -> None:
    try:
        import pyarrow as pa  # type: ignore[import-not-found,import-untyped,unused-ignore]
        import pyarrow.parquet as pq  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        (tmp_path / "train-00000-of-00001.parquet").write_bytes(b"PAR1")
        with pytest.raises(DataError, match="needs pyarrow; pip install pyarrow"):
            load_corpus(f"agnews:{tmp_path}", "train")
        return
    table = pa.table({"text": ["a b", "c d"] * 20, "label": [0, 3] * 20})
    pq.write_table(table, tmp_path / "test-00000-of-00001.parquet")
    c = load_corpus(f"agnews:{tmp_path}", "test")
    assert isinstance(c, TextClassificationCorpus)
    assert c.examples[:2] == [("a b", 0), ("c d", 3)]


def test_csv_with_label_column(tmp_path: Path) -> None:
    rows = [("great film", "pos"), ("awful, truly awful", "neg"), ("fine\tenough", "pos")]
    for split in ("train", "dev"):
        with (tmp_path / f"{split}.csv").open("w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "review", "sentiment"])
            w.writerows((i, t, y) for i, (t, y) in enumerate(rows))
    c = load_corpus(f"csv:{tmp_path}", "dev", text_column="review", label_column="sentiment")
    assert isinstance(c, TextClassificationCorpus)
    assert c.label_names == ["neg", "pos"]
    assert c.examples == [("great film", 1), ("awful, truly awful", 0), ("fine enough", 1)]


def test_jsonl_three_shapes(tmp_path: Path) -> None:
    def dump(d: Path, rows: list[dict[str, object]]) -> None:
        _write(d / "train.jsonl", [json.dumps(r, ensure_ascii=False) for r in rows])

    dump(tmp_path / "p", [{"src": d, "tgt": e} for d, e in zip(DE, EN, strict=True)])
    dump(tmp_path / "c", [{"text": e, "label": i % 2} for i, e in enumerate(EN)])
    dump(tmp_path / "m", [{"text": e} for e in EN])
    assert isinstance(load_corpus(f"jsonl:{tmp_path / 'p'}", "train"), ParallelCorpus)
    c = load_corpus(f"jsonl:{tmp_path / 'c'}", "train")
    assert (
        isinstance(c, TextClassificationCorpus)
        and c.labels == [0, 1, 0]
        and c.label_names == ["0", "1"]
    )
    m = load_corpus(f"jsonl:{tmp_path / 'm'}", "train")
    assert isinstance(m, MonolingualCorpus) and m.docs == EN


# ---- monolingual ------------------------------------------------------------------------------
def test_wikitext_articles(tmp_path: Path) -> None:
    raw = [" ", " = Valkyria Chronicles = ", " ", " Senjō no Valkyria is a game . ", " ", " = = Gameplay = = ",
           " It is tactical . ", " ", " = Tropical Storm = ", " ", " A storm formed . ", " "]  # fmt: skip
    for name in ("train", "valid", "test"):
        _write(tmp_path / f"wiki.{name}.raw", raw)
    c = load_corpus(f"wikitext:{tmp_path}", "dev")
    assert isinstance(c, MonolingualCorpus) and len(c) == 2
    assert c.docs[0].startswith("= Valkyria Chronicles =") and "It is tactical ." in c.docs[0]
    assert c.docs[1] == "= Tropical Storm =\nA storm formed ."


def test_plain_text_documents_and_info(tmp_path: Path) -> None:
    for split in ("train", "dev", "test"):
        _write(tmp_path / f"{split}.txt", ["first doc line one", "line two", "", "", "second doc"])
    c = load_corpus(f"text:{tmp_path}", "train")
    assert isinstance(c, MonolingualCorpus)
    assert c.docs == ["first doc line one\nline two", "second doc"]
    info = corpus_info(f"text:{tmp_path}")
    assert info.sizes == {"train": 2, "dev": 2, "test": 2}
    assert info.tokens["train"] == {"text": 8}


# ---- bad input -------------------------------------------------------------------------------------
def test_sides_with_different_line_counts(tmp_path: Path) -> None:
    _write(tmp_path / "train.de", DE)
    _write(tmp_path / "train.en", EN[:2])
    with pytest.raises(
        DataError, match=r"train\.de has 3 lines but .*train\.en has 2; .*line-aligned"
    ):
        load_corpus(f"multi30k:{tmp_path}", "train")


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "train.tsv").write_text("", encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.tsv is empty"):
        load_corpus(f"tsv:{tmp_path}", "train")


def test_invalid_utf8_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "train.src").write_bytes("ok line\nstill ok\ncaf\xe9 latin-1\n".encode("latin-1"))
    _write(tmp_path / "train.tgt", EN)
    with pytest.raises(DataError, match=r"train\.src:3: invalid UTF-8 \(byte 0xe9 at column 4\)"):
        load_corpus(f"files:{tmp_path}", "train")


def test_missing_label_column(tmp_path: Path) -> None:
    _write(tmp_path / "train.csv", ["text,lable", "good,1"])
    with pytest.raises(DataError, match=r"no label column 'label' \(did you mean 'lable'\?\)"):
        load_corpus(f"csv:{tmp_path}", "train")


def test_bad_rows_are_named(tmp_path: Path) -> None:
    _write(tmp_path / "train.tsv", [f"{DE[0]}\t{EN[0]}", "no tab here"])
    with pytest.raises(DataError, match=r"train\.tsv:2: expected 2 tab-separated columns"):
        load_corpus(f"tsv:{tmp_path}", "train")
    _write(tmp_path / "j" / "train.jsonl", ['{"text": "a", "label": 1}', "{oops"])
    with pytest.raises(DataError, match=r"train\.jsonl:2: not valid JSON"):
        load_corpus(f"jsonl:{tmp_path / 'j'}", "train")
    _write(tmp_path / "e" / "train.src", ["a", "", "c"])
    _write(tmp_path / "e" / "train.tgt", ["x", "y", "z"])
    with pytest.raises(DataError, match=r"train\.src:2: empty source side"):
        load_corpus(f"files:{tmp_path / 'e'}", "train")
    _write(tmp_path / "l" / "train.csv", ["text,label", "a,pos"])
    _write(tmp_path / "l" / "dev.csv", ["text,label", "b,neutral"])
    with pytest.raises(DataError, match=r"label 'neutral' does not occur in the train split"):
        load_corpus(f"csv:{tmp_path / 'l'}", "dev")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("rotten-tomatos", r"unknown corpus 'rotten-tomatos' \(did you mean 'rotten-tomatoes'\?\)"),
        ("bible:de-enn", r"unknown Bible language 'enn' in 'bible:de-enn' \(did you mean 'en'\?\)"),
        ("bible:xx-en", r"unknown Bible language 'xx'"),
        ("tvs:/data", r"unknown corpus kind 'tvs' \(did you mean 'tsv'\?\)"),
        ("tsv:/does/not/exist", r"corpus directory '/does/not/exist' .* does not exist"),
    ],
)
def test_unknown_corpus_or_language(spec: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_corpus(spec, "train")


def test_unknown_split_and_missing_split_file(tmp_path: Path) -> None:
    _write(tmp_path / "train.tsv", [f"{DE[0]}\t{EN[0]}"])
    with pytest.raises(DataError, match=r"unknown split 'valid' \(did you mean 'dev'\?\)"):
        load_corpus(f"tsv:{tmp_path}", "valid")
    with pytest.raises(DataError, match=r"no test file in .*expected test\.tsv"):
        load_corpus(f"tsv:{tmp_path}", "test")


def test_hf_datasets_is_optional() -> None:
    try:
        import datasets  # type: ignore[import-not-found,import-untyped,unused-ignore]  # noqa: F401
    except ImportError:
        with pytest.raises(
            DataError, match="needs the optional package 'datasets'; pip install datasets"
        ):
            load_corpus("hf:bentrevett/multi30k@de-en", "train")
    else:
        pytest.skip("datasets is installed; the optional-import error cannot be shown")
