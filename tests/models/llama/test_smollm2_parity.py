"""SmolLM2-135M from its GGUF: dhian's logits and greedy text equal HF transformers' own GGUF
load (the oracle), and dhian's batched / eager / cached paths agree with its plain forward."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from dhian.decoding.llm_generate import llm_generate


def _news_prompts(tokenizer: Any, n: int = 20, longest: int = 1000) -> list[list[int]]:
    """``n`` prompts from the news corpus' test split, lengths spaced geometrically from 1 to
    ``longest`` (short and long contexts, a bounded test time)."""
    from dhian.data.builtin_corpora import load_builtin
    from dhian.errors import DhianError

    try:
        text = "\n".join(load_builtin("news", "test", quiet=True).texts())
    except (DhianError, OSError) as exc:
        pytest.skip(f"news corpus not available: {exc}")
    ids = tokenizer.encode(text)
    lengths = torch.logspace(0, 3, n).mul(longest / 1000).round().long().tolist()  # 1 .. 1000
    assert len(ids) >= longest + 37 * n
    return [ids[37 * i : 37 * i + t] for i, t in enumerate(lengths)]


@torch.no_grad()
def _hf_greedy(hf: Any, prompt: list[int], n: int) -> list[int]:
    """HF's argmax continuation, one full forward per token (no generation config involved:
    no EOS stop, no min-length suppression)."""
    ids = torch.tensor([prompt])
    past = None
    out: list[int] = []
    step = ids
    for _ in range(n):
        res = hf(step, past_key_values=past, use_cache=True)
        past = res.past_key_values
        out.append(int(res.logits[0, -1].argmax()))
        step = torch.tensor([[out[-1]]])
    return out


@torch.no_grad()
def test_logits_match_hf_on_20_prompts_up_to_1000_tokens(
    smollm2: Any, hf_smollm2: Any, record_property: Any
) -> None:
    _, model, tok, _ = smollm2
    worst = 0.0
    prompts = _news_prompts(tok)
    assert max(len(p) for p in prompts) == 1000 and len(prompts) == 20
    for p in prompts:
        ids = torch.tensor([p])
        ours, _ = model(ids)
        theirs = hf_smollm2(ids).logits
        worst = max(worst, float((ours - theirs).abs().max()))
    record_property("max_abs_logit_diff", worst)
    print(f"max |logit diff| over 20 prompts: {worst:.3g}")
    assert worst <= 1e-3


@torch.no_grad()
def test_greedy_64_tokens_identical_to_hf_and_batched_equals_alone(
    smollm2: Any, hf_smollm2: Any
) -> None:
    _, model, tok, _ = smollm2
    prompts = [
        tok.encode("The capital of France is"),
        tok.encode(
            "<|im_start|>user\nWrite a haiku about rivers.<|im_end|>\n<|im_start|>assistant\n"
        ),
        tok.encode("def fibonacci(n):"),
    ]
    alone = []
    for p in prompts:
        hf = _hf_greedy(hf_smollm2, p, 64)
        ours = llm_generate(model, [p], max_new_tokens=64, temperature=0.0)[0].tokens
        assert len(ours) == 64
        assert ours == hf
        alone.append(ours)
    batched = llm_generate(model, prompts, max_new_tokens=64, temperature=0.0, pad_id=tok.pad_id)
    assert [r.tokens for r in batched] == alone


@torch.no_grad()
def test_eager_weights_path_equals_sdpa_path_and_cache_equals_full(smollm2: Any) -> None:
    cfg, model, tok, _ = smollm2
    ids = torch.tensor([tok.encode("Attention is all you need, they said, and then")])
    t = ids.size(1)
    fast, none = model(ids)
    eager, weights = model(ids, need_weights=True)
    assert none is None and weights is not None
    assert weights.shape == (cfg.n_layers, 1, cfg.n_heads, t, t)
    torch.testing.assert_close(eager, fast, atol=1e-4, rtol=0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(cfg.n_layers, 1, cfg.n_heads, t))
    assert not weights.triu(diagonal=1).any()
    cache = model.new_cache(1, t)
    first, _ = model(ids[:, :-3], cache=cache)
    rest, _ = model(ids[:, -3:], cache=cache)
    torch.testing.assert_close(torch.cat([first, rest], 1), fast, atol=1e-4, rtol=0)
    assert cache.length == t


@pytest.mark.parametrize("need_weights", [False, True])
@torch.no_grad()
def test_left_padded_rows_equal_unpadded(smollm2: Any, need_weights: bool) -> None:
    _, model, tok, _ = smollm2
    a, b = tok.encode("Hello there, how are"), tok.encode("Hi")
    ids = torch.tensor([a, [tok.pad_id] * (len(a) - len(b)) + b])
    mask = ids != -1
    mask[1, : len(a) - len(b)] = False
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
    out, _ = model(ids, positions, attn_mask=mask, need_weights=need_weights)
    alone_a, _ = model(torch.tensor([a]))
    alone_b, _ = model(torch.tensor([b]))
    torch.testing.assert_close(out[0], alone_a[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(out[1, -len(b) :], alone_b[0], atol=1e-4, rtol=0)
