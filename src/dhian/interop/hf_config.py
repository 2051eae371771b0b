"""Checking the numbers of an HF ``config.json`` before any of them is used.

Owns :func:`check_hf_config`: every known size, count, id, rate and flag key that a
``config.json`` holds must have the right JSON type (an integer for sizes and ids, a finite
number for rates and epsilons, true/false for flags) and sizes must be positive, else one
:class:`~dhian.errors.ModelLoadError` names the file, the key, the value and what it must be,
instead of an ``int("x")`` traceback deep inside an importer. Used by every HF importer
(BERT, Marian, LLaMA). Imports: stdlib, :mod:`dhian.errors`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dhian.errors import ModelLoadError

__all__ = ["check_hf_config"]

#: Sizes and counts: integers >= 1.
SIZES = frozenset(
    {
        "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
        "intermediate_size", "max_position_embeddings", "type_vocab_size", "num_labels",
        "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
        "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim", "decoder_vocab_size",
        "num_key_value_heads", "head_dim",
    }
)  # fmt: skip
#: Token ids: integers >= 0 (or a list of them, or null).
IDS = frozenset(
    {"pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id", "sep_token_id"}
)
#: Rates, epsilons, scales: finite numbers >= 0 (or null).
RATES = frozenset(
    {
        "hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout",
        "layer_norm_eps", "initializer_range", "dropout", "attention_dropout",
        "activation_dropout", "rms_norm_eps", "rope_theta", "init_std",
    }
)  # fmt: skip
#: Flags: true or false.
FLAGS = frozenset(
    {
        "is_decoder", "add_cross_attention", "tie_word_embeddings", "scale_embedding",
        "share_encoder_decoder_embeddings", "attention_bias", "mlp_bias",
    }
)  # fmt: skip


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _problem(key: str, value: Any) -> str | None:
    """What ``value`` of ``key`` must be, when it is not; None when fine or unknown."""
    if key in SIZES and not (_is_int(value) and value >= 1):
        return "an integer >= 1"
    if key in IDS and value is not None:
        ids = value if isinstance(value, list) else [value]
        if not all(_is_int(v) and v >= 0 for v in ids):
            return "a token id (an integer >= 0), a list of them or null"
    if key in RATES and value is not None:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not (ok and math.isfinite(value) and value >= 0):
            return "a finite number >= 0"
    if key in FLAGS and not isinstance(value, bool):
        return "true or false"
    return None


def check_hf_config(hf: Mapping[str, Any], path: str | Path) -> Mapping[str, Any]:
    """``hf`` (the parsed ``config.json`` at ``path``) when each known key has a valid value;
    otherwise one :class:`ModelLoadError` naming the first bad key."""
    for key, value in hf.items():
        need = _problem(str(key), value)
        if need is not None:
            shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
            raise ModelLoadError(
                f"{path}: {key} must be {need}, got {shown}; fix config.json or re-export the model"
            )
    return hf
