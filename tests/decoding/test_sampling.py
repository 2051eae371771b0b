"""dhian.decoding.sampling: logits processors on hand-made distributions, the generation loop
(cache, batching, seeds, stops) on tiny random GPTs, and the text wrapper (stop strings,
streaming)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from dhian.decoding.sampling import (
    GenerationResult,
    apply_repetition_penalty,
    apply_temperature,
    generate,
    top_k_filter,
    top_p_filter,
)
from dhian.inference.generate import generate_text
from dhian.models.gpt.model import GPT
from helpers.threads import one_thread  # noqa: F401 - autouse fixture

V = 23
PROMPTS = [[5, 6, 7], [8], [9, 10, 11, 12, 13]]


def tiny(positions: str = "learned", block_size: int = 16, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    # a large init spreads the logits so greedy choices are far from ties
    return GPT(V, 2, 2, 16, block_size, positions=positions, init_std=0.3).eval()


# ---- processors ----------------------------------------------------------------------------------
def kept(scores: Tensor) -> list[int]:
    return torch.isfinite(scores).nonzero().flatten().tolist()


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log()[None]  # (1, 4)
    assert kept(top_p_filter(logits, 0.8)[0]) == [0, 1]
    assert kept(top_p_filter(logits, 0.81)[0]) == [0, 1, 2]
    assert kept(top_p_filter(logits, 0.5)[0]) == [0]
    assert kept(top_p_filter(logits, 0.3)[0]) == [0]
    assert kept(top_p_filter(logits, 0.96)[0]) == [0, 1, 2, 3]
    assert kept(top_p_filter(logits, 1.0)[0]) == [0, 1, 2, 3]
    perm = torch.tensor([2, 0, 3, 1])  # order in the vocabulary does not matter
    assert sorted(kept(top_p_filter(logits[:, perm], 0.8)[0])) == [1, 3]
    # kept scores are unchanged; renormalised they are 0.5/0.8 and 0.3/0.8
    out = torch.softmax(top_p_filter(logits, 0.8), -1)[0]
    torch.testing.assert_close(out, torch.tensor([0.625, 0.375, 0.0, 0.0]))
    # rows are independent
    two = torch.stack([probs.log(), probs.flip(0).log()])
    res = top_p_filter(two, 0.8)
    assert kept(res[0]) == [0, 1] and kept(res[1]) == [2, 3]


def test_top_k_and_temperature() -> None:
    logits = torch.tensor([[1.0, 3.0, 2.0, -1.0], [0.0, 0.0, 5.0, 1.0]])
    out = top_k_filter(logits, 2)
    assert kept(out[0]) == [1, 2] and kept(out[1]) == [2, 3]
    assert torch.equal(top_k_filter(logits, 0), logits)
    assert torch.equal(top_k_filter(logits, 4), logits)
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    hot = torch.softmax(apply_temperature(probs.log(), 0.5), -1)
    torch.testing.assert_close(hot, probs**2 / (probs**2).sum())
    with pytest.raises(ValueError):
        apply_temperature(probs, 0.0)


def test_repetition_penalty_ctrl_style() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5, -3.0, 4.0], [2.0, -1.0, 0.5, -3.0, 4.0]])
    previous = torch.tensor([[0, 1, 1, 3], [4, 4, 0, 2]])
    mask = torch.tensor([[True, True, True, True], [False, False, True, True]])  # row 1: pads
    out = apply_repetition_penalty(logits, previous, 2.0, mask)
    expected = torch.tensor([[1.0, -2.0, 0.5, -6.0, 4.0], [1.0, -1.0, 0.25, -3.0, 4.0]])
    torch.testing.assert_close(out, expected)
    assert torch.equal(apply_repetition_penalty(logits, previous, 1.0), logits)


# ---- the generation loop -------------------------------------------------------------------------
def check_same(a: list[GenerationResult], b: list[GenerationResult], tol: float = 1e-5) -> None:
    for x, y in zip(a, b, strict=True):
        assert x.tokens == y.tokens
        assert x.finished_reason == y.finished_reason
        diffs = [abs(p - q) for p, q in zip(x.log_probs, y.log_probs, strict=True)]
        assert max(diffs, default=0.0) <= tol


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_cached_equals_uncached_greedy_and_sampled(positions: str) -> None:
    model = tiny(positions)  # block 16 < 5 + 14: the context gets cropped on the way
    cached = generate(model, PROMPTS, 14, temperature=0.0)
    check_same(cached, generate(model, PROMPTS, 14, temperature=0.0, use_cache=False))
    assert all(len(r.tokens) == 14 and r.finished_reason == "length" for r in cached)
    kw: dict[str, Any] = dict(temperature=1.3, top_k=10, top_p=0.9, seed=7)
    check_same(
        generate(model, PROMPTS, 10, **kw), generate(model, PROMPTS, 10, use_cache=False, **kw)
    )


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_log_probs_are_the_models_own(positions: str) -> None:
    model = tiny(positions, block_size=32)
    prompt = [3, 4, 5, 6]
    res = generate(model, [prompt], 8, temperature=1.0, seed=0)[0]
    seq = torch.tensor([prompt + res.tokens])
    with torch.no_grad():
        logp = torch.log_softmax(model(seq).logits[0, len(prompt) - 1 : -1], -1)  # (8, V)
    ref = logp.gather(-1, torch.tensor(res.tokens)[:, None]).squeeze(-1)
    torch.testing.assert_close(torch.tensor(res.log_probs), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_batch_of_different_lengths_equals_each_alone(positions: str) -> None:
    model = tiny(positions)
    batched = generate(model, PROMPTS, 12, temperature=0.0, pad_id=0)
    check_same(batched, [generate(model, [p], 12, temperature=0.0)[0] for p in PROMPTS])
    # sampling too: row r draws from its own generator seeded seed + r
    kw: dict[str, Any] = dict(temperature=1.0, top_p=0.95)
    batched = generate(model, PROMPTS, 12, seed=40, **kw)
    alone = [generate(model, [p], 12, seed=40 + r, **kw)[0] for r, p in enumerate(PROMPTS)]
    check_same(batched, alone)


def test_seeded_sampling_is_reproducible_and_seeds_differ() -> None:
    model = tiny()
    kw: dict[str, Any] = dict(temperature=1.5, seed=123)
    a, b = generate(model, PROMPTS, 12, **kw), generate(model, PROMPTS, 12, **kw)
    check_same(a, b, tol=0.0)
    others = [generate(model, PROMPTS, 12, temperature=1.5, seed=s)[0].tokens for s in range(4)]
    assert len({tuple(t) for t in others}) > 1


def test_top_k_one_equals_greedy() -> None:
    model = tiny("rotary")
    greedy = generate(model, PROMPTS, 10, temperature=0.0)
    check_same(generate(model, PROMPTS, 10, temperature=0.7, top_k=1, seed=3), greedy)
    check_same(generate(model, PROMPTS, 10, temperature=2.0, top_p=1e-6, seed=3), greedy)


def test_repetition_penalty_changes_greedy_choices_like_the_processor() -> None:
    model = tiny(block_size=64)
    prompt = [4, 5, 6]
    res = generate(model, [prompt], 10, temperature=0.0, repetition_penalty=3.0)[0]
    seq = prompt + res.tokens
    for t in range(len(res.tokens)):  # each pick is the argmax of the penalised logits
        ctx = torch.tensor([seq[: len(prompt) + t]])
        with torch.no_grad():
            logits = model(ctx).logits[:, -1]
        pen = apply_repetition_penalty(logits, ctx, 3.0)
        assert int(pen.argmax()) == res.tokens[t]
    plain = generate(model, [prompt], 10, temperature=0.0)[0]
    assert len(set(res.tokens)) >= len(set(plain.tokens))


@dataclasses.dataclass
class _Out:
    logits: Tensor


class FixedLM(nn.Module):
    """A stand-in LM whose next-token distribution is always ``probs`` (ignores the context)."""

    def __init__(self, probs: list[float]) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(probs).log(), requires_grad=False)
        self.block_size = 10_000

    def init_caches(self) -> list[Any]:
        return []

    def forward(self, ids: Tensor, **_: Any) -> _Out:
        b, t = ids.shape
        return _Out(self.logits.expand(b, t, -1))  # (B, T, V)


def sample_freq(lm: FixedLM, n: int, **kw: Any) -> Tensor:
    """Frequencies (V,) of the first token of ``n`` rows (row r samples with seed + r)."""
    res = generate(lm, [[0]] * n, 1, seed=1000, use_cache=False, **kw)
    toks = torch.tensor([r.tokens[0] for r in res])
    return torch.bincount(toks, minlength=4).double() / n


def test_samples_follow_the_filtered_distribution() -> None:
    lm = FixedLM([0.5, 0.3, 0.15, 0.05])
    n, tol = 2000, 0.045  # ≈ 4 standard deviations of a frequency near 0.5
    freq = sample_freq(lm, n, temperature=1.0)
    torch.testing.assert_close(
        freq, torch.tensor([0.5, 0.3, 0.15, 0.05]).double(), atol=tol, rtol=0
    )
    freq = sample_freq(lm, n, temperature=1.0, top_p=0.8)
    torch.testing.assert_close(freq, torch.tensor([0.625, 0.375, 0, 0]).double(), atol=tol, rtol=0)
    assert freq[2:].sum() == 0
    freq = sample_freq(lm, n, temperature=1.0, top_k=3)
    torch.testing.assert_close(freq, torch.tensor([10, 6, 3, 0]).double() / 19, atol=tol, rtol=0)
    # temperature 0.5 squares the probabilities (renormalised)
    p2 = torch.tensor([0.25, 0.09, 0.0225, 0.0025]).double()
    freq = sample_freq(lm, n, temperature=0.5)
    torch.testing.assert_close(freq, p2 / p2.sum(), atol=tol, rtol=0)


def test_stop_tokens_stop_sequences_and_callback() -> None:
    model = tiny(block_size=32)
    full = generate(model, PROMPTS, 8, temperature=0.0)
    stop_tok = full[0].tokens[3]
    first = full[0].tokens.index(stop_tok)
    res = generate(model, PROMPTS, 8, temperature=0.0, stop_token_ids=[stop_tok])
    assert res[0].tokens == full[0].tokens[: first + 1]
    assert res[0].finished_reason == "stop_token"
    for r in (1, 2):  # the other rows are unaffected unless they emit the same token
        cut = full[r].tokens.index(stop_tok) + 1 if stop_tok in full[r].tokens else 8
        assert res[r].tokens == full[r].tokens[:cut]
    seq = full[2].tokens[2:4]
    res = generate(model, PROMPTS, 8, temperature=0.0, stop_sequences=[seq])
    assert res[2].finished_reason == "stop_sequence" and res[2].tokens[-2:] == seq
    assert len(res[2].tokens) <= 4
    seen: list[tuple[int, int]] = []

    def on_token(row: int, tok: int) -> bool:
        seen.append((row, tok))
        return row == 1 and len([s for s in seen if s[0] == 1]) == 2

    res = generate(model, PROMPTS, 5, temperature=0.0, on_token=on_token)
    assert res[1].finished_reason == "callback" and len(res[1].tokens) == 2
    for r in range(3):
        assert [t for row, t in seen if row == r] == res[r].tokens
    assert res[0].tokens == full[0].tokens[:5]


def test_argument_errors() -> None:
    model = tiny()
    with pytest.raises(ValueError, match="empty"):
        generate(model, [[1], []], 3)
    with pytest.raises(ValueError, match="top_p"):
        generate(model, [[1]], 3, top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, [[1]], 3, temperature=-1.0)
    assert generate(model, [[1]], 0)[0].tokens == []
    assert model.training is False


# ---- text ----------------------------------------------------------------------------------------
class CharTok:
    """A minimal tokenizer (ids 0..3 special, then one id per letter) for text-level tests."""

    alphabet = "abcdefghijklmnopqr "
    pad_id, bos_id, eos_id = 0, 2, 3

    def encode(self, text: str) -> list[int]:
        return [4 + self.alphabet.index(c) for c in text]

    def decode(self, ids: Any) -> str:
        return "".join(self.alphabet[i - 4] for i in ids if i >= 4)


def test_generate_text_stop_strings_and_streaming() -> None:
    tok = CharTok()
    assert len(tok.alphabet) + 4 <= V
    model = tiny(block_size=64, seed=5)
    prompts = ["abc", "hello"]
    plain = generate_text(model, tok, prompts, 20, temperature=0.0, stop_at_eos=False)
    ids = generate(model, [tok.encode(p) for p in prompts], 20, temperature=0.0)
    assert plain == [tok.decode(r.tokens) for r in ids]
    text = plain[0]
    assert len(text) >= 7
    stop = text[5:7]
    cut = text.index(stop)
    chunks: dict[int, list[str]] = {0: [], 1: []}
    got = generate_text(
        model,
        tok,
        prompts,
        20,
        temperature=0.0,
        stop=[stop, "\x00never"],
        stop_at_eos=False,
        on_text=lambda r, s: chunks[r].append(s),
    )
    assert got[0] == text[:cut]
    for r in (0, 1):
        assert "".join(chunks[r]) == got[r]  # increments add up, nothing past the stop string
    assert len(chunks[1]) > 1  # it streamed, not one block at the end
    assert got[1] == (plain[1][: plain[1].index(stop)] if stop in plain[1] else plain[1])


def test_generate_text_with_a_trained_char_tokenizer_and_empty_prompt() -> None:
    from dhian.text.training import train_tokenizer

    tok = train_tokenizer("char", ["the quick brown fox", "jumps over the lazy dog"], 64)
    model = GPT(tok.vocab_size, 1, 2, 16, 48, init_std=0.3).eval()
    out = generate_text(model, tok, ["the ", ""], 15, temperature=1.0, seed=0)
    again = generate_text(model, tok, ["the ", ""], 15, temperature=1.0, seed=0)
    assert out == again and all(isinstance(s, str) for s in out)
    # the empty prompt starts a new document after EOS, exactly like prompt [eos]
    res = generate(model, [[tok.eos_id]], 15, temperature=1.0, seed=1, stop_token_ids=[tok.eos_id])
    assert out[1] == tok.decode(res[0].tokens)
    assert math.isfinite(sum(res[0].log_probs))
