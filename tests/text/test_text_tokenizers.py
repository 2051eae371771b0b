"""Tokenizers: round trips in three scripts, fixed special ids, save/load, batches, BERT inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from dhian.errors import DataError
from dhian.text import (
    SPECIAL_TOKENS,
    Tokenizer,
    encode_for_bert,
    encode_pair,
    load_tokenizer,
    normalize,
    train_tokenizer,
)

LATIN = [
    "The quick brown fox doesn't jump over the lazy dog.",
    "Größe, Straße und Café — déjà vu!",
    'She said: "well, it\'s (mostly) fine?"',
    "Numbers 1,234.56 and e-mail a@b.c",
]
DEVANAGARI = [
    "आदि में परमेश्\u200dवर ने आकाश और पृथ्वी की सृष्टि की।",
    "नमस्ते दुनिया, आप कैसे हैं?",
    "क्षत्रिय ज्ञान श्री",
]
GURMUKHI = [
    "ਸਤਿ ਸ੍ਰੀ ਅਕਾਲ ਜੀ, ਤੁਸੀਂ ਕਿਵੇਂ ਹੋ?",
    "ਧਿਆਨ ਨਾਲ ਪੜ੍ਹੋ।",
    "ਪੰਜਾਬੀ ਭਾਸ਼ਾ ਗੁਰਮੁਖੀ ਲਿਪੀ ਵਿੱਚ",
]
ALL = LATIN + DEVANAGARI + GURMUKHI
TRAIN = ALL * 3 + ["  extra   spaces\tand\ttabs  ", "more text for merges " * 5]


@pytest.fixture(scope="module", params=["bpe", "bytebpe", "char"])
def trained(request: pytest.FixtureRequest) -> Tokenizer:
    return train_tokenizer(request.param, TRAIN, vocab_size=400, min_frequency=1)


@pytest.mark.parametrize("text", ALL)
def test_round_trip_three_scripts(trained: Tokenizer, text: str) -> None:
    ids = trained.encode(text)
    assert trained.unk_id not in ids
    assert trained.decode(ids) == normalize(text)
    assert normalize(text) == " ".join(text.split())  # nothing else is changed


def test_whitespace_is_normalised_not_lost(trained: Tokenizer) -> None:
    assert (
        trained.decode(trained.encode("  extra   spaces\tand\ttabs  ")) == "extra spaces and tabs"
    )


def test_bytebpe_never_unknown() -> None:
    tok = train_tokenizer("bytebpe", LATIN, vocab_size=300, min_frequency=1)
    text = "漢字 🍕 ਪੰਜਾਬੀ never seen"
    ids = tok.encode(text)
    assert tok.unk_id not in ids
    assert tok.decode(ids) == text


def test_special_ids_are_fixed(trained: Tokenizer) -> None:
    assert [trained.pad_id, trained.unk_id, trained.bos_id, trained.eos_id] == [0, 1, 2, 3]
    assert [trained.mask_id, trained.cls_id, trained.sep_id] == [4, 5, 6]
    assert [trained.id_to_token(i) for i in range(7)] == list(SPECIAL_TOKENS)
    # specials in text are not produced from ordinary words
    assert all(i >= 7 for i in trained.encode("the fox"))


def test_bos_eos_only_when_asked(trained: Tokenizer) -> None:
    plain = trained.encode(LATIN[0])
    wrapped = trained.encode(LATIN[0], add_bos=True, add_eos=True)
    assert wrapped == [trained.bos_id, *plain, trained.eos_id]
    assert trained.decode(wrapped) == trained.decode(plain)  # specials dropped


def test_batch_equals_single(trained: Tokenizer) -> None:
    batch = trained.encode_batch(ALL, add_eos=True)
    assert batch == [trained.encode(t, add_eos=True) for t in ALL]
    assert trained.decode_batch(batch) == [trained.decode(b) for b in batch]


def test_tokens_align_with_ids(trained: Tokenizer) -> None:
    toks = trained.tokens(LATIN[1])
    assert len(toks) == len(trained.encode(LATIN[1]))
    assert [trained.token_to_id(t) for t in toks] == trained.encode(LATIN[1])


def test_save_load(trained: Tokenizer, tmp_path: Path) -> None:
    trained.save(tmp_path / "tok")
    again = load_tokenizer(tmp_path / "tok")
    assert again.kind == trained.kind
    assert again.vocab_size == trained.vocab_size
    assert again.encode_batch(ALL) == trained.encode_batch(ALL)
    assert load_tokenizer(tmp_path / "tok").encode(LATIN[0]) == trained.encode(LATIN[0])


def test_vocab_size_respected() -> None:
    tok = train_tokenizer("bpe", TRAIN * 5, vocab_size=120, min_frequency=1)
    assert tok.vocab_size <= 120
    char = train_tokenizer("char", TRAIN, vocab_size=20)
    assert char.vocab_size == 20  # the rarest characters become unk
    assert char.unk_id in char.encode("".join(GURMUKHI))


def test_lowercase_option() -> None:
    tok = train_tokenizer("bpe", TRAIN, vocab_size=300, min_frequency=1, lowercase=True)
    assert tok.encode("The FOX") == tok.encode("the fox")
    assert tok.decode(tok.encode("The FOX")) == "the fox"


def test_wordpiece_trained_has_fixed_specials() -> None:
    tok = train_tokenizer("wordpiece", TRAIN, vocab_size=300, min_frequency=1)
    assert (tok.pad_id, tok.mask_id, tok.cls_id, tok.sep_id) == (0, 4, 5, 6)
    assert tok.decode(tok.encode("the quick brown fox")) == "the quick brown fox"


TRAIN_IN_A_FRESH_PROCESS = """
import sys
from dhian.text import train_tokenizer
texts = [line for line in sys.stdin.read().splitlines() if line]
print(train_tokenizer(sys.argv[1], texts, vocab_size=250, min_frequency=1).hf.to_str())
"""


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_training_is_the_same_in_every_process(kind: str) -> None:
    """The same text trains the same tokenizer in every process: ``tokenizers``' WordPiece
    trainer numbers its ``##`` pieces in hash-map order, which changed the vocabulary (and the
    model trained on it) from run to run; four processes agreed by chance 1 time in ~250."""
    import subprocess
    import sys

    text = "\n".join(TRAIN * 2)
    runs = {
        subprocess.run(
            [sys.executable, "-c", TRAIN_IN_A_FRESH_PROCESS, kind],
            input=text, capture_output=True, text=True, check=True,
        ).stdout
        for _ in range(4)
    }  # fmt: skip
    assert len(runs) == 1


def test_wordpiece_continuation_pieces_are_not_special() -> None:
    tok = train_tokenizer("wordpiece", TRAIN, vocab_size=300, min_frequency=1)
    assert tok.hf.token_to_id("##e") is not None
    assert [t.content for t in tok.hf.get_added_tokens_decoder().values()] == list(SPECIAL_TOKENS)
    assert tok.hf.encode("x ##e", add_special_tokens=False).tokens[-1] == "e"  # not the piece


def test_bad_requests() -> None:
    with pytest.raises(DataError, match=r"unknown tokenizer 'bpee'.*did you mean 'bpe'"):
        train_tokenizer("bpee", TRAIN, 100)
    with pytest.raises(DataError, match="vocab_size 3 is too small"):
        train_tokenizer("bpe", TRAIN, 3)
    with pytest.raises(DataError, match="training split is empty"):
        train_tokenizer("bpe", [], 100)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_tokenizer(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no tokenizer"):
        load_tokenizer(tmp_path / "empty")


def test_encode_for_bert_single_and_pair() -> None:
    tok = train_tokenizer("bpe", TRAIN, vocab_size=300, min_frequency=1)
    ids, types, lengths = encode_for_bert(tok, [LATIN[0], "fox"], max_len=6)
    assert lengths == [6, len(tok.encode("fox")) + 2]
    assert ids[0][0] == tok.cls_id and ids[0][-1] == tok.sep_id
    assert ids[0][1:-1] == tok.encode(LATIN[0])[:4]
    assert types[0] == [0] * 6
    pair_ids, pair_types = encode_pair(tok, LATIN[0], LATIN[1], max_len=12)
    assert len(pair_ids) == 12
    assert pair_ids.count(tok.sep_id) == 2
    first_sep = pair_ids.index(tok.sep_id)
    assert pair_types == [0] * (first_sep + 1) + [1] * (12 - first_sep - 1)
    with pytest.raises(DataError, match="texts but 1 pair"):
        encode_for_bert(tok, ["a", "b"], 8, pairs=["c"])
