"""dhian.inference.encode / classify / fill_mask on tiny random BERT and Keras-style models."""

from __future__ import annotations

import warnings

import pytest
import torch

from dhian.errors import DataError
from dhian.inference.classify import classify
from dhian.inference.encode import encode_texts
from dhian.inference.fill_mask import fill_mask
from dhian.models.keras_classifier.model import KerasTextClassifier
from dhian.text import Tokenizer
from helpers.bert import tiny, word_tokenizer
from helpers.threads import one_thread  # noqa: F401 - autouse fixture


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    return word_tokenizer(tmp_path_factory.mktemp("vocab"))


def test_encode_texts_adds_specials_pads_and_truncates(tok: Tokenizer) -> None:
    ids, types, lengths = encode_texts(tok, ["the cat sat", "paris"], max_len=10)
    cls, sep, pad = tok.cls_id, tok.sep_id, tok.pad_id
    assert ids[0].tolist() == [cls, *tok.encode("the cat sat"), sep]
    assert ids[1].tolist() == [cls, *tok.encode("paris"), sep, pad, pad]
    assert lengths.tolist() == [5, 3] and types.sum() == 0
    with pytest.warns(UserWarning, match="truncated"):
        long_ids, _, long_len = encode_texts(tok, ["the cat " * 20], max_len=10)
    assert long_len.tolist() == [10] and long_ids[0, -1] == sep
    with pytest.raises(DataError, match="at most 10"):
        encode_texts(tok, ["the cat " * 20], max_len=10, too_long="error")


def test_fill_mask_api_on_tiny_random_model(tok: Tokenizer) -> None:
    model = tiny("mlm", vocab_size=tok.vocab_size)
    text = "the [MASK] of france is [MASK] ."
    res = fill_mask(model, tok, text, top_k=4)
    assert len(res) == 2
    ids = torch.tensor([[tok.cls_id, *tok.encode(text), tok.sep_id]])
    probs = torch.softmax(model(ids).logits[0], dim=-1)  # (T, V) independent of fill_mask
    where = (ids[0] == tok.mask_id).nonzero().flatten().tolist()
    for top, pos in zip(res, where, strict=True):
        assert len(top) == 4
        ps = [p for _, p in top]
        assert ps == sorted(ps, reverse=True) and 0 < sum(ps) <= 1 + 1e-6
        best = probs[pos].topk(4)
        assert [t for t, _ in top] == [tok.id_to_token(int(i)) for i in best.indices]
        torch.testing.assert_close(torch.tensor(ps), best.values, atol=1e-6, rtol=1e-5)
    full = fill_mask(model, tok, text, top_k=10_000)[0]
    assert len(full) == tok.vocab_size and abs(sum(p for _, p in full) - 1) < 1e-4


def test_fill_mask_errors(tok: Tokenizer) -> None:
    model = tiny("mlm", vocab_size=tok.vocab_size)
    with pytest.raises(DataError, match="MASK"):
        fill_mask(model, tok, "no mask here", top_k=3)
    with pytest.raises(DataError, match="masked-LM"):
        fill_mask(tiny("classification", vocab_size=tok.vocab_size), tok, "[MASK]")
    with pytest.warns(UserWarning, match="truncated"), pytest.raises(DataError, match="MASK"):
        fill_mask(model, tok, "the cat " * 30 + "[MASK]")  # mask beyond the 24 positions
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(fill_mask(model, tok, "[MASK] cat", top_k=2)[0]) == 2


def test_classify_batches_match_single_texts(tok: Tokenizer) -> None:
    model = tiny("classification", vocab_size=tok.vocab_size, num_labels=3, labels=("x", "y", "z"))
    texts = ["the cat sat on the mat", "paris", "a big city and a small river", "dog", ""]
    batched = classify(model, tok, texts, batch_size=2)
    assert len(batched) == len(texts)
    for text, res in zip(texts, batched, strict=True):
        single = classify(model, tok, [text], batch_size=1)[0]
        assert res.label == single.label
        for k in ("x", "y", "z"):
            assert abs(res.probs[k] - single.probs[k]) < 1e-5
        assert abs(sum(res.probs.values()) - 1) < 1e-5
        assert res.label == max(res.probs, key=res.probs.__getitem__)
        ids = torch.tensor([[tok.cls_id, *tok.encode(text), tok.sep_id]])
        expect = torch.softmax(model(ids).logits[0], -1)
        torch.testing.assert_close(
            torch.tensor(list(res.probs.values())), expect, atol=1e-5, rtol=1e-4
        )


def test_classify_keras_model_uses_plain_ids(tok: Tokenizer) -> None:
    torch.manual_seed(1)
    model = KerasTextClassifier(tok.vocab_size, max_len=16, labels=("neg", "pos")).eval()
    res = classify(model, tok, ["the cat sat", "paris is big"], batch_size=8)
    ids = torch.tensor([tok.encode("the cat sat")])
    expect = torch.softmax(model(ids).logits[0], -1)
    torch.testing.assert_close(
        torch.tensor(list(res[0].probs.values())), expect, atol=1e-5, rtol=1e-4
    )
    assert set(res[1].probs) == {"neg", "pos"}
