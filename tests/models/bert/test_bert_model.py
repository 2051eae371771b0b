"""dhian.models.bert (model, heads): shapes, masks, heads, the length policy, on tiny random
models (no network; HF parity is in tests/interop; fill-mask and classify: tests/inference)."""

from __future__ import annotations

import pytest
import torch

from dhian.config import run_config_from_dict
from dhian.errors import ConfigError, DataError
from dhian.models.bert.config import BertConfig
from dhian.models.bert.heads import BertForMaskedLM, BertForSequenceClassification
from dhian.models.bert.model import BertBackbone
from dhian.models.keras_classifier.config import KerasClassifierConfig
from dhian.models.keras_classifier.model import KerasTextClassifier
from dhian.text import Tokenizer
from helpers.bert import tiny, tiny_cfg, word_tokenizer
from helpers.threads import one_thread  # noqa: F401 - autouse fixture


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    return word_tokenizer(tmp_path_factory.mktemp("vocab"))


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
