"""The RNN encoder-decoder family's config (``model.type``: rnnencdec | rnnsearch).

A frozen dataclass, stdlib only (the config layer never imports torch); read by the family's
builder and nowhere in :mod:`dhian.nn`.
"""

from __future__ import annotations

import dataclasses


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
