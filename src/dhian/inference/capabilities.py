"""What a loaded model is and what it serves, read from its family record.

Owns :func:`model_type`, :func:`model_family` (the record's ``kind``), :func:`has_attention`
(the record's ``attention_types``), :func:`endpoints_for` (the HTTP endpoints of its task) and
:func:`model_device`. Imports: torch, :mod:`dhian.models` (families, model_dir),
:mod:`dhian.errors`.
"""

from __future__ import annotations

import torch

from dhian.errors import ConfigError, DataError
from dhian.models.families import family_of
from dhian.models.model_dir import LoadedModel

__all__ = [
    "ENDPOINTS",
    "endpoints_for",
    "has_attention",
    "model_device",
    "model_family",
    "model_type",
]

#: The task endpoint of each model kind (every kind with attention also has /attention).
ENDPOINTS = {
    "translation": "/translate",
    "classification": "/classify",
    "lm": "/generate",
    "mlm": "/fill-mask",
    "token_classification": "/tag",
    "question_answering": "/answer",
}


def model_type(loaded: LoadedModel) -> str:
    """``model.type`` of the loaded config (``rnnsearch``, ``bert``, ``gpt``, ...)."""
    return str(getattr(loaded.config.model, "type", type(loaded.model).__name__))


def model_family(loaded: LoadedModel) -> str:
    """The kind of network (:data:`dhian.models.families.KINDS`): ``seq2seq`` | ``encoder``
    (BERT) | ``classifier`` (Keras-style) | ``causal_lm`` (GPT, LLaMA)."""
    try:
        return family_of(model_type(loaded)).kind
    except ConfigError as exc:
        raise DataError(f"dhian cannot serve or inspect model.type {model_type(loaded)!r}") from exc


def has_attention(loaded: LoadedModel) -> bool:
    """Whether the model exposes attention weights (its family record says so per type)."""
    mtype = model_type(loaded)
    try:
        return family_of(mtype).has_attention(mtype)
    except ConfigError:
        return False


def endpoints_for(loaded: LoadedModel) -> list[str]:
    """The POST endpoints that fit this model, e.g. ``["/translate", "/attention"]``."""
    out = [ENDPOINTS[loaded.kind]] if loaded.kind in ENDPOINTS else []
    if has_attention(loaded):
        out.append("/attention")
    return out


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's parameters."""
    return next(model.parameters()).device


# --------------------------------------------------------------------------- translation
