"""Renumbering a tokenizer's vocabulary: the same tokens and segmentation under new ids.

Owns :func:`pad_last_order` (the id order that moves one id to the end, as Marian and
CTranslate2 want ``<pad>``) and :func:`reorder_vocab`, which rewrites an HF ``tokenizer.json``
(the model's vocabulary — a dict for BPE/WordPiece/WordLevel, a list for Unigram —, the added
tokens, a post-processor's special ids and the padding id) so that new id ``n`` is old id
``order[n]``. Text encodes to the same tokens; only their ids change.
Imports: stdlib, HF ``tokenizers``, :mod:`dhian.errors`, :mod:`dhian.text.tokenizer`; never torch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from tokenizers import Tokenizer as HFTokenizer

from dhian.errors import DataError
from dhian.text.tokenizer import Tokenizer

__all__ = ["pad_last_order", "reorder_vocab"]


def pad_last_order(vocab_size: int, last: int) -> list[int]:
    """The order (new id → old id) that moves id ``last`` to the end, keeping the rest in order."""
    if not 0 <= last < vocab_size:
        raise DataError(f"id {last} is outside a vocabulary of {vocab_size}")
    return [i for i in range(vocab_size) if i != last] + [last]


def _remap_ids(node: Any, new: dict[int, int]) -> Any:
    """Post-processor JSON with every special-token id renumbered (Template/Bert/Roberta/Sequence)."""
    if isinstance(node, dict):
        out = dict(node)
        if "special_tokens" in out:  # TemplateProcessing: {name: {"id", "ids": [...], "tokens"}}
            out["special_tokens"] = {
                k: {**v, "ids": [new[int(i)] for i in v.get("ids", [])]}
                for k, v in out["special_tokens"].items()
            }
        for key in ("sep", "cls"):  # BertProcessing / RobertaProcessing: [token, id]
            if isinstance(out.get(key), list) and len(out[key]) == 2:
                out[key] = [out[key][0], new[int(out[key][1])]]
        if isinstance(out.get("processors"), list):  # Sequence
            out["processors"] = [_remap_ids(p, new) for p in out["processors"]]
        return out
    return node


def reorder_vocab(tok: Tokenizer, order: Sequence[int]) -> Tokenizer:
    """``tok`` with new id ``n`` = old id ``order[n]`` (a permutation of ``range(V)``)."""
    v = tok.vocab_size
    if sorted(order) != list(range(v)):
        raise DataError(f"a vocabulary order must be a permutation of 0..{v - 1}")
    new = {old: n for n, old in enumerate(order)}
    data = json.loads(tok.hf.to_str())
    model = data["model"]
    vocab = model.get("vocab")
    if isinstance(vocab, dict):
        model["vocab"] = {t: new[int(i)] for t, i in vocab.items()}
    elif isinstance(vocab, list):  # Unigram: position = id
        model["vocab"] = [vocab[old] for old in order if old < len(vocab)]
    else:
        raise DataError(f"cannot renumber a {model.get('type')} tokenizer vocabulary")
    for added in data.get("added_tokens") or []:
        added["id"] = new[int(added["id"])]
    data["post_processor"] = _remap_ids(data.get("post_processor"), new)
    if isinstance(data.get("padding"), dict) and "pad_id" in data["padding"]:
        data["padding"]["pad_id"] = new[int(data["padding"]["pad_id"])]
    hf = HFTokenizer.from_str(json.dumps(data, ensure_ascii=False))
    return Tokenizer(hf, tok.kind, tok.roles, tok.chat_template)
