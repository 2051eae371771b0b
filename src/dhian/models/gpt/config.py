"""The GPT family's config (``model.type: gpt``).

A frozen dataclass, stdlib only (the config layer never imports torch); read by the family's
builder and nowhere in :mod:`dhian.nn`.
"""

from __future__ import annotations

import dataclasses

from dhian.errors import ConfigError


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
