"""Text generation from a causal language model: greedy and sampled, batched, KV-cached.

Owns the token-level loop :func:`generate` (ids in, ids out; the text-level wrapper with stop
strings and streaming is :func:`dhian.inference.generate.generate_text`). The logits
processors it applies (:func:`apply_temperature`, :func:`top_k_filter`, :func:`top_p_filter`,
:func:`apply_repetition_penalty`) live in :mod:`dhian.decoding.processors` and are re-exported
here.

The model is any causal LM with the interface of :class:`dhian.models.gpt.GPT`:
``model(ids (B, T), positions=(B, T)|None, attention_mask=(B, Tk) bool|None, caches=...)``
returning an object with ``logits`` (B, T, V), plus ``block_size`` (longest context) and
``init_caches()`` (one empty :class:`~dhian.nn.KVCache` per layer).

Batching: prompts of different lengths are left-padded; the key mask hides the pads and each
row gets its own position ids (0 at its first real token), so a batch generates exactly what
each prompt would generate alone (up to float rounding). Context longer than ``block_size`` is
cropped to the last ``block_size`` tokens (as nanoGPT); from then on every step recomputes that
window without the cache, because learned absolute positions of the window shift each step.

Randomness: with ``seed`` row r samples from its own ``torch.Generator`` seeded ``seed + r``,
so a row's sample does not depend on the other rows of the batch.

Notation: B batch (rows still generating), T length, V vocab.
Imports: torch only — models and tokenizers are duck-typed, never imported.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from dhian.decoding.cancel import ShouldStop, check_cancel
from dhian.decoding.processors import (
    TOP_P_TOLERANCE,
    apply_repetition_penalty,
    apply_temperature,
    top_k_filter,
    top_p_filter,
)

__all__ = [
    "TOP_P_TOLERANCE",
    "GenerationResult",
    "apply_repetition_penalty",
    "apply_temperature",
    "generate",
    "top_k_filter",
    "top_p_filter",
]


@dataclasses.dataclass
class GenerationResult:
    """One generated continuation.

    ``tokens``: the new ids (a stop token / stop sequence that ended the row is included).
    ``log_probs``: log p(token | context) of each new token under the model itself (raw logits:
    before repetition penalty, temperature and filtering). ``finished_reason``: ``length``
    (max_new_tokens reached), ``stop_token``, ``stop_sequence`` or ``callback`` (``on_token``
    returned True).
    """

    tokens: list[int]
    log_probs: list[float]
    finished_reason: str


# ---- the token loop ------------------------------------------------------------------------------
def _positions(mask: Tensor) -> Tensor:
    """Position ids (B, T) of a left-padded key mask (B, T): 0 at each row's first real token."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T)


def _check_args(
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    temperature: float,
    top_k: int,
    top_p: float,
    repetition_penalty: float,
) -> None:
    if not prompts:
        raise ValueError("generate: no prompts given")
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(
                f"generate: prompt {i} is empty; start it with at least one token (e.g. BOS)"
            )
    if max_new_tokens < 0:
        raise ValueError(f"generate: max_new_tokens must be >= 0, got {max_new_tokens}")
    if temperature < 0.0:
        raise ValueError(f"generate: temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k < 0:
        raise ValueError(f"generate: top_k must be >= 0 (0 = off), got {top_k}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"generate: top_p must be in (0, 1] (1 = off), got {top_p}")
    if repetition_penalty <= 0.0:
        raise ValueError(f"generate: repetition_penalty must be > 0, got {repetition_penalty}")


_MIN_TEMPERATURE = 1e-5  # below this, sampling is argmax in all but name


def _pick(
    scores: Tensor,
    temperature: float,
    top_k: int,
    top_p: float,
    generators: Sequence[torch.Generator | None],
) -> Tensor:
    """Next ids (B,) from processed scores (B, V): argmax when temperature == 0 (or below
    ``_MIN_TEMPERATURE``, where float32 division would give 0/0), else a sample."""
    if temperature < _MIN_TEMPERATURE:
        return scores.max(dim=-1).indices  # the first best, as argmax; faster on a (1, V) row
    # Shift so the best score is 0 before dividing: a tiny temperature then gives 0 / -inf
    # (a one-hot distribution) instead of inf - inf = NaN. Softmax, top-k, top-p are shift-free.
    scores = scores.float() - scores.float().amax(dim=-1, keepdim=True)  # (B, V)
    scores = top_p_filter(top_k_filter(apply_temperature(scores, temperature), top_k), top_p)
    probs = torch.softmax(scores.float(), dim=-1)  # (B, V)
    picks = [
        torch.multinomial(probs[r], 1, generator=g) for r, g in enumerate(generators)
    ]  # B x (1,)
    return torch.cat(picks)  # (B,)


@torch.no_grad()
def generate(
    model: Any,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int = 50,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    stop_token_ids: Sequence[int] = (),
    stop_sequences: Sequence[Sequence[int]] = (),
    seed: int | None = None,
    use_cache: bool = True,
    pad_id: int = 0,
    on_token: Callable[[int, int], bool | None] | None = None,
    should_stop: ShouldStop | None = None,
) -> list[GenerationResult]:
    """Continue each prompt (a list of ids) by up to ``max_new_tokens`` tokens.

    ``temperature == 0`` is greedy (argmax after the repetition penalty); otherwise the scores
    go through repetition penalty → temperature → top-k (0 = off) → top-p (1 = off) and a token
    is sampled. A row stops at a token in ``stop_token_ids``, when its new tokens end with one
    of ``stop_sequences`` (id lists), or when ``on_token(row, token_id)`` (called for every new
    token, for streaming) returns True. ``use_cache`` prefills each prompt once and then feeds
    one token per step; without it every step recomputes the whole context (same result).
    ``pad_id`` only fills the left padding (it is masked out). The model is put in eval mode
    for the call and restored afterwards. ``should_stop`` is checked before every step
    (:mod:`dhian.decoding.cancel`). Returns one :class:`GenerationResult` per prompt.
    """
    _check_args(prompts, max_new_tokens, temperature, top_k, top_p, repetition_penalty)
    n = len(prompts)
    results = [GenerationResult([], [], "length") for _ in range(n)]
    if max_new_tokens == 0:
        return results
    device = next(model.parameters()).device
    block = int(model.block_size)
    stops = {int(t) for t in stop_token_ids}
    seqs = [list(map(int, s)) for s in stop_sequences if len(s) > 0]
    gens: list[torch.Generator | None] = []
    for r in range(n):
        g = None
        if seed is not None:
            g = torch.Generator(device=device)
            g.manual_seed(int(seed) + r)
        gens.append(g)
    width = max(len(p) for p in prompts)
    ids = torch.full((n, width), pad_id, dtype=torch.long, device=device)  # (B, T)
    mask = torch.zeros((n, width), dtype=torch.bool, device=device)  # (B, T)
    for r, p in enumerate(prompts):
        ids[r, width - len(p) :] = torch.tensor(list(p), dtype=torch.long, device=device)
        mask[r, width - len(p) :] = True
    active = list(range(n))  # original row of each batch row
    caches: list[Any] | None = None
    cached = 0  # positions held in the caches
    was_training = model.training
    model.eval()
    try:
        for _ in range(max_new_tokens):
            check_cancel(should_stop)
            total = ids.size(1)
            if use_cache and total <= block and caches is not None and cached > 0:
                inp = ids[:, cached:]  # (B, T_new): the tokens the caches have not seen
                key_mask = mask  # (B, total)
            else:  # first step, no cache, or the context outgrew block_size: recompute a window
                start = max(0, total - block)
                inp = ids[:, start:]  # (B, T_win)
                key_mask = mask[:, start:]  # (B, T_win)
                caches = model.init_caches() if use_cache and total <= block else None
            pos = _positions(key_mask)[:, key_mask.size(1) - inp.size(1) :]  # (B, T_in)
            attn = None if bool(key_mask.all()) else key_mask
            out = model(inp, positions=pos, attention_mask=attn, caches=caches, logits_to_keep=1)
            cached = total if caches is not None else 0
            logits = out.logits[:, -1, :].float()  # (B, V)
            log_probs = torch.log_softmax(logits, dim=-1)  # (B, V)
            scores = apply_repetition_penalty(logits, ids, repetition_penalty, mask)
            nxt = _pick(scores, temperature, top_k, top_p, gens)  # (B,)
            chosen = log_probs.gather(-1, nxt[:, None]).squeeze(-1)  # (B,)
            ids = torch.cat([ids, nxt[:, None]], dim=1)  # (B, T + 1)
            mask = F.pad(mask, (0, 1), value=True)  # (B, T + 1)
            keep: list[int] = []
            for b, row in enumerate(active):
                tok = int(nxt[b])
                res = results[row]
                res.tokens.append(tok)
                res.log_probs.append(float(chosen[b]))
                reason = ""
                if on_token is not None and on_token(row, tok):
                    reason = "callback"
                if tok in stops:
                    reason = "stop_token"
                elif any(res.tokens[-len(s) :] == s for s in seqs):
                    reason = "stop_sequence"
                if reason:
                    res.finished_reason = reason
                else:
                    keep.append(b)
            if not keep:
                break
            if len(keep) < len(active):  # drop finished rows from the batch
                index = torch.tensor(keep, dtype=torch.long, device=device)  # (B',)
                ids, mask = ids[index], mask[index]  # (B', T)
                if caches is not None:
                    for c in caches:
                        c.reorder(index)
                active = [active[b] for b in keep]
                gens = [gens[b] for b in keep]
    finally:
        model.train(was_training)
    return results
