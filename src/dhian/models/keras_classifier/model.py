"""The Keras example "Text classification with Transformer" as a dhian model type.

Owns :class:`KerasTextClassifier` and :func:`build_keras_classifier` (the one place
:class:`~dhian.models.keras_classifier.config.KerasClassifierConfig` is read). Architecture as in the Keras
notebook: token + position embedding (embed 32) → one post-norm transformer block (2 heads,
ff 32, relu, LayerNorm eps 1e-6, dropout 0.1) → global average pooling → dropout → dense relu
(20) → dropout → dense (C). Two deliberate differences: padding is masked in attention and
excluded from the average (so a prediction does not depend on batch padding), and the last
layer returns logits (softmax is applied by the loss / :func:`dhian.inference.classify.classify`).

Notation: B batch, T length, H heads, E model dim, C classes.
Imports: torch, :mod:`dhian.nn`, the family config, :mod:`dhian.models.outputs`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from dhian.models.bert.model import check_length, key_mask
from dhian.models.keras_classifier.config import KerasClassifierConfig
from dhian.models.outputs import ClassifierOutput
from dhian.nn import EncoderBlock, TokenAndPositionEmbedding

__all__ = ["KerasTextClassifier", "build_keras_classifier"]


class KerasTextClassifier(nn.Module):
    """Small transformer text classifier; inputs are plain token ids (no [CLS]/[SEP])."""

    input_style = "plain"

    def __init__(
        self,
        vocab_size: int,
        max_len: int = 200,
        embed_dim: int = 32,
        heads: int = 2,
        ff_dim: int = 32,
        hidden_dim: int = 20,
        num_labels: int = 2,
        dropout: float = 0.1,
        layer_norm_eps: float = 1e-6,
        labels: Sequence[str] = (),
        too_long: str = "truncate",
    ) -> None:
        super().__init__()
        self.max_len = max_len
        self.too_long = too_long
        self.embed = TokenAndPositionEmbedding(vocab_size, max_len, embed_dim)
        self.block = EncoderBlock(
            embed_dim,
            heads,
            ff_dim,
            dropout=dropout,
            activation="relu",
            layer_norm_eps=layer_norm_eps,
            attn_dropout=0.0,
        )
        self.head = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(embed_dim, hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, num_labels),
        )
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
        when ``need_weights``, ``attention`` = [(B, H, T, T)]. ``token_type_ids`` is ignored."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (B, T), received {tuple(input_ids.shape)}")
        keep = check_length(input_ids.size(1), self.max_len, self.too_long, "input_ids")
        if keep < input_ids.size(1):
            input_ids = input_ids[:, :keep]  # (B, max_len)
            attention_mask = None if attention_mask is None else attention_mask[:, :keep]
            lengths = None if lengths is None else lengths.clamp(max=keep)
        mask = key_mask(input_ids, lengths, attention_mask)  # (B, 1, 1, T) | None
        x = self.embed(input_ids)  # (B, T, E)
        x, w = self.block(x, mask=mask, need_weights=need_weights)  # (B, T, E)
        if mask is None:
            pooled = x.mean(dim=1)  # (B, E)
        else:
            tok = mask[:, 0, 0, :].unsqueeze(-1).to(x.dtype)  # (B, T, 1)
            pooled = (x * tok).sum(dim=1) / tok.sum(dim=1).clamp(min=1.0)  # (B, E)
        return ClassifierOutput(self.head(pooled), [w] if w is not None else None)


def build_keras_classifier(
    cfg: KerasClassifierConfig,
    src_vocab_size: int | None = None,
    tgt_vocab_size: int | None = None,
    **_: Any,
) -> nn.Module:
    """:class:`KerasTextClassifier` from ``cfg``; ``src_vocab_size`` (the tokenizer's V)
    overrides ``cfg.vocab_size`` when given."""
    return KerasTextClassifier(
        vocab_size=int(src_vocab_size or cfg.vocab_size),
        max_len=cfg.max_len,
        embed_dim=cfg.embed_dim,
        heads=cfg.heads,
        ff_dim=cfg.ff_dim,
        hidden_dim=cfg.hidden_dim,
        num_labels=cfg.num_labels,
        dropout=cfg.dropout,
        layer_norm_eps=cfg.layer_norm_eps,
        labels=cfg.label_names,
    )
