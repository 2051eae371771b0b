"""The LLaMA decoder family's configuration: one frozen dataclass, no torch.

Owns :class:`LlamaConfig` (the architecture numbers of a LLaMA-style decoder: RMSNorm,
rotary positions, grouped-query attention, SwiGLU MLP) and its validation. The same record
describes a GGUF file (:mod:`dhian.interop.gguf`) and an HF ``LlamaForCausalLM`` directory
(:mod:`dhian.interop.hf_llama`).

Notation: V vocab, E model dim (``dim``), H query heads, Hkv key/value heads, D head dim,
F MLP hidden size (``ffn_dim``).
Imports: stdlib, :mod:`dhian.errors`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from dhian.errors import ConfigError

__all__ = ["LlamaConfig"]


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Architecture of a LLaMA-style decoder-only model.

    ``head_dim`` defaults to ``dim // n_heads``; ``n_kv_heads`` < ``n_heads`` is grouped-query
    attention (``n_heads % n_kv_heads == 0``). ``tie_embeddings``: the LM head reuses the token
    embedding matrix. ``bos_id``/``eos_id``/``pad_id`` are the tokenizer's special ids
    (``None`` when the checkpoint has none). ``type`` is the ``model.type`` name (``llama``).
    """

    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    head_dim: int = 0  # 0 = dim // n_heads
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_seq_len: int = 2048
    tie_embeddings: bool = True
    bos_id: int | None = None
    eos_id: int | None = None
    pad_id: int | None = None
    type: str = "llama"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"LlamaConfig: {name} must be a positive int, got {value!r}")
        if self.head_dim == 0:
            if self.dim % self.n_heads != 0:
                raise ConfigError(
                    f"LlamaConfig: dim={self.dim} is not divisible by n_heads={self.n_heads}; "
                    "pass head_dim explicitly"
                )
            object.__setattr__(self, "head_dim", self.dim // self.n_heads)
        if self.head_dim <= 0 or self.head_dim % 2 != 0:
            raise ConfigError(
                f"LlamaConfig: head_dim must be a positive even int (RoPE), got {self.head_dim}"
            )
        if self.n_heads % self.n_kv_heads != 0:
            raise ConfigError(
                f"LlamaConfig: n_heads={self.n_heads} must be a multiple of "
                f"n_kv_heads={self.n_kv_heads} (grouped-query attention)"
            )
        if self.norm_eps <= 0 or self.rope_theta <= 0 or self.max_seq_len <= 0:
            raise ConfigError(
                "LlamaConfig: norm_eps, rope_theta and max_seq_len must be > 0, got "
                f"{self.norm_eps}, {self.rope_theta}, {self.max_seq_len}"
            )
        for name in ("bos_id", "eos_id", "pad_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.vocab_size:
                raise ConfigError(
                    f"LlamaConfig: {name}={value} is outside the vocabulary 0..{self.vocab_size - 1}"
                )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``LlamaConfig(**d)`` rebuilds it)."""
        return dataclasses.asdict(self)
