"""The decoding step protocol, the :class:`Hypothesis` record and helpers shared by searches.

Owns: :class:`StepModel` (what a translation model must offer to be decoded: ``start``, ``step``,
``reorder`` and the ints ``pad_id``/``bos_id``/``eos_id``), :class:`Hypothesis`, the per-sentence
length limit, the special-token mask, the end-of-sentence forcing at the limit, the
repetition guard (:func:`ban_repeated_ngrams`, fairseq's ``no_repeat_ngram_size``) and
:func:`row_topk`, the searches' per-row top-k over the vocabulary.

Length convention: a hypothesis holds at most ``limit`` tokens (BOS and EOS excluded). At step
``t`` (``t`` tokens already generated) a sentence whose limit is ``t`` may only emit EOS, so every
returned hypothesis ends with a scored EOS and ``log_prob`` always includes ``log p(EOS)``.

Notation: B sentences, N decoder rows (sentences × beams), Ts source length, Tt output length,
V target vocabulary. Imports: torch only (models are reached through the protocol, never imported).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = [
    "Hypothesis",
    "StepModel",
    "ban_repeated_ngrams",
    "force_eos",
    "length_limits",
    "length_penalty",
    "mask_specials",
    "row_topk",
    "validate_inputs",
]


@runtime_checkable
class StepModel(Protocol):
    """What decoding needs from a model (see docs/design.md, "Seq2seq models").

    - ``start(src (B, Ts) long, src_lengths (B,) long) -> state``: runs the encoder once.
    - ``step(prev (N,) long, state, need_weights) -> (logits (N, V), state, attn (N, Ts) | None)``:
      one decoder step for every row of ``state``.
    - ``reorder(state, index (N',) long) -> state``: keep/duplicate/permute rows (beam search,
      dropping finished sentences).
    """

    pad_id: int
    bos_id: int
    eos_id: int

    def start(self, src: Tensor, src_lengths: Tensor) -> Any:
        """Encode ``src`` (B, Ts) with lengths (B,); return the decoder state of B rows."""
        ...

    def step(
        self, prev: Tensor, state: Any, need_weights: bool = False
    ) -> tuple[Tensor, Any, Tensor | None]:
        """Feed ``prev`` (N,); return logits (N, V), the next state, attention (N, Ts) or None."""
        ...

    def reorder(self, state: Any, index: Tensor) -> Any:
        """Select rows ``index`` (N',) of ``state``."""
        ...


@dataclasses.dataclass
class Hypothesis:
    """One decoded output.

    ``tokens``: generated ids without BOS/EOS. ``log_prob``: sum of the model's log-probabilities
    of ``tokens`` followed by EOS. ``score``: ``log_prob`` divided by the length penalty (equal to
    ``log_prob`` for greedy decoding and for ``length_penalty=0``). ``attention``: (Tt, Ts) with
    ``Tt = len(tokens) + 1`` (one row per token, then EOS) and ``Ts`` the sentence's true source
    length, or ``None`` when not asked for or the model has no attention.
    """

    tokens: list[int]
    score: float
    log_prob: float
    attention: Tensor | None = None


def length_limits(
    src_lengths: Tensor, max_len: int | None, max_len_ratio: float, max_len_offset: int
) -> Tensor:
    """Per-sentence maximum number of output tokens (B,) long (CPU).

    ``max_len`` (when given) is the same cap for every sentence; otherwise the cap is
    ``floor(max_len_ratio * src_len + max_len_offset)``.
    """
    lengths = src_lengths.detach().to("cpu", torch.long)  # (B,)
    if max_len is not None:
        if max_len < 0:
            raise ValueError(f"max_len must be >= 0, got {max_len}")
        return torch.full_like(lengths, int(max_len))
    limits = torch.floor(lengths.double() * float(max_len_ratio) + float(max_len_offset)).long()
    return limits.clamp_(min=0)


def length_penalty(length: int, alpha: float) -> float:
    """GNMT length penalty ``((5 + length) / 6) ** alpha`` (Wu et al., 2016)."""
    return ((5.0 + length) / 6.0) ** alpha


def mask_specials(log_probs: Tensor, pad_id: int, bos_id: int, eos_id: int) -> Tensor:
    """Forbid PAD and BOS (unless equal to EOS) in ``log_probs`` (N, V); returns it (in place)."""
    for special in {pad_id, bos_id} - {eos_id}:
        if 0 <= special < log_probs.size(-1):
            log_probs[:, special] = -math.inf
    return log_probs


def ban_repeated_ngrams(log_probs: Tensor, history: Tensor, n: int) -> Tensor:
    """Forbid, per row, every token that would repeat an ``n``-gram already in that row's
    ``history`` (N, t) of generated tokens; returns ``log_probs`` (N, V) (in place). ``n`` <= 0
    is off; EOS is never in a history, so a row can always end."""
    t = history.size(1)
    if n <= 0 or t < n:  # (t < n: no complete n-gram yet, so none can repeat)
        return log_probs
    grams = history.unfold(1, n, 1)  # (N, t - n + 1, n)
    prefix = history[:, t - n + 1 :]  # (N, n - 1): the n-gram now being completed
    hit = (grams[:, :, : n - 1] == prefix[:, None, :]).all(dim=-1)  # (N, t - n + 1)
    rows, at = hit.nonzero(as_tuple=True)
    log_probs[rows, grams[rows, at, n - 1]] = -math.inf
    return log_probs


def force_eos(log_probs: Tensor, rows: Tensor, eos_id: int) -> Tensor:
    """Make rows ``rows`` (N,) bool of ``log_probs`` (N, V) able to emit only EOS (in place)."""
    if bool(rows.any()):
        eos = log_probs[rows, eos_id].clone()  # (n,)
        log_probs[rows] = -math.inf
        log_probs[rows, eos_id] = eos
    return log_probs


def row_topk(scores: Tensor, k: int, chunk: int = 256) -> tuple[Tensor, Tensor]:
    """The ``k`` largest values of each row of ``scores`` (N, V), best first, and their columns
    (N, k): ``torch.topk(scores, k, dim=1)`` (ties may come in another order), in two stages.

    torch's CPU ``topk`` (and ``max`` with indices) over V = 58,101 columns costs 5-7x a plain
    ``amax`` pass, so the columns are cut into chunks of ``chunk``: the k best of a row lie in
    the k chunks with the largest maxima (a chunk outside them has k chunk maxima above its
    own, i.e. k larger values elsewhere), so one ``amax`` over all chunks, a top-k over the
    chunk maxima and a top-k over the k x ``chunk`` candidates (plus the columns that do not
    fill a whole chunk) give the same values. Narrow rows (k or fewer chunks) use ``topk``.
    """
    n, v = scores.shape
    c = v // chunk
    if c <= 2 * k:
        return scores.topk(k, dim=1)
    body = scores[:, : c * chunk].view(n, c, chunk)  # (N, C, S)
    best = body.amax(dim=2).topk(k, dim=1).indices  # (N, k) chunk ids
    cand = body.gather(1, best[:, :, None].expand(n, k, chunk)).view(n, k * chunk)  # (N, kS)
    offsets = torch.arange(chunk, device=scores.device)  # (S,)
    cols = (best[:, :, None] * chunk + offsets).view(n, k * chunk)  # (N, kS)
    if c * chunk < v:  # the last, partial chunk is always a candidate
        tail = torch.arange(c * chunk, v, device=scores.device).expand(n, v - c * chunk)
        cand = torch.cat([cand, scores[:, c * chunk :]], dim=1)  # (N, kS + R)
        cols = torch.cat([cols, tail], dim=1)  # (N, kS + R)
    values, pos = cand.topk(k, dim=1)  # (N, k)
    return values, cols.gather(1, pos)


def validate_inputs(model: Any, src: Tensor, src_lengths: Tensor) -> None:
    """Check the shapes of ``src`` (B, Ts) and ``src_lengths`` (B,) and the model's special ids."""
    for name in ("pad_id", "bos_id", "eos_id", "start", "step", "reorder"):
        if not hasattr(model, name):
            raise TypeError(
                f"decoding needs a model with start/step/reorder and pad_id/bos_id/eos_id; "
                f"{type(model).__name__} has no {name!r}"
            )
    if src.dim() != 2 or src_lengths.dim() != 1 or src_lengths.numel() != src.size(0):
        raise ValueError(
            f"expected src (B, Ts) and src_lengths (B,), got {tuple(src.shape)} and "
            f"{tuple(src_lengths.shape)}"
        )
