"""Decoding over the step interface: batched greedy and beam search.

Owns the search algorithms; works on any model with ``start``/``step``/``reorder`` and
``pad_id``/``bos_id``/``eos_id`` (RNN seq2seq, KV-cached transformers), see
:class:`dhian.decoding.base.StepModel` and docs/design.md. Imports: torch only — never models.
"""

from __future__ import annotations

from dhian.decoding.base import Hypothesis, StepModel, length_limits, length_penalty
from dhian.decoding.beam import beam_search
from dhian.decoding.cancel import Cancelled, ShouldStop, check_cancel
from dhian.decoding.greedy import greedy_decode
from dhian.decoding.sampling import GenerationResult, generate

__all__ = [
    "Cancelled",
    "GenerationResult",
    "Hypothesis",
    "ShouldStop",
    "StepModel",
    "beam_search",
    "check_cancel",
    "generate",
    "greedy_decode",
    "length_limits",
    "length_penalty",
]
