"""LLMEngine (continuous batching): requests joining a running batch between steps and leaving
it when they finish give the same greedy tokens as llm_generate run on each prompt alone; per
request stop tokens, lengths, callbacks and cancellation."""

from __future__ import annotations

import pytest
import torch

from dhian.decoding.llm_generate import llm_generate
from dhian.inference.engine import LLMEngine
from dhian.models.llama.config import LlamaConfig
from dhian.models.llama.model import LlamaModel


@pytest.fixture(scope="module")
def model() -> LlamaModel:
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=97, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=128, max_seq_len=64
    )
    m = LlamaModel(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(8.0)  # sharper logits: no near-ties for greedy
    return m.fuse_projections()


PROMPTS = [[5, 6, 7], [9, 3, 1, 4, 4, 2, 8], [11], [20, 21, 22, 23, 24]]


def _alone(model: LlamaModel, p: list[int], n: int) -> list[int]:
    return llm_generate(model, [p], max_new_tokens=n)[0].tokens


def test_joining_and_leaving_matches_single_runs(model: LlamaModel) -> None:
    engine = LLMEngine(model, max_batch=3, max_len=32)
    lengths = [6, 3, 9, 5]
    first = engine.submit(PROMPTS[0], max_new_tokens=lengths[0])
    engine.step()
    engine.step()  # the batch is running when the others arrive
    rest = [
        engine.submit(p, max_new_tokens=n) for p, n in zip(PROMPTS[1:], lengths[1:], strict=True)
    ]
    assert len(engine.waiting) == 3
    done = engine.run()
    reqs = [first, *rest]
    assert sorted(r.id for r in done) == [r.id for r in reqs]
    for req, p, n in zip(reqs, PROMPTS, lengths, strict=True):
        assert req.finished_reason == "length"
        assert req.tokens == _alone(model, p, n)
    assert not engine.busy and engine.active == []


def test_stop_tokens_callback_and_cancel(model: LlamaModel) -> None:
    engine = LLMEngine(model, max_batch=4, max_len=32)
    ref = _alone(model, PROMPTS[1], 8)
    stopper = engine.submit(PROMPTS[1], max_new_tokens=8, stop_token_ids=[ref[2]])
    seen: list[int] = []
    caller = engine.submit(
        PROMPTS[0], max_new_tokens=8, on_token=lambda r, t: seen.append(t) or len(seen) == 2
    )
    victim = engine.submit(PROMPTS[2], max_new_tokens=8)
    engine.step()
    engine.cancel(victim)
    engine.run()
    assert (
        stopper.finished_reason == "stop_token" and stopper.tokens == ref[: ref.index(ref[2]) + 1]
    )
    assert caller.finished_reason == "callback" and caller.tokens == seen == _alone(
        model, PROMPTS[0], 2
    )
    assert victim.finished_reason == "cancelled" and len(victim.tokens) == 1
    with pytest.raises(ValueError, match="exceeds"):
        engine.submit(list(range(30)), max_new_tokens=8)
