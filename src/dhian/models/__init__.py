"""Model families and the one entry point that builds them from their config.

Owns the builder registry: ``model.type`` → ``"module:function"`` (imported lazily, so building
one family never imports the others). A builder is called as
``builder(cfg, src_vocab_size, tgt_vocab_size, pad_id=, bos_id=, eos_id=, **extra)`` and returns
an ``nn.Module``; single-vocabulary families (bert, gpt) read ``src_vocab_size``. To add a family,
add its line to ``_BUILDERS`` (or call :func:`register_builder`).

Imports: stdlib, torch, :mod:`dhian.config`, :mod:`dhian.errors` and (lazily) the family modules.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from torch import nn

from dhian.config import RunConfig
from dhian.errors import ConfigError, nearest

__all__ = ["build_model", "builder_for", "load", "register_builder"]

Builder = Callable[..., nn.Module]

_BUILDERS: dict[str, str | Builder] = {
    "rnnencdec": "dhian.models.rnn_seq2seq:build_rnn_seq2seq",
    "rnnsearch": "dhian.models.rnn_seq2seq:build_rnn_seq2seq",
    "transformer": "dhian.models.transformer:build_transformer",
    "bert": "dhian.models.bert:build_bert",
    "keras_classifier": "dhian.models.keras_classifier:build_keras_classifier",
    "gpt": "dhian.models.gpt:build_gpt",
}


def register_builder(name: str, builder: str | Builder) -> None:
    """Register ``builder`` (a callable or ``"module:function"``) for ``model.type == name``."""
    _BUILDERS[name] = builder


def builder_for(model_type: str) -> Builder:
    """The builder callable registered for ``model_type`` (imports its module on first use)."""
    target = _BUILDERS.get(model_type)
    if target is None:
        raise ConfigError(
            f"no model builder for model.type {model_type!r}{nearest(model_type, _BUILDERS)}; "
            f"buildable: {', '.join(sorted(_BUILDERS))}"
        )
    if isinstance(target, str):
        module, _, func = target.partition(":")
        target = getattr(importlib.import_module(module), func)
        _BUILDERS[model_type] = target
    return target


def build_model(
    cfg: Any,
    src_vocab_size: int,
    tgt_vocab_size: int | None = None,
    pad_id: int = 0,
    bos_id: int = 2,
    eos_id: int = 3,
    **extra: Any,
) -> nn.Module:
    """Build the model described by ``cfg`` (a family config or a :class:`RunConfig`).

    ``tgt_vocab_size`` defaults to ``src_vocab_size`` (joint vocabulary). ``pad_id``, ``bos_id``,
    ``eos_id`` are the tokenizer's special ids; ``extra`` keywords go to the family builder.
    """
    model_cfg = cfg.model if isinstance(cfg, RunConfig) else cfg
    model_type = getattr(model_cfg, "type", None)
    if not isinstance(model_type, str):
        raise ConfigError(f"build_model needs a model config with a 'type', got {model_cfg!r}")
    builder = builder_for(model_type)
    return builder(
        model_cfg,
        src_vocab_size,
        src_vocab_size if tgt_vocab_size is None else tgt_vocab_size,
        pad_id=pad_id,
        bos_id=bos_id,
        eos_id=eos_id,
        **extra,
    )


def load(path: str | Any, **kwargs: Any) -> Any:
    """Load a dhian model directory: ``load(dir) -> LoadedModel(model, config, tokenizers, kind)``.

    A thin alias of :func:`dhian.models.io.load_model_dir` (imported lazily)."""
    from dhian.models.io import load_model_dir

    return load_model_dir(path, **kwargs)
