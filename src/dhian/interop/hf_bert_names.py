"""Names and configs of HuggingFace BERT checkpoints ↔ dhian BERT (no I/O of weights).

Owns the parameter-name table (HF ``encoder.layer.{i}.attention.output.dense`` ↔ dhian
``layers.{i}.self_attn.out_proj`` ..., q/k/v ↔ fused ``in_proj``), the task heads' names, the
names dropped on import on purpose, and ``config.json`` ↔ :class:`BertConfig`. Used by
:mod:`dhian.interop.hf_bert` in both directions.

Notation: E model dim, L layers.
Imports: stdlib, torch, :mod:`dhian.models`, :mod:`dhian.errors`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from dhian.errors import DhianError, ModelLoadError
from dhian.models.bert.config import BertConfig
from dhian.models.bert.heads import BertForMaskedLM, BertForSequenceClassification
from dhian.models.bert.token_heads import BertForQuestionAnswering, BertForTokenClassification

__all__ = [
    "ARCHITECTURES",
    "DROPPED",
    "HEAD_PAIRS",
    "TASK_OF_ARCHITECTURE",
    "TOKEN_TASKS",
    "backbone_pairs",
    "bert_config_from_hf",
    "bert_config_to_hf",
    "hf_architectures",
    "hf_labels",
    "hf_task",
    "is_hf_bert_dir",
    "qkv_names",
    "read_json",
    "task_of",
]

#: dhian task → the HF class that holds its head (import and export)
ARCHITECTURES = {
    "backbone": "BertModel",
    "mlm": "BertForMaskedLM",
    "classification": "BertForSequenceClassification",
    "token_classification": "BertForTokenClassification",
    "question_answering": "BertForQuestionAnswering",
}
#: HF architecture → dhian task, for every BERT class dhian reads (ForPreTraining: its MLM head;
#: the next-sentence head is dropped with a log line)
TASK_OF_ARCHITECTURE = {
    **{arch: task for task, arch in ARCHITECTURES.items()},
    "BertForPreTraining": "mlm",
}
#: tasks whose heads score every token (HF builds them without a pooler)
TOKEN_TASKS = ("token_classification", "question_answering")
ACT_FROM_HF = {
    "gelu": "gelu",
    "gelu_new": "gelu_new",
    "gelu_pytorch_tanh": "gelu_new",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}
HEAD_PAIRS = {
    "mlm": [
        ("cls.predictions.transform.dense.weight", "mlm.transform.dense.weight"),
        ("cls.predictions.transform.dense.bias", "mlm.transform.dense.bias"),
        ("cls.predictions.transform.LayerNorm.weight", "mlm.transform.norm.weight"),
        ("cls.predictions.transform.LayerNorm.bias", "mlm.transform.norm.bias"),
        ("cls.predictions.bias", "mlm.bias"),
    ],
    "classification": [
        ("classifier.weight", "classifier.weight"),
        ("classifier.bias", "classifier.bias"),
    ],
    "token_classification": [
        ("classifier.weight", "classifier.weight"),
        ("classifier.bias", "classifier.bias"),
    ],
    "question_answering": [
        ("qa_outputs.weight", "qa_outputs.weight"),
        ("qa_outputs.bias", "qa_outputs.bias"),
    ],
    "backbone": [],
}
# Checkpoint names dropped on purpose (with a log line), by prefix → why.
DROPPED = {
    "embeddings.position_ids": "position-id buffer",
    "embeddings.token_type_ids": "token-type buffer",
    "cls.predictions.decoder.weight": "tied to the word embeddings",
    "cls.seq_relationship.": "next-sentence head (not used by dhian)",
}


# --------------------------------------------------------------------------- names


def backbone_pairs(layers: int, pooler: bool) -> list[tuple[str, str]]:
    """(HF name without ``bert.``, dhian backbone name) of every non-q/k/v parameter."""
    pairs = [
        ("embeddings.word_embeddings.weight", "embeddings.word.weight"),
        ("embeddings.position_embeddings.weight", "embeddings.position.weight"),
        ("embeddings.token_type_embeddings.weight", "embeddings.segment.weight"),
        ("embeddings.LayerNorm.weight", "embeddings.norm.weight"),
        ("embeddings.LayerNorm.bias", "embeddings.norm.bias"),
    ]
    for i in range(layers):
        h, d = f"encoder.layer.{i}.", f"layers.{i}."
        for wb in ("weight", "bias"):
            pairs += [
                (f"{h}attention.output.dense.{wb}", f"{d}self_attn.out_proj.{wb}"),
                (f"{h}attention.output.LayerNorm.{wb}", f"{d}norm1.{wb}"),
                (f"{h}intermediate.dense.{wb}", f"{d}ff.linear1.{wb}"),
                (f"{h}output.dense.{wb}", f"{d}ff.linear2.{wb}"),
                (f"{h}output.LayerNorm.{wb}", f"{d}norm2.{wb}"),
            ]
    if pooler:
        pairs += [("pooler.dense.weight", "pooler.dense.weight")]
        pairs += [("pooler.dense.bias", "pooler.dense.bias")]
    return pairs


def qkv_names(i: int, wb: str) -> tuple[list[str], str]:
    """HF q, k, v names of layer ``i`` and the dhian fused name (``weight``/``bias``)."""
    h = f"encoder.layer.{i}.attention.self."
    return [f"{h}{p}.{wb}" for p in ("query", "key", "value")], f"layers.{i}.self_attn.in_proj_{wb}"


def task_of(model: nn.Module) -> str:
    """The dhian task of a BERT model by its head (``backbone`` for a bare backbone)."""
    if isinstance(model, BertForMaskedLM):
        return "mlm"
    if isinstance(model, BertForSequenceClassification):
        return "classification"
    if isinstance(model, BertForTokenClassification):
        return "token_classification"
    if isinstance(model, BertForQuestionAnswering):
        return "question_answering"
    return "backbone"


# --------------------------------------------------------------------------- config


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {path} as JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} must hold a JSON object")
    return data


def is_hf_bert_dir(path: str | Path) -> bool:
    """True for a directory with an HF ``config.json`` whose ``model_type`` is ``bert``."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text(encoding="utf-8")).get("model_type") == "bert"
    except (OSError, ValueError, AttributeError):
        return False


def hf_architectures(hf: Mapping[str, Any]) -> list[str]:
    """The ``architectures`` a ``config.json`` names (``[]`` when none)."""
    archs = hf.get("architectures") or []
    return [str(a) for a in archs] if isinstance(archs, list) else [str(archs)]


def hf_task(hf: Mapping[str, Any]) -> str:
    """The dhian task of an HF BERT ``config.json``: from its ``architectures`` (``backbone``
    when it names none). An architecture dhian has no head for is a :class:`ModelLoadError`
    naming it: importing it as something else would silently drop its head."""
    archs = hf_architectures(hf)
    unknown = [a for a in archs if a not in TASK_OF_ARCHITECTURE]
    if unknown:
        raise ModelLoadError(
            f"HF architecture {', '.join(unknown)} is not supported by dhian (its head would be "
            f"lost); supported: {', '.join(TASK_OF_ARCHITECTURE)}"
        )
    tasks = {TASK_OF_ARCHITECTURE[a] for a in archs}
    if len(tasks) > 1:
        raise ModelLoadError(
            f"config.json names several architectures ({', '.join(archs)}); keep the one to import"
        )
    return tasks.pop() if tasks else "backbone"


def hf_labels(hf: Mapping[str, Any]) -> tuple[str, ...]:
    id2label = hf.get("id2label") or {}
    try:
        items = sorted((int(k), str(v)) for k, v in id2label.items())
    except (TypeError, ValueError):
        return ()
    return tuple(v for _, v in items) if [k for k, _ in items] == list(range(len(items))) else ()


def _first(hf: Mapping[str, Any]) -> str:
    archs = hf_architectures(hf)
    return archs[0] if archs else ""


def bert_config_from_hf(
    hf: Mapping[str, Any],
    task: str = "backbone",
    num_labels: int | None = None,
    labels: Sequence[str] | None = None,
    pooler: bool = True,
) -> BertConfig:
    """:class:`BertConfig` of an HF BERT ``config.json`` (as a dict) for ``task``."""
    if hf.get("model_type") != "bert":
        raise ModelLoadError(f"config.json has model_type {hf.get('model_type')!r}, not 'bert'")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ModelLoadError(
            f"position_embedding_type {hf['position_embedding_type']!r} is not supported "
            "(only 'absolute')"
        )
    if hf.get("is_decoder") or hf.get("add_cross_attention"):
        raise ModelLoadError(
            "config.json has is_decoder/add_cross_attention set; only BERT encoders import"
        )
    act = str(hf.get("hidden_act", "gelu"))
    if act not in ACT_FROM_HF:
        raise ModelLoadError(
            f"hidden_act {act!r} is not supported; valid: {', '.join(ACT_FROM_HF)}"
        )
    names = tuple(labels) if labels else ()
    labelled = ("classification", "token_classification")
    if task in labelled and not names and num_labels is None:
        names = hf_labels(hf) if TASK_OF_ARCHITECTURE.get(_first(hf), task) == task else ()
    n = num_labels if num_labels is not None else (len(names) or int(hf.get("num_labels", 2)))
    try:
        return BertConfig(
            task=task,
            vocab_size=int(hf["vocab_size"]),
            embed_dim=int(hf["hidden_size"]),
            layers=int(hf["num_hidden_layers"]),
            heads=int(hf["num_attention_heads"]),
            ff_dim=int(hf["intermediate_size"]),
            max_positions=int(hf.get("max_position_embeddings", 512)),
            type_vocab_size=int(hf.get("type_vocab_size", 2)),
            activation=ACT_FROM_HF[act],
            dropout=float(hf.get("hidden_dropout_prob", 0.1)),
            attention_dropout=float(hf.get("attention_probs_dropout_prob", 0.1)),
            classifier_dropout=(
                None if hf.get("classifier_dropout") is None else float(hf["classifier_dropout"])
            ),
            layer_norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
            init_std=float(hf.get("initializer_range", 0.02)),
            pad_id=int(hf.get("pad_token_id") or 0),
            pooler=pooler and task not in TOKEN_TASKS,
            num_labels=2 if task == "question_answering" else n,
            labels=names if len(names) == n else (),
        )
    except KeyError as exc:
        raise ModelLoadError(f"config.json lacks {exc.args[0]!r}; is it a BERT config?") from exc
    except DhianError as exc:
        raise ModelLoadError(f"config.json does not give a valid BERT: {exc}") from exc


def bert_config_to_hf(cfg: BertConfig, vocab_size: int | None = None) -> dict[str, Any]:
    """HF ``config.json`` contents for ``cfg`` (architecture from ``cfg.task``)."""
    out: dict[str, Any] = {
        "architectures": [ARCHITECTURES[cfg.task]],
        "model_type": "bert",
        "vocab_size": int(vocab_size or cfg.vocab_size),
        "hidden_size": cfg.embed_dim,
        "num_hidden_layers": cfg.layers,
        "num_attention_heads": cfg.heads,
        "intermediate_size": cfg.ff_dim,
        "hidden_act": cfg.activation,
        "hidden_dropout_prob": cfg.dropout,
        "attention_probs_dropout_prob": cfg.attention_dropout,
        "max_position_embeddings": cfg.max_positions,
        "type_vocab_size": cfg.type_vocab_size,
        "initializer_range": cfg.init_std,
        "layer_norm_eps": cfg.layer_norm_eps,
        "pad_token_id": cfg.pad_id,
        "position_embedding_type": "absolute",
        "classifier_dropout": cfg.classifier_dropout,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
    }
    if cfg.task in ("classification", "token_classification"):
        names = cfg.label_names
        out["id2label"] = {str(i): n for i, n in enumerate(names)}
        out["label2id"] = {n: i for i, n in enumerate(names)}
    return out
