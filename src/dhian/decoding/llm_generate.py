"""Generation for decoder-only LLMs with a static KV cache (the LLaMA family): prefill, then one
token per step.

Owns :func:`prefill`, :func:`decode_one_token` and the token loop :func:`llm_generate`; the text
wrapper (stop strings, streaming) is :func:`dhian.inference.generate.llm_generate_text`. The
logits processors (repetition penalty → temperature → top-k → top-p; temperature 0 = greedy)
are those of :mod:`dhian.decoding.sampling`.

The model has the interface of :class:`dhian.models.llama.LlamaModel`:
``model(ids (B, T), positions (B, T), cache, attn_mask (B, S) bool, logits_to_keep=1)``
returning ``(logits (B, 1, V), None)``, ``model.new_cache(B, Tmax)`` and ``model.cfg.max_seq_len``.

Batching: prompts are left-padded to the longest; the key mask (B, S) hides the pads in every
step and each row's RoPE positions start at 0 on its first real token, so a row generates what
it would alone (up to float rounding). Rows that stop keep their slot (static shapes) and are
ignored. Per step: one model call with static shapes (the cache is written at a slot given as a
tensor, the key mask covers the whole cache), logits of the last position only; the prompt is
prefilled in chunks of :data:`PREFILL_CHUNK` tokens. Notation: B batch, T prompt width, S key slots so far, V vocab.
Compiled decoding (opt-in): a :class:`~dhian.decoding.compiled_step.CompiledDecoder` given
as ``compiled`` picks the step (compiled or eager) and the cache length (rounded up to its
bucket when compiled; the extra slots stay masked).
Imports: torch, :mod:`dhian.decoding.sampling`, :mod:`dhian.decoding.processors`,
:mod:`dhian.decoding.compiled_step`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from dhian.decoding.cancel import ShouldStop, check_cancel
from dhian.decoding.compiled_step import CompiledDecoder
from dhian.decoding.processors import apply_repetition_penalty
from dhian.decoding.sampling import GenerationResult, _check_args, _pick

__all__ = ["decode_one_token", "llm_generate", "prefill"]


#: prompt tokens per prefill forward (bounds the (B, H, chunk, S) scores and (B, chunk, F)
#: MLP activations of long prompts; each chunk attends to the cache of the earlier ones)
PREFILL_CHUNK = 256


def prefill(
    model: Any, ids: Tensor, key_mask: Tensor | None, cache: Any, chunk: int = PREFILL_CHUNK
) -> Tensor:
    """Run the left-padded prompts ``ids`` (B, T) into the empty ``cache``, ``chunk`` tokens per
    forward; ``key_mask`` (B, T) bool (True = real token, ``None`` = no padding). Returns the
    last position's logits (B, V)."""
    positions = (
        torch.arange(ids.size(1), device=ids.device).expand_as(ids)
        if key_mask is None
        else (key_mask.long().cumsum(-1) - 1).clamp(min=0)
    )  # (B, T): 0 at each row's first real token
    t = ids.size(1)
    logits = ids.new_empty(0)
    for start in range(0, t, max(1, chunk)):
        end = min(t, start + max(1, chunk))
        logits, _ = model(
            ids[:, start:end],
            positions[:, start:end],
            cache=cache,
            attn_mask=None if key_mask is None else key_mask[:, :end],
            logits_to_keep=1,
        )
    return logits[:, -1].float()  # (B, V)


def decode_one_token(
    model: Any, token: Tensor, positions: Tensor, key_mask: Tensor | None, cache: Any
) -> Tensor:
    """Feed one token per row: ``token`` (B, 1) at ``positions`` (B, 1); ``key_mask`` (B, S)
    over every slot including this one. Returns the logits (B, V)."""
    logits, _ = model(token, positions, cache=cache, attn_mask=key_mask, logits_to_keep=1)
    return logits[:, -1].float()  # (B, V)


@torch.no_grad()
def llm_generate(
    model: Any,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    stop_token_ids: Sequence[int] = (),
    seed: int | None = None,
    pad_id: int = 0,
    on_token: Callable[[int, int], bool | None] | None = None,
    should_stop: ShouldStop | None = None,
    step_fn: Callable[..., Tensor] | None = None,
    compiled: CompiledDecoder | None = None,
) -> list[GenerationResult]:
    """Continue each prompt (ids) by up to ``max_new_tokens`` tokens; one
    :class:`~dhian.decoding.sampling.GenerationResult` per prompt.

    A row stops at a token in ``stop_token_ids`` or when ``on_token(row, token)`` returns
    True, and raises :class:`~dhian.decoding.cancel.Cancelled` before a step when
    ``should_stop()`` is True. ``seed``: row r samples with its own generator seeded ``seed + r``.
    The arguments mean what they mean in :func:`dhian.decoding.sampling.generate`. Decoding steps
    use the model's static-shape ``decode_step(token, positions, slot, key_mask, cache)`` when it
    has one (``step_fn`` replaces it, e.g. a ``torch.compile``d version,
    :func:`dhian.decoding.compiled_step.compiled_decode_step`), else :func:`decode_one_token`.
    ``compiled`` (ignored when ``step_fn`` is given) decides per call whether to use its
    compiled step (:meth:`~dhian.decoding.compiled_step.CompiledDecoder.plan`).
    """
    _check_args(prompts, max_new_tokens, temperature, top_k, top_p, repetition_penalty)
    n = len(prompts)
    results = [GenerationResult([], [], "length") for _ in range(n)]
    if max_new_tokens == 0:
        return results
    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    total = width + max_new_tokens
    if total > int(model.cfg.max_seq_len):
        raise ValueError(
            f"llm_generate: prompt width {width} + max_new_tokens {max_new_tokens} exceeds the "
            f"model's context {model.cfg.max_seq_len}; shorten the prompt or generate less"
        )
    static = step_fn if step_fn is not None else getattr(model, "decode_step", None)
    slots = total  # cache length: prompt + new tokens, or the compiled step's bucket
    if compiled is not None and step_fn is None and static is not None:
        planned, slots = compiled.plan(n, total, max_new_tokens)
        static = planned if planned is not None else static
    ids = torch.full((n, slots), pad_id, dtype=torch.long, device=device)  # (B, Tmax)
    mask = torch.zeros((n, slots), dtype=torch.bool, device=device)  # (B, Tmax)
    for r, p in enumerate(prompts):
        ids[r, width - len(p) : width] = torch.tensor(list(p), dtype=torch.long, device=device)
        mask[r, width - len(p) : width] = True
    padded = not bool(mask[:, :width].all())
    gens: list[torch.Generator | None] = []
    for r in range(n):
        g = None
        if seed is not None:
            g = torch.Generator(device=device)
            g.manual_seed(int(seed) + r)
        gens.append(g)
    stops = {int(t) for t in stop_token_ids}
    cache = model.new_cache(n, slots)
    was_training = model.training
    model.eval()
    try:
        logits = prefill(model, ids[:, :width], mask[:, :width] if padded else None, cache)
        positions = mask[:, :width].long().sum(-1, keepdim=True)  # (B, 1): next position
        done = [False] * n
        for step in range(max_new_tokens):
            check_cancel(should_stop)
            s = width + step  # slot of the token being chosen
            lse = torch.logsumexp(logits, dim=-1)  # (B,): log-probs without writing (B, V)
            scores = apply_repetition_penalty(logits, ids[:, :s], repetition_penalty, mask[:, :s])
            nxt = _pick(scores, temperature, top_k, top_p, gens)  # (B,)
            chosen = logits.gather(-1, nxt[:, None]).squeeze(-1) - lse  # (B,) log-prob
            ids[:, s] = nxt
            mask[:, s] = True
            picked, picked_lp = nxt.tolist(), chosen.tolist()  # one host copy each, not B
            for r in range(n):
                if done[r]:
                    continue
                tok = picked[r]
                res = results[r]
                res.tokens.append(tok)
                res.log_probs.append(picked_lp[r])
                reason = ""
                if on_token is not None and on_token(r, tok):
                    reason = "callback"
                if tok in stops:
                    reason = "stop_token"
                if reason:
                    res.finished_reason = reason
                    done[r] = True
            if all(done) or step == max_new_tokens - 1:
                break
            if static is not None:  # static shapes: the whole (B, Tmax) mask, slot s
                slot = torch.full((1,), s, dtype=torch.long, device=device)
                token = ids[:, s : s + 1].clone(memory_format=torch.contiguous_format)  # (B, 1)
                logits = static(token, positions, slot, mask, cache)
                cache.length = s + 1
            else:
                logits = decode_one_token(
                    model, ids[:, s : s + 1], positions, mask[:, : s + 1] if padded else None, cache
                )
            positions = positions + 1
    finally:
        model.train(was_training)
    return results
