"""Output records of the model families: logits plus attention weights when asked for.

Owns the dataclasses models return from ``forward``; attention weights travel here (return
values), never as module state. Families add their own record here when none fits.

Notation: B batch, T/Ts/Tt lengths, H heads, E model dim, V vocab, C classes.
Imports: torch only.
"""

from __future__ import annotations

import dataclasses

from torch import Tensor

__all__ = [
    "ClassifierOutput",
    "EncoderOutput",
    "LMOutput",
    "Seq2SeqOutput",
    "SpanOutput",
    "TokenClassifierOutput",
]


@dataclasses.dataclass
class Seq2SeqOutput:
    """Translation model output.

    ``logits`` (B, Tt, V): scores of the next target token at every position of ``tgt_in``.
    ``attention``: cross attention when asked for — (B, Tt, Ts) for RNNs, a list (one per decoder
    layer) of (B, H, Tt, Ts) for transformers — else ``None``.
    """

    logits: Tensor
    attention: Tensor | list[Tensor] | None = None


@dataclasses.dataclass
class LMOutput:
    """Language model output: ``logits`` (B, T, V) and, when asked for, self attention per layer
    ``attention`` list of (B, H, T, T), else ``None``."""

    logits: Tensor
    attention: list[Tensor] | None = None


@dataclasses.dataclass
class EncoderOutput:
    """Encoder output: ``hidden`` (B, T, E) and, when asked for, self attention per layer
    ``attention`` list of (B, H, T, T), else ``None``."""

    hidden: Tensor
    attention: list[Tensor] | None = None


@dataclasses.dataclass
class ClassifierOutput:
    """Sequence classifier output: ``logits`` (B, C) and, when asked for, ``attention`` (a list
    of (B, H, T, T) per layer, or (B, T) pooling weights), else ``None``."""

    logits: Tensor
    attention: Tensor | list[Tensor] | None = None


@dataclasses.dataclass
class TokenClassifierOutput:
    """Token classifier output: ``logits`` (B, T, C), one row of class scores per token, and,
    when asked for, self attention per layer ``attention`` list of (B, H, T, T), else ``None``."""

    logits: Tensor
    attention: list[Tensor] | None = None


@dataclasses.dataclass
class SpanOutput:
    """Extractive QA output: ``start_logits`` and ``end_logits`` (B, T), the scores of each
    token as the first / last token of the answer, and, when asked for, self attention per
    layer ``attention`` list of (B, H, T, T), else ``None``."""

    start_logits: Tensor
    end_logits: Tensor
    attention: list[Tensor] | None = None
