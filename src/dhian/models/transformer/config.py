"""The encoder-decoder Transformer's config (``model.type: transformer``).

A frozen dataclass, stdlib only (the config layer never imports torch); read by the family's
builder and nowhere in :mod:`dhian.nn`.
"""

from __future__ import annotations

import dataclasses

from dhian.errors import ConfigError


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
    ``start_from_zero``: the decoder's first input (position 0) is a zero vector instead of the
    BOS embedding — what Marian and CTranslate2 do (CTranslate2's Marian decoder always starts
    from zeros), so an exported model translates the same there.
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
    start_from_zero: bool = False

    def __post_init__(self) -> None:
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
