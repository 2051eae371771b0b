"""dhian.models.keras_classifier.model: shapes, the padding mask, pooling, the length policy."""

from __future__ import annotations

import pytest
import torch

from dhian.models.keras_classifier.config import KerasClassifierConfig
from dhian.models.keras_classifier.model import KerasTextClassifier, build_keras_classifier
from helpers.threads import one_thread  # noqa: F401 - autouse fixture


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
