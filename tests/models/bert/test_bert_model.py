"""dhian.models.bert.model / bert_heads / keras_classifier: shapes, masks, heads, length policy,
fill-mask and classify on tiny random models (no network; HF parity is in tests/interop)."""

from __future__ import annotations

import warnings

import pytest
import torch

from dhian.config import run_config_from_dict
from dhian.errors import ConfigError, DataError
from dhian.inference.classify import classify
from dhian.inference.encode import encode_texts
from dhian.inference.fill_mask import fill_mask
from dhian.models.bert.config import BertConfig
from dhian.models.bert.heads import BertForMaskedLM, BertForSequenceClassification, build_bert
from dhian.models.bert.model import BertBackbone
from dhian.models.keras_classifier.config import KerasClassifierConfig
from dhian.models.keras_classifier.model import KerasTextClassifier, build_keras_classifier
from dhian.text import Tokenizer, wordpiece_from_vocab
from helpers.bert import write_vocab
from helpers.threads import one_thread  # noqa: F401 - autouse fixture

WORDS = ["the", "of", "is", "and", "to", "in", "capital", "france", "paris"]
WORDS += ["city", "river", "big", "small", "cat", "dog", "sat", "on", "mat"]


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    vocab = write_vocab(tmp_path_factory.mktemp("vocab"), WORDS, punctuation=".,!?'")
    return wordpiece_from_vocab(vocab, lowercase=True)


def tiny_cfg(**kw: object) -> BertConfig:
    args: dict[str, object] = dict(
        vocab_size=90, embed_dim=16, layers=2, heads=2, ff_dim=32, max_positions=24
    )
    args.update(kw)
    return BertConfig(**args)  # type: ignore[arg-type]


def tiny(task: str = "backbone", seed: int = 0, **kw: object) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_bert(tiny_cfg(task=task, **kw)).eval()


def test_backbone_shapes_and_attention_rows() -> None:
    model = tiny()
    assert isinstance(model, BertBackbone)
    ids = torch.randint(5, 90, (3, 9))
    lengths = torch.tensor([9, 6, 2])
    out = model(ids, lengths, need_weights=True, need_hidden=True)
    assert out.last_hidden.shape == (3, 9, 16) and out.pooled is not None
    assert out.pooled.shape == (3, 16)
    assert out.hidden_states is not None and len(out.hidden_states) == 3
    torch.testing.assert_close(out.hidden_states[-1], out.last_hidden)
    assert out.attentions is not None and len(out.attentions) == 2
    for w in out.attentions:
        assert w.shape == (3, 2, 9, 9)
        torch.testing.assert_close(w.sum(-1), torch.ones(3, 2, 9))
        for b, n in enumerate(lengths.tolist()):
            assert torch.all(w[b, :, :, n:] == 0)  # padded keys get no weight
    fast = model(ids, lengths)  # SDPA path, no weights
    assert fast.attentions is None
    torch.testing.assert_close(fast.last_hidden, out.last_hidden, atol=1e-5, rtol=1e-5)


def test_padding_does_not_change_real_positions() -> None:
    model = tiny()
    short = torch.randint(5, 90, (1, 5))
    alone = model(short).last_hidden
    padded = torch.cat([short, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    batched = model(padded, torch.tensor([5])).last_hidden
    torch.testing.assert_close(batched[:, :5], alone, atol=1e-5, rtol=1e-5)
    # without a mask the pads are attended and the output changes: the mask is doing the work
    unmasked = model(padded).last_hidden
    assert (unmasked[:, :5] - alone).abs().max() > 1e-3
    mask = torch.tensor([[1] * 5 + [0] * 4])
    torch.testing.assert_close(model(padded, attention_mask=mask).last_hidden, batched)


def test_segments_and_positions_matter() -> None:
    model = tiny()
    ids = torch.randint(5, 90, (1, 6))
    base = model(ids).last_hidden
    seg = model(ids, token_type_ids=torch.tensor([[0, 0, 0, 1, 1, 1]])).last_hidden
    assert (seg - base).abs().max() > 1e-3
    flipped = model(ids.flip(1)).last_hidden.flip(1)
    assert (flipped - base).abs().max() > 1e-3  # learned positions break permutation symmetry


def test_mlm_head_is_tied_to_word_embeddings() -> None:
    model = tiny("mlm")
    assert isinstance(model, BertForMaskedLM)
    assert model.backbone.pooler is None  # MLM models have no pooler by default (DDP-safe)
    names = set(model.state_dict())
    assert not any("decoder" in n for n in names)
    ids = torch.randint(5, 90, (2, 7))
    logits = model(ids).logits
    assert logits.shape == (2, 7, 90)
    # independent recomputation from the parts: LN(gelu(dense(h))) @ Wᵀ + b
    h = model.backbone(ids).last_hidden
    t = model.mlm.transform
    manual = torch.nn.functional.layer_norm(
        torch.nn.functional.gelu(h @ t.dense.weight.T + t.dense.bias),
        (16,),
        t.norm.weight,
        t.norm.bias,
        eps=1e-12,
    )
    manual = manual @ model.backbone.embeddings.word.weight.T + model.mlm.bias
    torch.testing.assert_close(logits, manual, atol=1e-5, rtol=1e-5)
    logits.sum().backward()
    assert model.backbone.embeddings.word.weight.grad is not None


def test_classifier_uses_pooled_cls_and_labels() -> None:
    model = tiny("classification", num_labels=3, labels=("neg", "neu", "pos"))
    assert isinstance(model, BertForSequenceClassification)
    assert model.labels == ("neg", "neu", "pos")
    ids = torch.randint(5, 90, (4, 6))
    out = model(ids, torch.tensor([6, 5, 3, 1]), need_weights=True)
    assert out.logits.shape == (4, 3) and out.attention is not None
    pooled = model.backbone(ids, torch.tensor([6, 5, 3, 1])).pooled
    torch.testing.assert_close(out.logits, model.classifier(pooled))


def test_config_validation_and_yaml() -> None:
    with pytest.raises(ConfigError, match="divisible"):
        BertConfig(embed_dim=10, heads=3)
    with pytest.raises(ConfigError, match="task"):
        BertConfig(task="ner")
    with pytest.raises(ConfigError, match="labels"):
        BertConfig(num_labels=3, labels=("a", "b"))
    with pytest.raises(ConfigError, match="too_long"):
        BertConfig(too_long="wrap")
    run = run_config_from_dict(
        {"model": {"type": "bert", "task": "classification", "labels": ["x", "y"]}}
    )
    assert isinstance(run.model, BertConfig) and run.model.label_names == ("x", "y")
    assert BertConfig(task="mlm").has_pooler is False
    assert BertConfig(task="classification", pooler=False).has_pooler is True


def test_build_model_registry_builds_each_task() -> None:
    from dhian.models.families import build_model

    for task, cls in [
        ("backbone", BertBackbone),
        ("mlm", BertForMaskedLM),
        ("classification", BertForSequenceClassification),
    ]:
        model = build_model(tiny_cfg(task=task), 90)
        assert isinstance(model, cls)
    keras = build_model(KerasClassifierConfig(vocab_size=50, max_len=12), 50)
    assert isinstance(keras, KerasTextClassifier)


def test_overlong_input_truncates_with_warning_or_raises() -> None:
    model = tiny()
    ids = torch.randint(5, 90, (2, 30))  # max_positions = 24
    with pytest.warns(UserWarning, match="truncated"):
        out = model(ids, torch.tensor([30, 10]))
    assert out.last_hidden.shape == (2, 24, 16)
    torch.testing.assert_close(
        out.last_hidden, model(ids[:, :24], torch.tensor([24, 10])).last_hidden
    )
    strict = tiny(too_long="error")
    with pytest.raises(DataError, match="at most 24"):
        strict(ids)


def test_keras_classifier_shapes_mask_and_pooling() -> None:
    torch.manual_seed(0)
    model = build_keras_classifier(
        KerasClassifierConfig(vocab_size=50, max_len=12, labels=("a", "b"))
    ).eval()
    assert isinstance(model, KerasTextClassifier) and model.labels == ("a", "b")
    ids = torch.randint(1, 50, (1, 5))
    alone = model(ids).logits
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    out = model(padded, torch.tensor([5]), need_weights=True)
    torch.testing.assert_close(out.logits, alone, atol=1e-5, rtol=1e-5)
    assert out.logits.shape == (1, 2) and out.attention is not None
    assert out.attention[0].shape == (1, 2, 9, 9)
    with pytest.warns(UserWarning, match="truncated"):
        assert model(torch.randint(1, 50, (2, 20))).logits.shape == (2, 2)


# --------------------------------------------------------------------------- inference


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
