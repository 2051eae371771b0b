"""Renumbering a tokenizer (:func:`dhian.text.reorder_vocab`): same tokens, new ids, saved and
loaded back intact; bad orders refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from dhian.errors import DataError
from dhian.text import KINDS, load_tokenizer, pad_last_order, reorder_vocab, train_tokenizer

TEXTS = ["der Hund bellt laut", "die Katze schläft", "the dog barks", "the cat sleeps"] * 5


@pytest.mark.parametrize("kind", KINDS)
def test_pad_last_keeps_tokens_and_moves_ids(kind: str, tmp_path: Path) -> None:
    tok = train_tokenizer(kind, TEXTS, vocab_size=70, min_frequency=1)
    v = tok.vocab_size
    order = pad_last_order(v, tok.pad_id)
    moved = reorder_vocab(tok, order)
    assert (moved.pad_id, moved.unk_id, moved.bos_id, moved.eos_id) == (v - 1, 0, 1, 2)
    for text in ("die Katze bellt", "the cats"):
        old = tok.encode(text, add_eos=True)
        new = moved.encode(text, add_eos=True)
        assert new == [order.index(i) for i in old]
        assert moved.tokens(text) == tok.tokens(text)
        assert moved.decode(new) == tok.decode(old)
    again = load_tokenizer(moved.save(tmp_path))
    assert again.encode("der Hund") == moved.encode("der Hund") and again.pad_id == v - 1


def test_bad_orders_are_refused() -> None:
    tok = train_tokenizer("bpe", TEXTS, vocab_size=50, min_frequency=1)
    with pytest.raises(DataError, match="permutation"):
        reorder_vocab(tok, [0, 0, *range(2, tok.vocab_size)])
    with pytest.raises(DataError, match="outside"):
        pad_last_order(5, 7)
