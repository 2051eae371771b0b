"""BERT heads that score every token: token classification (NER / BIO tags) and extractive
question answering (start / end of the answer span).

Owns :class:`BertForTokenClassification` (dropout + linear E → C on every hidden state, as HF
``BertForTokenClassification``) and :class:`BertForQuestionAnswering` (linear E → 2 on every
hidden state, split into start and end logits, as HF ``BertForQuestionAnswering``). Both sit on
a backbone without a pooler (HF builds them with ``add_pooling_layer=False``). Span search over
the logits is in :mod:`dhian.inference.answer`; tag decoding in :mod:`dhian.inference.tag`.

Parameter names: ``backbone.*``, ``classifier`` (token classification), ``qa_outputs`` (QA).

Notation: B batch, T length, H heads, E model dim, C classes.
Imports: torch, :mod:`dhian.models` (bert model, outputs).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from dhian.models.bert.model import BertBackbone, init_bert_weights
from dhian.models.outputs import SpanOutput, TokenClassifierOutput

__all__ = ["BertForQuestionAnswering", "BertForTokenClassification"]


class BertForTokenClassification(nn.Module):
    """Backbone + dropout + linear (E → C) on every token's last hidden state.

    ``labels``: the C tag names (e.g. ``O``, ``B-PER``, ``I-PER``; kept for tagging, not
    parameters).
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
    ) -> TokenClassifierOutput:
        """input_ids (B, T) (+ lengths (B,) or attention_mask (B, T)) → ``logits`` (B, T, C)
        and, when ``need_weights``, ``attention`` per layer (B, H, T, T)."""
        out = self.backbone(
            input_ids, lengths, token_type_ids, attention_mask, need_weights=need_weights
        )
        logits = self.classifier(self.dropout(out.last_hidden))  # (B, T, C)
        return TokenClassifierOutput(logits, out.attentions)


class BertForQuestionAnswering(nn.Module):
    """Backbone + linear (E → 2) on every token: start and end logits of the answer span.

    Inputs are ``[CLS] question [SEP] context [SEP]`` with token types 0 / 1; position 0
    ([CLS]) stands for "no answer" (SQuAD v2).
    """

    input_style = "bert"

    def __init__(self, backbone: BertBackbone, init_std: float = 0.02) -> None:
        super().__init__()
        self.backbone = backbone
        self.qa_outputs = nn.Linear(backbone.embed_dim, 2)
        init_bert_weights(self.qa_outputs, init_std)

    def forward(
        self,
        input_ids: Tensor,
        lengths: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        need_weights: bool = False,
    ) -> SpanOutput:
        """input_ids (B, T) (+ lengths (B,) or attention_mask (B, T), token_type_ids (B, T)) →
        ``start_logits`` and ``end_logits`` (B, T) and, when ``need_weights``, ``attention``
        per layer (B, H, T, T)."""
        out = self.backbone(
            input_ids, lengths, token_type_ids, attention_mask, need_weights=need_weights
        )
        logits = self.qa_outputs(out.last_hidden)  # (B, T, 2)
        start, end = logits.unbind(dim=-1)  # (B, T) each
        return SpanOutput(start.contiguous(), end.contiguous(), out.attentions)
