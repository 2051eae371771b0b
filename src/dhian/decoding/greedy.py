"""Batched greedy decoding over the step interface (:class:`dhian.decoding.base.StepModel`).

Owns :func:`greedy_decode`. Every step is one ``model.step`` call for all unfinished sentences;
a sentence that emits EOS leaves the active batch (``model.reorder`` drops its row), and the loop
ends as soon as every sentence has finished or reached its length limit.

Notation: B sentences, N active rows, Ts source length, V target vocabulary.
Imports: torch, :mod:`dhian.decoding.base`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from dhian.decoding.base import (
    Hypothesis,
    StepModel,
    ban_repeated_ngrams,
    force_eos,
    length_limits,
    mask_specials,
    row_topk,
    validate_inputs,
)
from dhian.decoding.cancel import ShouldStop, check_cancel

__all__ = ["greedy_decode"]


@torch.no_grad()
def greedy_decode(
    model: StepModel,
    src: Tensor,
    src_lengths: Tensor,
    max_len: int | None = None,
    max_len_ratio: float = 1.5,
    max_len_offset: int = 10,
    need_weights: bool = False,
    should_stop: ShouldStop | None = None,
    no_repeat_ngram: int = 0,
) -> list[Hypothesis]:
    """Decode ``src`` (B, Ts) with lengths (B,) greedily; one :class:`Hypothesis` per sentence.

    The model should be in eval mode. At most ``max_len`` tokens per sentence (or
    ``floor(max_len_ratio * src_len + max_len_offset)`` when ``max_len`` is None); PAD and BOS are
    never generated. ``score == log_prob`` (no length penalty). With ``need_weights`` each
    hypothesis carries its attention (len(tokens) + 1, src_len) on the CPU, when the model
    returns attention. ``should_stop`` is checked before every step (:mod:`dhian.decoding.cancel`).
    ``no_repeat_ngram`` > 0 never repeats an n-gram of that size.
    """
    validate_inputs(model, src, src_lengths)
    batch = src.size(0)
    if batch == 0:
        return []
    device = src.device
    limits = length_limits(src_lengths, max_len, max_len_ratio, max_len_offset)  # (B,) cpu
    max_steps = int(limits.max().item()) + 1  # the last step can only emit EOS

    state = model.start(src, src_lengths)
    alive = torch.arange(batch)  # (N,) cpu: original sentence of each active row
    alive_dev = alive.to(device)  # (N,)
    row_limits = limits.to(device)  # (N,)
    prev = torch.full((batch,), model.bos_id, dtype=torch.long, device=device)  # (N,)

    tokens = torch.full((batch, max_steps), model.eos_id, dtype=torch.long, device=device)
    log_prob = torch.zeros(batch, device=device)  # (B,)
    out_len = torch.zeros(batch, dtype=torch.long)  # (B,) tokens before EOS
    weights: Tensor | None = None  # (B, max_steps, Ts)
    have_weights = need_weights

    for t in range(max_steps):
        check_cancel(should_stop)
        logits, state, attn = model.step(prev, state, need_weights)  # (N, V), ..., (N, Ts)
        lp = torch.log_softmax(logits.float(), dim=-1)  # (N, V)
        mask_specials(lp, model.pad_id, model.bos_id, model.eos_id)
        ban_repeated_ngrams(lp, tokens[alive_dev, :t], no_repeat_ngram)
        force_eos(lp, row_limits <= t, model.eos_id)
        best, tok = (x[:, 0] for x in row_topk(lp, 1))  # (N,), (N,)
        tokens[alive_dev, t] = tok
        log_prob[alive_dev] += best
        if have_weights:
            if attn is None:
                have_weights = False
            else:
                if weights is None:
                    weights = torch.zeros(batch, max_steps, attn.size(-1), device=device)
                weights[alive_dev, t] = attn.float()

        finished = (tok == model.eos_id).cpu()  # (N,)
        if bool(finished.any()):
            out_len[alive[finished]] = t
            keep = (~finished).nonzero().squeeze(1)  # (N',)
            if keep.numel() == 0:
                break
            keep_dev = keep.to(device)
            state = model.reorder(state, keep_dev)
            alive, alive_dev = alive[keep], alive_dev[keep_dev]
            row_limits, tok = row_limits[keep_dev], tok[keep_dev]
        prev = tok

    tokens_cpu = tokens.cpu()
    log_prob_cpu = log_prob.cpu().tolist()
    src_len = src_lengths.detach().cpu().tolist()
    weights_cpu = weights.cpu() if (have_weights and weights is not None) else None
    hyps = []
    for b in range(batch):
        n = int(out_len[b])
        att = None
        if weights_cpu is not None:
            att = weights_cpu[b, : n + 1, : int(src_len[b])].clone()  # (Tt, Ts_b)
        lpb = float(log_prob_cpu[b])
        hyps.append(Hypothesis(tokens_cpu[b, :n].tolist(), lpb, lpb, att))
    return hyps
