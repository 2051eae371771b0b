"""Frozen config dataclasses of every model family (stdlib only; no torch).

Each is registered under its ``model.type`` names. Builders in this package read them; layers in
:mod:`dhian.nn` never do.
"""

from __future__ import annotations

import dataclasses

from dhian.config import register_model_config


@register_model_config("rnnencdec", "rnnsearch")
@dataclasses.dataclass(frozen=True)
class RNNSeq2SeqConfig:
    """RNN encoder-decoder. ``rnnencdec`` = no attention (final state only: the bottleneck);
    ``rnnsearch`` = attention over every encoder state (``attention``: additive | dot | general)."""

    type: str = "rnnsearch"
    cell: str = "gru"  # gru | lstm
    embed_dim: int = 256
    hidden_dim: int = 512  # per direction in the encoder; decoder hidden size
    enc_layers: int = 1
    dec_layers: int = 1
    bidirectional: bool = True
    attention: str = "additive"  # additive | dot | general (rnnsearch only)
    attention_dim: int = 0  # additive attention hidden size; 0 = hidden_dim
    input_feeding: bool = False
    tie_embeddings: bool = False  # tie target embedding and output projection
    dropout: float = 0.2


@register_model_config("bert")
@dataclasses.dataclass(frozen=True)
class BertConfig:
    """BERT encoder (Devlin et al., 2019): post-norm stack, gelu, learned positions, segments.

    ``task``: ``backbone`` (hidden states + pooled [CLS]) | ``mlm`` (masked-LM head tied to the
    word embeddings) | ``classification`` (pooled output → ``num_labels`` logits; ``labels``
    names them). Sizes mirror HF ``BertConfig`` (hidden_size → embed_dim, num_hidden_layers →
    layers, num_attention_heads → heads, intermediate_size → ff_dim,
    max_position_embeddings → max_positions). ``too_long``: ``truncate`` (with a warning) or
    ``error`` for inputs longer than ``max_positions``.
    """

    type: str = "bert"
    task: str = "mlm"  # backbone | mlm | classification
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
    pooler: bool | None = None  # dense + tanh on [CLS]; None = all tasks but mlm
    num_labels: int = 2
    labels: tuple[str, ...] = ()  # names of the classes; () = "0", "1", ...
    too_long: str = "truncate"  # truncate | error

    def __post_init__(self) -> None:
        from dhian.errors import ConfigError

        if self.task not in ("backbone", "mlm", "classification"):
            raise ConfigError(
                f"model.task must be backbone, mlm or classification, got {self.task!r}"
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
        """Whether the backbone has a pooler (always for classification)."""
        if self.task == "classification":
            return True
        return self.task != "mlm" if self.pooler is None else self.pooler

    @property
    def label_names(self) -> tuple[str, ...]:
        """``labels`` or ``("0", "1", ...)``."""
        return self.labels or tuple(str(i) for i in range(self.num_labels))


@register_model_config("keras_classifier")
@dataclasses.dataclass(frozen=True)
class KerasClassifierConfig:
    """The Keras example "Text classification with Transformer" as a model type.

    Token + position embedding (``embed_dim``), one post-norm transformer block (``heads``,
    ``ff_dim``, relu), global average pooling over real tokens, dropout, dense relu
    (``hidden_dim``), dropout, dense → ``num_labels``. Heads split ``embed_dim`` (Keras gives
    each head ``key_dim=embed_dim``).
    """

    type: str = "keras_classifier"
    vocab_size: int = 20000
    max_len: int = 200
    embed_dim: int = 32
    heads: int = 2
    ff_dim: int = 32
    hidden_dim: int = 20
    dropout: float = 0.1
    layer_norm_eps: float = 1e-6
    pad_id: int = 0
    num_labels: int = 2
    labels: tuple[str, ...] = ()

    @property
    def label_names(self) -> tuple[str, ...]:
        """``labels`` or ``("0", "1", ...)``."""
        return self.labels or tuple(str(i) for i in range(self.num_labels))


@register_model_config("gpt")
@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """Decoder-only causal language model (GPT-2 / nanoGPT shape): pre-norm blocks with causal
    self-attention, learned (``positions: learned``) or rotary (``rotary``) positions, a final
    LayerNorm and an output projection tied to the token embedding (``tie_embeddings``).

    ``vocab_size`` 0 = take it from the tokenizer (char or byte-level BPE) at build time.
    ``block_size`` is the longest context (positions 0..block_size-1); generation crops the
    context to the last ``block_size`` tokens. ``ff_dim`` 0 = 4 × ``n_embd``.
    """

    type: str = "gpt"
    vocab_size: int = 0
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    block_size: int = 256
    ff_dim: int = 0
    dropout: float = 0.1  # embeddings, attention weights, residual branches
    bias: bool = True  # biases in Linear layers and LayerNorms
    positions: str = "learned"  # learned | rotary
    rope_base: float = 10000.0
    activation: str = "gelu"  # gelu | gelu_new (tanh approximation, GPT-2) | relu | silu
    tie_embeddings: bool = True
    layer_norm_eps: float = 1e-5
    init_std: float = 0.02

    def __post_init__(self) -> None:
        from dhian.errors import ConfigError

        if self.positions not in ("learned", "rotary"):
            raise ConfigError(f"model.positions must be learned or rotary, got {self.positions!r}")
        if self.n_head <= 0 or self.n_embd % self.n_head != 0:
            raise ConfigError(
                f"model.n_embd={self.n_embd} must be divisible by model.n_head={self.n_head}"
            )
        if self.positions == "rotary" and (self.n_embd // self.n_head) % 2 != 0:
            raise ConfigError(
                f"rotary positions need an even head dim; n_embd/n_head = "
                f"{self.n_embd // self.n_head}"
            )
        for name in ("n_layer", "block_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.vocab_size < 0:
            raise ConfigError(
                f"model.vocab_size must be >= 0 (0 = from the tokenizer), got {self.vocab_size}"
            )
        if self.activation not in ("gelu", "gelu_new", "relu", "silu"):
            raise ConfigError(
                f"model.activation must be gelu, gelu_new, relu or silu, got {self.activation!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")


@register_model_config("transformer")
@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Encoder-decoder Transformer for translation (Vaswani et al., 2017).

    ``norm``: ``post`` (the paper, Marian) or ``pre`` (pre-norm blocks + a final LayerNorm on
    each side). ``positions``: ``sinusoidal`` (the paper's interleaved sin/cos), ``learned``
    (one table per side) or ``sinusoidal_marian`` (sin in the first half of the vector, cos in
    the second: HF Marian's layout; needed to export to MarianMT). ``share_embeddings`` uses
    one embedding for source and target (joint vocabulary); ``tie_embeddings`` ties the output
    projection to the target embedding; ``scale_embedding`` multiplies embeddings by √E;
    ``output_bias`` adds a bias to the output projection (Marian's ``final_logits_bias``).
    ``activation``: relu | gelu | gelu_new | silu (``swish`` is accepted as silu).
    ``attn_dropout`` is the dropout on attention weights, ``activation_dropout`` the one inside
    the feed-forward; ``dropout`` is on embeddings and residual branches.
    """

    type: str = "transformer"
    embed_dim: int = 512
    num_heads: int = 8
    ff_dim: int = 2048
    enc_layers: int = 6
    dec_layers: int = 6
    dropout: float = 0.1
    attn_dropout: float = 0.0
    activation_dropout: float = 0.0
    activation: str = "relu"  # relu | gelu | gelu_new | silu (= swish)
    norm: str = "post"  # post | pre
    positions: str = "sinusoidal"  # sinusoidal | learned | sinusoidal_marian
    max_positions: int = 1024
    share_embeddings: bool = True
    tie_embeddings: bool = True
    scale_embedding: bool = True
    output_bias: bool = False
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        from dhian.errors import ConfigError

        if self.activation == "swish":
            object.__setattr__(self, "activation", "silu")
        choices = {
            "norm": ("post", "pre"),
            "positions": ("sinusoidal", "learned", "sinusoidal_marian"),
            "activation": ("relu", "gelu", "gelu_new", "silu"),
        }
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise ConfigError(
                    f"model.{name} must be one of {', '.join(valid)}, got {getattr(self, name)!r}"
                )
        for name in ("embed_dim", "num_heads", "ff_dim", "enc_layers", "dec_layers"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.embed_dim % self.num_heads != 0:
            raise ConfigError(
                f"model.embed_dim={self.embed_dim} must be divisible by "
                f"model.num_heads={self.num_heads}"
            )
        if self.max_positions <= 0:
            raise ConfigError(f"model.max_positions must be positive, got {self.max_positions}")
        for name in ("dropout", "attn_dropout", "activation_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"model.{name} must be in [0, 1), got {getattr(self, name)}")
