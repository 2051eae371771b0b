"""llm_generate on SmolLM2: chat prompt → text with stop strings and streaming; seeded sampling
per row independent of the batch; EOS stops a row; the static cache is written in place."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from dhian.decoding.llm_generate import llm_generate
from dhian.inference.generate import llm_generate_text
from dhian.text.chat_template import render_chat


def _chat(tok: Any, template: str, question: str) -> str:
    return render_chat(
        template,
        [{"role": "user", "content": question}],
        add_generation_prompt=True,
        bos_token=tok.id_to_token(tok.bos_id),
        eos_token=tok.id_to_token(tok.eos_id),
    )


def test_chat_answers_stop_at_eos_and_stream_adds_up(smollm2: Any) -> None:
    _, model, tok, template = smollm2
    prompts = [_chat(tok, template, "What is the capital of France?"), _chat(tok, template, "Hi")]
    pieces: dict[int, list[str]] = {0: [], 1: []}
    texts = llm_generate_text(
        model, tok, prompts, max_new_tokens=48, on_text=lambda r, s: pieces[r].append(s)
    )
    assert "Paris" in texts[0]
    for r, text in enumerate(texts):
        assert "".join(pieces[r]) == text and "<|im_end|>" not in text
    results = llm_generate(
        model, [tok.encode(p) for p in prompts], max_new_tokens=48, stop_token_ids=[tok.eos_id]
    )
    assert any(r.finished_reason == "stop_token" and r.tokens[-1] == tok.eos_id for r in results)


def test_stop_string_cuts_text(smollm2: Any) -> None:
    _, model, tok, template = smollm2
    prompt = _chat(tok, template, "Count from 1 to 10, separated by commas.")
    full = llm_generate_text(model, tok, [prompt], max_new_tokens=40)[0]
    assert "4" in full
    cut = llm_generate_text(model, tok, [prompt], max_new_tokens=40, stop=["4"])[0]
    assert cut == full[: full.index("4")]


def test_seeded_sampling_row_does_not_depend_on_batch(smollm2: Any) -> None:
    _, model, tok, _ = smollm2
    a, b = tok.encode("Once upon a time"), tok.encode("In a galaxy far away, the")
    kw: dict[str, Any] = dict(max_new_tokens=12, temperature=0.9, top_k=40, top_p=0.95, seed=7)
    alone = llm_generate(model, [b], **{**kw, "seed": 8})[0].tokens
    batch = llm_generate(model, [a, b], pad_id=tok.pad_id, **kw)
    assert batch[1].tokens == alone
    again = llm_generate(model, [a, b], pad_id=tok.pad_id, **kw)
    assert [r.tokens for r in again] == [r.tokens for r in batch]
    greedy = llm_generate(model, [a], max_new_tokens=12)[0].tokens
    penalised = llm_generate(model, [a], max_new_tokens=12, repetition_penalty=5.0)[0].tokens
    assert len(set(penalised)) >= len(set(greedy))


def test_static_cache_written_in_place_and_overflow_names_the_fix(smollm2: Any) -> None:
    cfg, model, tok, _ = smollm2
    cache = model.new_cache(1, 8)
    pointers = [k.data_ptr() for k in cache.k]
    with torch.no_grad():
        model(torch.tensor([tok.encode("one two three")]), cache=cache)
        model(torch.tensor([[tok.eos_id]]), cache=cache)
        assert [k.data_ptr() for k in cache.k] == pointers
        assert cache.k[0].shape == (1, cfg.n_kv_heads, 8, cfg.head_dim)
        with pytest.raises(ValueError, match="larger max_len"):
            model(torch.tensor([tok.encode("four five six seven eight")]), cache=cache)
    with pytest.raises(ValueError, match="exceeds the model's context 8192"):
        llm_generate(model, [[1] * 8190], max_new_tokens=5)
