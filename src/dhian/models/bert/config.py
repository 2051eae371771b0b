"""The BERT family's config (``model.type: bert``).

A frozen dataclass, stdlib only (the config layer never imports torch); read by the family's
builder and nowhere in :mod:`dhian.nn`.
"""

from __future__ import annotations

import dataclasses

from dhian.errors import ConfigError

#: the heads a BERT can carry (``model.task``)
BERT_TASKS = ("backbone", "mlm", "classification", "token_classification", "question_answering")


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """BERT encoder (Devlin et al., 2019): post-norm stack, gelu, learned positions, segments.

    ``task``: ``backbone`` (hidden states + pooled [CLS]) | ``mlm`` (masked-LM head tied to the
    word embeddings) | ``classification`` (pooled output → ``num_labels`` logits; ``labels``
    names them) | ``token_classification`` (every token → ``num_labels`` logits, e.g. BIO
    tags; ``labels`` names them) | ``question_answering`` (every token → start and end logits
    of the answer span). Sizes mirror HF ``BertConfig`` (hidden_size → embed_dim, num_hidden_layers →
    layers, num_attention_heads → heads, intermediate_size → ff_dim,
    max_position_embeddings → max_positions). ``too_long``: ``truncate`` (with a warning) or
    ``error`` for inputs longer than ``max_positions``.
    """

    type: str = "bert"
    task: str = "mlm"  # backbone | mlm | classification | token_classification | question_answering
    vocab_size: int = 30522
    embed_dim: int = 768
    layers: int = 12
    heads: int = 12
    ff_dim: int = 3072
    max_positions: int = 512
    type_vocab_size: int = 2
    activation: str = "gelu"  # gelu (exact, erf) | gelu_new (tanh approx.) | relu | silu
    dropout: float = 0.1  # hidden dropout (embeddings, residual branches)
    attention_dropout: float = 0.1
    classifier_dropout: float | None = None  # None = dropout
    layer_norm_eps: float = 1e-12
    init_std: float = 0.02
    pad_id: int = 0
    pooler: bool | None = None  # dense + tanh on [CLS]; None = backbone and classification
    num_labels: int = 2
    labels: tuple[str, ...] = ()  # names of the classes; () = "0", "1", ...
    too_long: str = "truncate"  # truncate | error

    def __post_init__(self) -> None:
        if self.task not in BERT_TASKS:
            raise ConfigError(
                f"model.task must be one of {', '.join(BERT_TASKS)}, got {self.task!r}"
            )
        if self.heads <= 0 or self.embed_dim % self.heads != 0:
            raise ConfigError(
                f"model.embed_dim={self.embed_dim} must be divisible by model.heads={self.heads}"
            )
        if self.labels and len(self.labels) != self.num_labels:
            raise ConfigError(
                f"model.labels has {len(self.labels)} names but model.num_labels={self.num_labels}"
            )
        if self.too_long not in ("truncate", "error"):
            raise ConfigError(f"model.too_long must be truncate or error, got {self.too_long!r}")
        if self.activation not in ("gelu", "gelu_new", "relu", "silu"):
            raise ConfigError(
                f"model.activation must be gelu, gelu_new, relu or silu, got {self.activation!r}"
            )

    @property
    def has_pooler(self) -> bool:
        """Whether the backbone has a pooler: always for classification, never for the per-token
        heads (HF builds those without one), else ``pooler`` (None = only the backbone)."""
        if self.task == "classification":
            return True
        if self.task in ("token_classification", "question_answering"):
            return False
        return self.task == "backbone" if self.pooler is None else self.pooler

    @property
    def label_names(self) -> tuple[str, ...]:
        """``labels`` or ``("0", "1", ...)``."""
        return self.labels or tuple(str(i) for i in range(self.num_labels))
