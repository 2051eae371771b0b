"""Fill-mask with a loaded BERT masked LM: the most probable tokens for each mask token.

Owns :func:`fill_mask` (a model + tokenizer) and :func:`fill_mask_one` (a
:class:`~dhian.models.model_dir.LoadedModel`: the server's entry point).
Notation: T length, M mask tokens, V vocab. Imports: torch, :mod:`dhian.inference.encode`,
:mod:`dhian.models` (bert heads, model_dir), :mod:`dhian.errors`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dhian.errors import DataError
from dhian.inference.encode import encode_texts, input_limit
from dhian.models.bert.heads import BertForMaskedLM
from dhian.models.model_dir import LoadedModel

__all__ = ["fill_mask", "fill_mask_one"]


@torch.no_grad()
def fill_mask(
    model: nn.Module, tokenizer: Any, text: str, top_k: int = 5
) -> list[list[tuple[str, float]]]:
    """Top-``top_k`` (token, probability) for each [MASK] of ``text``, most probable first.

    One list per mask token, in text order. Probabilities are the softmax over the whole
    vocabulary, so each list sums to at most 1.
    """
    if not isinstance(model, BertForMaskedLM):
        raise DataError(
            f"fill-mask needs a BERT masked-LM model, got {type(model).__name__} "
            "(import an MLM checkpoint or train with model.task=mlm)"
        )
    if top_k < 1:
        raise DataError(f"top_k must be at least 1, got {top_k}")
    max_len, too_long = input_limit(model)
    ids, types, lengths = encode_texts(tokenizer, [text], max_len, too_long)
    where = (ids[0, : int(lengths[0])] == int(tokenizer.mask_id)).nonzero().flatten()  # (M,)
    if where.numel() == 0:
        mask_tok = tokenizer.id_to_token(int(tokenizer.mask_id))
        raise DataError(f"no {mask_tok} token in the (possibly truncated) text: {text!r}")
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        logits = model(ids.to(device), lengths.to(device), types.to(device)).logits  # (1, T, V)
    finally:
        model.train(was_training)
    probs = torch.softmax(logits[0, where.to(device)].float(), dim=-1)  # (M, V)
    top = probs.topk(min(top_k, probs.size(-1)), dim=-1)  # (M, k)
    return [
        [(tokenizer.id_to_token(int(i)), float(p)) for p, i in zip(ps, ix, strict=True)]
        for ps, ix in zip(top.values.cpu(), top.indices.cpu(), strict=True)
    ]


def fill_mask_one(loaded: LoadedModel, text: str, top_k: int = 5) -> list[list[dict[str, Any]]]:
    """For each mask token of ``text``: the ``top_k`` ``{"token", "prob"}``, most probable first."""
    if loaded.kind != "mlm":
        raise DataError(f"fill-mask needs a masked-LM model, this one is {loaded.kind!r}")
    tok = loaded.tokenizers["src"]
    return [
        [{"token": t, "prob": p} for t, p in top]
        for top in fill_mask(loaded.model, tok, text, top_k)
    ]
