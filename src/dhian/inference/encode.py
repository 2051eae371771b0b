"""Text → ids, once per task: encoder inputs (BERT ``[CLS] x [SEP]`` or plain ids, with the
model's too-long policy) and translation sources (cut to the model's limit).

Owns :func:`input_limit` / :func:`encode_texts` (classify, fill-mask, attention of encoder
models) and :func:`source_limit` / :func:`encode_sources` (translation, the server's batches).
Generation prompts are encoded by :func:`dhian.inference.generate.generate_text` (documents
start with EOS). Notation: B texts, T padded length.
Imports: torch, :mod:`dhian.models` (bert length policy, model_dir), :mod:`dhian.text`,
:mod:`dhian.errors`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from dhian.errors import DataError
from dhian.models.bert.model import check_length
from dhian.models.model_dir import LoadedModel
from dhian.text.bert_inputs import build_bert_input

__all__ = ["encode_sources", "encode_texts", "input_limit", "source_limit"]


def input_limit(model: nn.Module) -> tuple[int, str]:
    """(most input tokens, too-long policy) of an encoder model (BERT or Keras-style)."""
    inner = getattr(model, "backbone", model)
    limit = getattr(inner, "max_positions", None) or getattr(model, "max_len", None)
    if limit is None:
        raise DataError(f"{type(model).__name__} does not say its maximum input length")
    return int(limit), str(getattr(inner, "too_long", getattr(model, "too_long", "truncate")))


def encode_texts(
    tokenizer: Any,
    texts: Sequence[str],
    max_len: int,
    too_long: str = "truncate",
    style: str = "bert",
) -> tuple[Tensor, Tensor, Tensor]:
    """Tokenise and pad B texts → (ids (B, T), token_type_ids (B, T), lengths (B,)).

    ``style="bert"``: ``[CLS] x [SEP]``; ``"plain"``: the tokens only. A text longer than
    ``max_len`` ids is truncated with a warning, or raises :class:`DataError` when
    ``too_long="error"``. Padding uses ``tokenizer.pad_id``.
    """
    rows: list[list[int]] = []
    extra = 2 if style == "bert" else 0
    for i, ids in enumerate(tokenizer.encode_batch(list(texts))):
        keep = check_length(len(ids) + extra, max_len, too_long, f"text {i}") - extra
        if style == "bert":
            rows.append(build_bert_input(tokenizer, ids[: max(keep, 0)], None, max_len)[0])
        else:
            rows.append(ids[:keep])
    t = max((len(r) for r in rows), default=0) or 1
    out = torch.full((len(rows), t), int(tokenizer.pad_id), dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    return out, torch.zeros_like(out), lengths


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
