"""Batched beam search over the step interface (:class:`dhian.decoding.base.StepModel`).

Owns :func:`beam_search`. All active sentences × beams form one batch of N = n × k rows: one
``model.step`` call per step, a top-2k over each row's V continuations then over the k × 2k
best of each sentence, one ``model.reorder`` per step (it both follows the surviving beams and
drops finished sentences).
Only the bookkeeping of finished hypotheses is per sentence.

Algorithm (as in fairseq): among the 2k best continuations of a sentence, EOS candidates ranked
in the top k become finished hypotheses; the k best non-EOS candidates are the next beams (there
are always k: a beam has a single EOS continuation). A sentence is done once it has k finished
hypotheses or reached its length limit (where only EOS is allowed, see
:mod:`dhian.decoding.base`). Scores use the GNMT length penalty
``score = log_prob / ((5 + |Y|) / 6) ** alpha`` with ``|Y| = len(tokens) + 1`` (EOS counted).
With ``beam_size=1`` this is exactly greedy decoding.

Notation: B sentences, n active sentences, k beams, N = n × k rows, Ts source length, Tt output
length, V target vocabulary. Imports: torch, :mod:`dhian.decoding.base`.
"""

from __future__ import annotations

import math

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
from dhian.decoding.base import length_penalty as gnmt_penalty
from dhian.decoding.cancel import ShouldStop, check_cancel

__all__ = ["beam_search"]


@torch.no_grad()
def beam_search(
    model: StepModel,
    src: Tensor,
    src_lengths: Tensor,
    beam_size: int = 5,
    length_penalty: float = 1.0,
    max_len: int | None = None,
    max_len_ratio: float = 1.5,
    max_len_offset: int = 10,
    n_best: int = 1,
    need_weights: bool = False,
    should_stop: ShouldStop | None = None,
    no_repeat_ngram: int = 0,
) -> list[list[Hypothesis]]:
    """Beam-search ``src`` (B, Ts) with lengths (B,); per sentence the ``n_best`` best hypotheses.

    Each inner list is sorted by ``score`` (length-penalised, ``length_penalty`` = GNMT alpha;
    0 = raw log-probability), best first. Length limits as in
    :func:`dhian.decoding.greedy_decode`. With ``need_weights`` each hypothesis carries its
    attention (len(tokens) + 1, src_len) on the CPU, when the model returns attention.
    ``no_repeat_ngram`` > 0: no hypothesis repeats an n-gram of that size. The model should be
    in eval mode. ``should_stop`` is checked before every step (:mod:`dhian.decoding.cancel`).
    """
    validate_inputs(model, src, src_lengths)
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    if not 1 <= n_best <= beam_size:
        raise ValueError(f"n_best must be in [1, beam_size={beam_size}], got {n_best}")
    batch, k = src.size(0), beam_size
    if batch == 0:
        return []
    alpha = float(length_penalty)
    device = src.device
    limits = length_limits(src_lengths, max_len, max_len_ratio, max_len_offset)  # (B,) cpu
    max_steps = int(limits.max().item()) + 1
    src_len = src_lengths.detach().cpu().tolist()

    state = model.start(src, src_lengths)
    state = model.reorder(state, torch.arange(batch, device=device).repeat_interleave(k))  # N=B*k
    sent = torch.arange(batch)  # (n,) cpu: original index of each active sentence
    sent_limits = limits.to(device)  # (n,)
    beam_lp = torch.zeros(batch, k, device=device)  # (n, k) summed log-probs of live beams
    beam_lp[:, 1:] = -math.inf  # the first step expands one beam only
    prev = torch.full((batch * k,), model.bos_id, dtype=torch.long, device=device)  # (N,)
    hist = torch.empty(batch * k, 0, dtype=torch.long, device=device)  # (N, t) tokens so far
    hist_attn: Tensor | None = None  # (N, t, Ts)
    have_weights = need_weights
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    col = torch.arange(2 * k, device=device)  # (2k,)

    for t in range(max_steps):
        check_cancel(should_stop)
        n = sent.numel()
        logits, state, attn = model.step(prev, state, have_weights)  # (N, V), ..., (N, Ts)
        vocab = logits.size(-1)
        lp = torch.log_softmax(logits.float(), dim=-1)  # (N, V)
        mask_specials(lp, model.pad_id, model.bos_id, model.eos_id)
        ban_repeated_ngrams(lp, hist, no_repeat_ngram)
        force_eos(lp, (sent_limits <= t).repeat_interleave(k), model.eos_id)
        if have_weights and attn is None:
            have_weights, hist_attn = False, None
        if have_weights:
            assert attn is not None
            step_attn = attn.float()  # (N, Ts)
            if hist_attn is None:
                hist_attn = step_attn.new_zeros(n * k, 0, step_attn.size(-1))  # (N, 0, Ts)

        # The 2k best of a sentence's k x V continuations are among its rows' 2k best each
        # (a beam's score shifts its whole row), so rank k x 2k candidates, not k x V.
        per_row = min(2 * k, vocab)
        row_lp, row_tok = row_topk(lp, per_row)  # (N, w)
        cand = (beam_lp.view(-1, 1) + row_lp).view(n, k * per_row)  # (n, k*w)
        width = min(2 * k, k * per_row)
        top_lp, top_idx = cand.topk(width, dim=1)  # (n, 2k)
        top_beam = torch.div(top_idx, per_row, rounding_mode="floor")  # (n, 2k)
        top_tok = row_tok.view(n, k * per_row).gather(1, top_idx)  # (n, 2k)
        is_eos = top_tok == model.eos_id  # (n, 2k)

        # Finished hypotheses: EOS among the k best candidates (per-sentence bookkeeping).
        fin = is_eos & (col[:width] < k) & torch.isfinite(top_lp)  # (n, 2k)
        if bool(fin.any()):
            top_lp_cpu, top_beam_cpu = top_lp.cpu(), top_beam.cpu()
            for i, j in fin.nonzero().tolist():
                row = i * k + int(top_beam_cpu[i, j])
                toks = hist[row].tolist()
                lp_sum = float(top_lp_cpu[i, j])
                att = None
                if have_weights:
                    assert hist_attn is not None
                    att = torch.cat([hist_attn[row], step_attn[row : row + 1]], dim=0)  # (Tt, Ts)
                    att = att[:, : int(src_len[int(sent[i])])].cpu()  # (Tt, Ts_b)
                score = lp_sum / _lp(len(toks) + 1, alpha)
                finished[int(sent[i])].append(Hypothesis(toks, score, lp_sum, att))

        # Next beams: the k best non-EOS candidates, in score order.
        order = (is_eos.long() * width + col[:width]).argsort(dim=1)[:, :k]  # (n, k)
        new_lp = top_lp.gather(1, order)  # (n, k)
        new_beam = top_beam.gather(1, order)  # (n, k)
        new_tok = top_tok.gather(1, order)  # (n, k)

        n_fin = torch.tensor([len(finished[int(s)]) for s in sent])  # (n,)
        done = (n_fin >= k) | (sent_limits.cpu() <= t)  # (n,)
        keep = (~done).nonzero().squeeze(1)  # (n',) cpu
        if keep.numel() == 0:
            break
        keep_dev = keep.to(device)
        rows = (keep_dev.unsqueeze(1) * k + new_beam[keep_dev]).view(-1)  # (n'*k,)
        state = model.reorder(state, rows)
        prev = new_tok[keep_dev].view(-1)  # (N',)
        hist = torch.cat([hist[rows], prev.unsqueeze(1)], dim=1)  # (N', t+1)
        if have_weights:
            assert hist_attn is not None
            hist_attn = torch.cat([hist_attn[rows], step_attn[rows].unsqueeze(1)], dim=1)
        beam_lp = new_lp[keep_dev]  # (n', k)
        sent, sent_limits = sent[keep], sent_limits[keep_dev]

    out = []
    for hyps in finished:
        hyps.sort(key=lambda h: h.score, reverse=True)
        out.append(hyps[:n_best])
    return out


def _lp(length: int, alpha: float) -> float:
    return gnmt_penalty(length, alpha) if alpha else 1.0
