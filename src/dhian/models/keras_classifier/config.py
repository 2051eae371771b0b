"""The Keras text classifier's config (``model.type: keras_classifier``).

A frozen dataclass, stdlib only (the config layer never imports torch); read by the family's
builder and nowhere in :mod:`dhian.nn`.
"""

from __future__ import annotations

import dataclasses


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
