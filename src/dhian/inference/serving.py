"""Model-kind dispatch and batched inference on a loaded model, for the server and the CLI.

Owns which endpoints a model kind supports (:func:`model_family`, :func:`endpoints_for`), the
source encoding of translation models (:func:`encode_sources`: truncation to ``data.max_len``
and the model's positions), and the batch entry points the server's worker calls:
:func:`translate_texts` (greedy or beam, B sentences in one decoder batch, through
:func:`dhian.decoding.translate.translate_texts`),
:func:`classify_texts`, :func:`generate_one`, :func:`fill_mask_one`.

Every function takes a :class:`~dhian.models.io.LoadedModel`; errors are one-line
:class:`~dhian.errors.DhianError` subclasses. Notation: B batch, Ts source length.
:func:`pad_rows` is :func:`dhian.decoding.translate.pad_rows`, re-exported.
Imports: torch, :mod:`dhian.decoding`, :mod:`dhian.models` (io, bert_heads), :mod:`dhian.errors`,
:mod:`dhian.inference.display_tokens`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from dhian.errors import ConfigError, DataError
from dhian.inference.display_tokens import display_tokens
from dhian.inference.translate import pad_rows
from dhian.models.families import family_of
from dhian.models.model_dir import LoadedModel

__all__ = [
    "ENDPOINTS",
    "classify_texts",
    "encode_sources",
    "endpoints_for",
    "fill_mask_one",
    "generate_one",
    "has_attention",
    "input_limit",
    "model_device",
    "model_family",
    "model_type",
    "pad_rows",
    "source_limit",
    "translate_texts",
]

#: The task endpoint of each model kind (every kind with attention also has /attention).
ENDPOINTS = {
    "translation": "/translate",
    "classification": "/classify",
    "lm": "/generate",
    "mlm": "/fill-mask",
}


def model_type(loaded: LoadedModel) -> str:
    """``model.type`` of the loaded config (``rnnsearch``, ``bert``, ``gpt``, ...)."""
    return str(getattr(loaded.config.model, "type", type(loaded.model).__name__))


def model_family(loaded: LoadedModel) -> str:
    """The kind of network (:data:`dhian.models.families.KINDS`): ``seq2seq`` | ``encoder``
    (BERT) | ``classifier`` (Keras-style) | ``causal_lm`` (GPT)."""
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


def input_limit(model: torch.nn.Module) -> tuple[int, str]:
    """(most input tokens, too-long policy) of an encoder model (BERT or Keras-style)."""
    inner = getattr(model, "backbone", model)
    limit = getattr(inner, "max_positions", None) or getattr(model, "max_len", None)
    if limit is None:
        raise DataError(f"{type(model).__name__} does not say its maximum input length")
    return int(limit), str(getattr(inner, "too_long", getattr(model, "too_long", "truncate")))


# --------------------------------------------------------------------------- translation


def source_limit(loaded: LoadedModel) -> int | None:
    """Most source tokens a translation model takes: ``data.max_len`` and its positions."""
    limits = [int(loaded.config.data.max_len)] if loaded.config.data.max_len > 0 else []
    positions = getattr(loaded.model, "max_positions", None)
    if positions:
        limits.append(int(positions))
    return min(limits) if limits else None


def encode_sources(loaded: LoadedModel, texts: Sequence[str]) -> tuple[list[list[int]], list[bool]]:
    """Source ids of each text (no BOS/EOS, as in training) cut to :func:`source_limit`, and
    whether each was truncated."""
    tok = loaded.tokenizers["src"]
    limit = source_limit(loaded)
    rows = tok.encode_batch(list(texts))
    cut = [limit is not None and len(r) > limit for r in rows]
    return [r[:limit] if limit is not None else r for r in rows], cut


def translate_texts(
    loaded: LoadedModel,
    texts: Sequence[str],
    beam: int = 1,
    length_penalty: float | None = None,
) -> list[dict[str, Any]]:
    """Translate B texts as one decoder batch (greedy for ``beam == 1``, else beam search) with
    :func:`dhian.decoding.translate.translate_texts`, sources cut to :func:`source_limit`.

    Returns per text the ``/translate`` result: ``{"source", "translation", "tokens"`` (display
    tokens, EOS excluded), ``"log_prob"`` (of tokens + EOS under the model), ``"truncated"}``.
    Empty sources translate to ``""`` without running the model. ``length_penalty`` defaults
    to the model's ``train.eval_length_penalty`` (GNMT alpha, beam search only).
    """
    from dhian.inference.translate import translate_texts as decode_texts

    if loaded.kind != "translation":
        raise DataError(f"translation needs a translation model, this one is {loaded.kind!r}")
    if beam < 1:
        raise DataError(f"beam must be >= 1, got {beam}")
    alpha = length_penalty
    if alpha is None:
        alpha = float(getattr(loaded.config.train, "eval_length_penalty", 1.0))
    tgt = loaded.tokenizers["tgt"]
    found = decode_texts(
        loaded,
        texts,
        beam=beam,
        length_penalty=alpha,
        batch_size=max(len(texts), 1),
        max_src_len=source_limit(loaded),
    )
    return [
        {
            "source": tr.source,
            "translation": tr.text,
            "tokens": display_tokens(tgt, tr.ids),
            "log_prob": 0.0 if tr.log_prob is None else tr.log_prob,
            "truncated": tr.truncated,
        }
        for tr in found
    ]


# --------------------------------------------------------------------------- other tasks


def classify_texts(loaded: LoadedModel, texts: Sequence[str]) -> list[dict[str, Any]]:
    """``[{"text", "label", "probs": {name: p}}]`` for B texts, run as one batch."""
    from dhian.models.bert.heads import classify

    if loaded.kind != "classification":
        raise DataError(f"classification needs a classifier, this one is {loaded.kind!r}")
    results = classify(loaded.model, loaded.tokenizers["src"], list(texts), max(len(texts), 1))
    return [
        {"text": t, "label": r.label, "probs": r.probs} for t, r in zip(texts, results, strict=True)
    ]


def generate_one(
    loaded: LoadedModel,
    prompt: str,
    max_new_tokens: int = 50,
    temperature: float = 0.8,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
) -> str:
    """The continuation of ``prompt`` by a causal LM (prompt not included)."""
    from dhian.decoding.sampling import generate_text

    if loaded.kind != "lm":
        raise DataError(f"generation needs a language model, this one is {loaded.kind!r}")
    tok = loaded.tokenizers.get("tgt") or loaded.tokenizers["src"]
    return generate_text(
        loaded.model,
        tok,
        [prompt],
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
    )[0]


def fill_mask_one(loaded: LoadedModel, text: str, top_k: int = 5) -> list[list[dict[str, Any]]]:
    """For each mask token of ``text``: the ``top_k`` ``{"token", "prob"}``, most probable first."""
    from dhian.models.bert.heads import fill_mask

    if loaded.kind != "mlm":
        raise DataError(f"fill-mask needs a masked-LM model, this one is {loaded.kind!r}")
    tok = loaded.tokenizers["src"]
    return [
        [{"token": t, "prob": p} for t, p in top]
        for top in fill_mask(loaded.model, tok, text, top_k)
    ]
