"""BERT task heads and the family's builder.

Owns :class:`BertForMaskedLM` (transform dense + activation + LayerNorm, decoder tied to the
word embeddings + an output bias), :class:`BertForSequenceClassification` (dropout + linear on
the pooled [CLS]) and :func:`build_bert` (the head of ``model.task`` on a backbone; the
per-token heads are in :mod:`dhian.models.bert.token_heads`). Text → ids
and the task functions that use these heads (fill-mask, classify) are in :mod:`dhian.inference`.

Parameter names: ``backbone.*`` (see :mod:`dhian.models.bert.model`), ``mlm.transform.dense``,
``mlm.transform.norm``, ``mlm.bias``; ``classifier``. The tied decoder uses
``backbone.embeddings.word.weight`` directly, so the state dict holds no shared tensor.

Notation: B batch, T length, H heads, E model dim, V vocab, C classes.
Imports: torch, :mod:`dhian.nn`, :mod:`dhian.models` (bert, outputs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dhian.models.bert.config import BertConfig
from dhian.models.bert.model import BertBackbone, backbone_kwargs, init_bert_weights
from dhian.models.bert.token_heads import BertForQuestionAnswering, BertForTokenClassification
from dhian.models.outputs import ClassifierOutput, LMOutput
from dhian.nn import get_activation

__all__ = [
    "BertForMaskedLM",
    "BertForSequenceClassification",
    "build_bert",
]


class MLMTransform(nn.Module):
    """LayerNorm(act(dense(h))): (B, T, E) → (B, T, E)."""

    def __init__(self, embed_dim: int, activation: str, layer_norm_eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(embed_dim, embed_dim)
        self.act = get_activation(activation)
        self.norm = nn.LayerNorm(embed_dim, eps=layer_norm_eps)

    def forward(self, h: Tensor) -> Tensor:
        """h (B, T, E) → (B, T, E)."""
        return self.norm(self.act(self.dense(h)))


class MLMHead(nn.Module):
    """Masked-LM head: ``transform`` then logits = h · Wᵀ + ``bias`` with W the (tied) word
    embedding (V, E) passed to :meth:`forward`."""

    def __init__(self, embed_dim: int, vocab_size: int, activation: str, eps: float) -> None:
        super().__init__()
        self.transform = MLMTransform(embed_dim, activation, eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, h: Tensor, word_weight: Tensor) -> Tensor:
        """h (B, T, E), word_weight (V, E) → logits (B, T, V)."""
        return F.linear(self.transform(h), word_weight, self.bias)


class BertForMaskedLM(nn.Module):
    """Backbone + masked-LM head (decoder tied to ``backbone.embeddings.word``)."""

    input_style = "bert"

    def __init__(
        self,
        backbone: BertBackbone,
        activation: str = "gelu",
        layer_norm_eps: float = 1e-12,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        vocab, dim = backbone.word_embeddings.weight.shape
        self.mlm = MLMHead(dim, vocab, activation, layer_norm_eps)
        self.mlm.apply(lambda m: init_bert_weights(m, init_std))

    def forward(
        self,
        input_ids: Tensor,
        lengths: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        need_weights: bool = False,
    ) -> LMOutput:
        """input_ids (B, T) (+ lengths (B,) or attention_mask (B, T)) → ``logits`` (B, T, V)
        and, when ``need_weights``, ``attention`` per layer (B, H, T, T)."""
        out = self.backbone(
            input_ids, lengths, token_type_ids, attention_mask, need_weights=need_weights
        )
        logits = self.mlm(out.last_hidden, self.backbone.word_embeddings.weight)  # (B, T, V)
        return LMOutput(logits, out.attentions)


class BertForSequenceClassification(nn.Module):
    """Backbone (with pooler) + dropout + linear (E → C) on the pooled [CLS] vector.

    ``labels``: the C class names (kept for :func:`classify`; not parameters).
    """

    input_style = "bert"

    def __init__(
        self,
        backbone: BertBackbone,
        num_labels: int,
        dropout: float = 0.1,
        labels: Sequence[str] = (),
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        if backbone.pooler is None:
            raise ValueError("BertForSequenceClassification needs a backbone built with pooler")
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(backbone.embed_dim, num_labels)
        init_bert_weights(self.classifier, init_std)
        self.labels = tuple(labels) or tuple(str(i) for i in range(num_labels))

    def forward(
        self,
        input_ids: Tensor,
        lengths: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        need_weights: bool = False,
    ) -> ClassifierOutput:
        """input_ids (B, T) (+ lengths (B,) or attention_mask (B, T)) → ``logits`` (B, C) and,
        when ``need_weights``, ``attention`` per layer (B, H, T, T)."""
        out = self.backbone(
            input_ids, lengths, token_type_ids, attention_mask, need_weights=need_weights
        )
        assert out.pooled is not None
        return ClassifierOutput(self.classifier(self.dropout(out.pooled)), out.attentions)


# --------------------------------------------------------------------------- preprocessing


def build_bert(
    cfg: BertConfig,
    src_vocab_size: int | None = None,
    tgt_vocab_size: int | None = None,
    **_: Any,
) -> nn.Module:
    """The model of ``cfg.task``: :class:`BertBackbone` (``backbone``),
    :class:`~dhian.models.bert.heads.BertForMaskedLM` (``mlm``) or
    :class:`~dhian.models.bert.heads.BertForSequenceClassification` (``classification``),
    :class:`~dhian.models.bert.token_heads.BertForTokenClassification`
    (``token_classification``) or :class:`~dhian.models.bert.token_heads.BertForQuestionAnswering`
    (``question_answering``). ``src_vocab_size`` (the tokenizer's V) overrides ``cfg.vocab_size`` when given."""
    backbone = BertBackbone(**backbone_kwargs(cfg, src_vocab_size))
    if cfg.task == "backbone":
        return backbone
    if cfg.task == "mlm":
        return BertForMaskedLM(
            backbone, activation=cfg.activation, layer_norm_eps=cfg.layer_norm_eps
        )
    if cfg.task == "question_answering":
        return BertForQuestionAnswering(backbone, cfg.init_std)
    drop = cfg.dropout if cfg.classifier_dropout is None else cfg.classifier_dropout
    if cfg.task == "token_classification":
        return BertForTokenClassification(
            backbone, cfg.num_labels, drop, labels=cfg.label_names, init_std=cfg.init_std
        )
    return BertForSequenceClassification(backbone, cfg.num_labels, drop, labels=cfg.label_names)
