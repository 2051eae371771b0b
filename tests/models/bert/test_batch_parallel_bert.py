"""BertBackbone's batch-parallel inference (:mod:`dhian.nn.batch_parallel`): with two threads
and no autograd the batch is split across single-threaded workers, and the result is the same
function — exactly the parts' own outputs (no races between the workers on shared packed
weights), equal to the one-batch forward in float32, and within the int8 bound of fp32."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch

from dhian.models.bert.config import BertConfig
from dhian.models.bert.heads import build_bert
from dhian.models.bert.model import BertBackbone
from dhian.models.precision import apply_precision
from dhian.nn import batch_parallel
from dhian.nn.fused_linear import fused_linear_available
from helpers.threads import torch_threads

V = 200


def backbone() -> BertBackbone:
    torch.manual_seed(0)
    cfg = BertConfig(
        task="backbone",
        vocab_size=V,
        embed_dim=64,
        layers=2,
        heads=4,
        ff_dim=128,
        max_positions=64,
        dropout=0.0,
        attention_dropout=0.0,
        init_std=0.1,
    )
    model = build_bert(cfg, V).eval()
    assert isinstance(model, BertBackbone)
    return model


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, V, (8, 64), generator=g)  # (B, T): 512 tokens, two parts
    return ids, torch.tensor([64, 10, 64, 30, 64, 64, 5, 64])


def calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records the part counts BertBackbone hands to run_parts."""
    seen: list[int] = []
    real = batch_parallel.run_parts

    def spy(fn: Callable[[slice], Any], b: int, parts: int) -> Sequence[Any]:
        seen.append(parts)
        return real(fn, b, parts)

    monkeypatch.setattr("dhian.models.bert.model.run_parts", spy)
    return seen


def test_fp32_split_equals_one_batch_and_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    model, (ids, lengths) = backbone(), batch()
    seen = calls(monkeypatch)
    with torch_threads(2), torch.inference_mode():
        split = model(ids, lengths)
        model.batch_parallel = False
        whole = model(ids, lengths)
    assert seen == [2]
    assert split.pooled is not None and whole.pooled is not None
    torch.testing.assert_close(split.last_hidden, whole.last_hidden, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(split.pooled, whole.pooled, atol=1e-5, rtol=1e-5)


def test_not_split_when_weights_hidden_or_gradients_are_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, (ids, lengths) = backbone(), batch()
    seen = calls(monkeypatch)
    with torch_threads(2):
        with torch.no_grad():
            out = model(ids, lengths, need_weights=True, need_hidden=True)
        model(ids, lengths).last_hidden.sum().backward()
    assert seen == []
    assert out.attentions is not None and len(out.attentions) == 2


@pytest.mark.skipif(not fused_linear_available("int8"), reason="no oneDNN int8 operators")
def test_int8_parts_are_exactly_their_own_forward_and_within_the_bound() -> None:
    fp32, (ids, lengths) = backbone(), batch()
    model = apply_precision(copy.deepcopy(fp32), "int8")
    with torch.inference_mode():
        with torch_threads(2):
            split = model(ids, lengths)
        with torch_threads(1):  # each part alone, one thread: what each worker computes
            parts = [model(ids[rows], lengths[rows]) for rows in (slice(0, 4), slice(4, 8))]
            ref = fp32(ids, lengths)
    assert torch.equal(split.last_hidden, torch.cat([p.last_hidden for p in parts]))
    real = torch.arange(64)[None, :] < lengths[:, None]  # (B, T) the unpadded tokens
    err = (split.last_hidden - ref.last_hidden)[real].norm() / ref.last_hidden[real].norm()
    assert float(err) <= 0.04
