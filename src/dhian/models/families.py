"""The model families: one :class:`Family` record each, and :func:`build_model`.

Every fact about a family that another layer needs — which ``model.type`` names it owns, its
config class, its builder, what kind of network it is, what it can do, which HF ``model_type``
it imports and how it is imported or exported — is written once here, and read from here by
the model-dir format (:mod:`dhian.models.model_dir`), the HF/GGUF importers (:mod:`dhian.interop`),
the trainer's tasks, :mod:`dhian.inference` and the CLI.

Adding a family = its folder ``models/<family>/`` (config.py, model.py, heads.py), its config
class in :data:`dhian.config._MODEL_CONFIGS` (the config layer parses ``model:`` without torch),
one :class:`Family` line in :data:`FAMILIES`, and — for foreign checkpoints — one importer
function in :mod:`dhian.interop` named by ``hf_import`` / ``file_import`` / ``builtins``.

Importers and exporters live in :mod:`dhian.interop`, a layer *above* models (they build our
models), so records name them as ``"module:function"`` strings that :func:`resolve` imports on
first use; everything else in a record is a plain object.

A builder is ``build(cfg, src_vocab_size, tgt_vocab_size, pad_id=, bos_id=, eos_id=, **extra)``
→ ``nn.Module``; single-vocabulary families (bert, gpt, keras_classifier) read ``src_vocab_size``.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from dhian.config import RunConfig
from dhian.errors import ConfigError, nearest
from dhian.models.bert.config import BertConfig
from dhian.models.bert.heads import build_bert
from dhian.models.gpt.config import GPTConfig
from dhian.models.gpt.model import build_gpt
from dhian.models.keras_classifier.config import KerasClassifierConfig
from dhian.models.keras_classifier.model import build_keras_classifier
from dhian.models.llama.config import LlamaConfig
from dhian.models.llama.model import build_llama
from dhian.models.memory import check_model_memory
from dhian.models.rnn.config import RNNSeq2SeqConfig
from dhian.models.rnn.model import build_rnn_seq2seq
from dhian.models.transformer.config import TransformerConfig
from dhian.models.transformer.model import build_transformer

__all__ = [
    "FAMILIES",
    "KINDS",
    "TASKS",
    "Family",
    "build_model",
    "builtin_names",
    "family_for_builtin",
    "family_for_hf_type",
    "family_for_suffix",
    "family_of",
    "model_types_of",
    "resolve",
]

Builder = Callable[..., nn.Module]

#: what a network is: encoder-decoder, bidirectional encoder, decoder-only LM, classifier
KINDS = ("seq2seq", "encoder", "causal_lm", "classifier")
#: what a saved model was trained for (the ``kind`` in a model dir's metadata)
TASKS = (
    "translation",
    "classification",
    "lm",
    "mlm",
    "backbone",
    "token_classification",
    "question_answering",
)


@dataclasses.dataclass(frozen=True)
class Family:
    """One model family.

    ``name``: the family (its folder under ``models/``). ``model_types``: the ``model.type``
    values it owns (saved runs name these; never rename one). ``config_class``: its frozen
    config dataclass. ``build``: its builder. ``kind``: one of :data:`KINDS`. ``task``: the task
    a saved model is for when its metadata names none (one of :data:`TASKS`).
    ``attention_types``: the model types whose attention weights can be read (``rnnencdec`` has
    none). ``can_translate`` / ``can_generate``: served by translate / generate.
    ``hf_model_types``: HF ``config.json`` ``model_type`` values it imports; ``hf_import``
    (``fn(dir, **options) -> LoadedModel``) and ``hf_export`` (``fn(loaded, out_dir) -> Path``)
    as ``"module:function"``. ``file_import``: file suffix → importer of a single-file
    checkpoint (``fn(path, **options) -> LoadedModel``, e.g. ``{".gguf": ...}``). ``builtins``:
    built-in model name → loader (``fn(**options) -> LoadedModel``); the single-file and
    built-in loaders also receive ``dtype=`` (a resolved precision) and may build the model in
    it directly. ``default_dtype``: the precision ``--dtype auto`` means for this family (the
    fastest that passes its quality bound, docs/speed.md); ``auto_dtype`` (``"module:function"``,
    ``fn(source, device) -> str``), where set, decides it instead for a single file or a
    built-in (``source``: its path or name), which may hold weights that a faster mode keeps
    exactly.
    """

    name: str
    model_types: tuple[str, ...]
    config_class: type
    build: Builder
    kind: str
    task: str
    attention_types: tuple[str, ...] = ()
    can_translate: bool = False
    can_generate: bool = False
    hf_model_types: tuple[str, ...] = ()
    hf_import: str | None = None
    hf_export: str | None = None
    file_import: Mapping[str, str] = dataclasses.field(default_factory=dict)
    builtins: Mapping[str, str] = dataclasses.field(default_factory=dict)
    default_dtype: str = "fp32"
    auto_dtype: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"family {self.name}: kind {self.kind!r} not in {KINDS}")
        if self.task not in TASKS:
            raise ValueError(f"family {self.name}: task {self.task!r} not in {TASKS}")

    def has_attention(self, model_type: str) -> bool:
        """Whether models of ``model_type`` expose attention weights."""
        return model_type in self.attention_types


FAMILIES: tuple[Family, ...] = (
    Family(
        "rnn",
        ("rnnencdec", "rnnsearch"),
        RNNSeq2SeqConfig,
        build_rnn_seq2seq,
        kind="seq2seq",
        task="translation",
        attention_types=("rnnsearch",),
        can_translate=True,
    ),
    Family(
        "transformer",
        ("transformer",),
        TransformerConfig,
        build_transformer,
        kind="seq2seq",
        task="translation",
        attention_types=("transformer",),
        can_translate=True,
        hf_model_types=("marian",),
        hf_import="dhian.interop.hf_marian:load_marian_dir",
        hf_export="dhian.interop.hf_marian:export_loaded_marian",
    ),
    Family(
        "bert",
        ("bert",),
        BertConfig,
        build_bert,
        kind="encoder",
        task="mlm",
        attention_types=("bert",),
        hf_model_types=("bert",),
        hf_import="dhian.interop.hf_bert:load_hf_bert",
        hf_export="dhian.interop.hf_bert:export_loaded_bert",
    ),
    Family(
        "keras_classifier",
        ("keras_classifier",),
        KerasClassifierConfig,
        build_keras_classifier,
        kind="classifier",
        task="classification",
        attention_types=("keras_classifier",),
    ),
    Family(
        "gpt",
        ("gpt",),
        GPTConfig,
        build_gpt,
        kind="causal_lm",
        task="lm",
        attention_types=("gpt",),
        can_generate=True,
    ),
    Family(
        "llama",
        ("llama",),
        LlamaConfig,
        build_llama,
        kind="causal_lm",
        task="lm",
        attention_types=("llama",),
        can_generate=True,
        hf_model_types=("llama",),
        hf_import="dhian.interop.hf_llama:load_hf_llama",
        hf_export="dhian.interop.hf_llama:export_loaded_llama",
        file_import={".gguf": "dhian.interop.gguf_quant:load_gguf_model"},
        builtins={"smollm2": "dhian.interop.gguf_quant:load_smollm2"},
        # int4/int8/bf16 pass the ppl bound but not "greedy = fp32 on >= 15/20" (docs/speed.md);
        # a GGUF file's own 4-bit blocks with float32 math (int4-fp32) pass it and are the
        # fastest where dhian's CPU kernels run
        default_dtype="fp32",
        auto_dtype="dhian.interop.gguf_quant:auto_precision",
    ),
)

_BY_TYPE: dict[str, Family] = {t: f for f in FAMILIES for t in f.model_types}


def family_of(model_type: str) -> Family:
    """The family owning ``model.type == model_type`` (ConfigError naming the nearest type)."""
    family = _BY_TYPE.get(model_type)
    if family is None:
        raise ConfigError(
            f"no model family for model.type {model_type!r}{nearest(model_type, _BY_TYPE)}; "
            f"buildable: {', '.join(sorted(_BY_TYPE))}"
        )
    return family


def model_types_of(*kinds: str) -> tuple[str, ...]:
    """The ``model.type`` names of every family whose ``kind`` is one of ``kinds``."""
    return tuple(t for f in FAMILIES if f.kind in kinds for t in f.model_types)


def family_for_hf_type(hf_model_type: str) -> Family | None:
    """The family that imports HF checkpoints of ``hf_model_type`` (None if no family does)."""
    return next((f for f in FAMILIES if hf_model_type in f.hf_model_types), None)


def family_for_suffix(suffix: str) -> Family | None:
    """The family that imports single-file checkpoints ending in ``suffix`` (e.g. ``.gguf``)."""
    return next((f for f in FAMILIES if suffix.lower() in f.file_import), None)


def family_for_builtin(name: str) -> Family | None:
    """The family that lists ``name`` among its built-in models (e.g. ``smollm2``)."""
    return next((f for f in FAMILIES if name in f.builtins), None)


def builtin_names() -> list[str]:
    """Every built-in model name, over all families."""
    return sorted(name for f in FAMILIES for name in f.builtins)


def resolve(target: str) -> Callable[..., Any]:
    """Import ``"module:function"`` (an importer/exporter named by a record) and return it."""
    module, _, func = target.partition(":")
    fn: Callable[..., Any] = getattr(importlib.import_module(module), func)
    return fn


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
    A model larger than the memory available is refused first, with the setting to lower
    (:func:`dhian.models.memory.check_model_memory`; built on the meta device, no allocation).
    """
    model_cfg = cfg.model if isinstance(cfg, RunConfig) else cfg
    model_type = getattr(model_cfg, "type", None)
    if not isinstance(model_type, str):
        raise ConfigError(f"build_model needs a model config with a 'type', got {model_cfg!r}")
    tgt = src_vocab_size if tgt_vocab_size is None else tgt_vocab_size

    def build() -> nn.Module:
        return family_of(model_type).build(
            model_cfg, src_vocab_size, tgt, pad_id=pad_id, bos_id=bos_id, eos_id=eos_id, **extra
        )

    check_model_memory(build, model_cfg, {"src_vocab_size": src_vocab_size, "tgt_vocab_size": tgt})
    return build()
