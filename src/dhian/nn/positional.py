"""Position information: sinusoidal, learned, token+position, and rotary (RoPE).

Owns every position encoding. Sinusoidal and learned encodings share one API:
``forward(positions_or_length, offset=0)`` — an ``int`` T gives the rows for positions
``offset .. offset+T-1`` as (T, E); a long tensor of positions (B, T) gives (B, T, E). Either is
added to token embeddings (broadcasting (T, E) over B). Positions ≥ ``max_len`` raise
``ValueError``.

Notation: B batch, T length, H heads, D head dim, E model dim, V vocab.
Imports: torch only.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "LearnedPositionalEmbedding",
    "RotaryEmbedding",
    "SinusoidalPositionalEncoding",
    "TokenAndPositionEmbedding",
]


def _positions(table: Tensor, positions_or_length: int | Tensor, offset: int, name: str) -> Tensor:
    """Rows of ``table`` (max_len, E) for an int length (→ (T, E)) or positions (*, T) → (*, T, E)."""
    max_len = table.size(0)
    if isinstance(positions_or_length, int):
        t = positions_or_length
        if t < 0 or offset < 0:
            raise ValueError(f"{name}: length and offset must be >= 0, got {t}, {offset}")
        if offset + t > max_len:
            raise ValueError(
                f"{name}: positions up to {offset + t - 1} requested but max_len={max_len}; "
                "build it with a larger max_len"
            )
        return table[offset : offset + t]  # (T, E)
    pos = positions_or_length.long() + offset
    if pos.numel() and (int(pos.max()) >= max_len or int(pos.min()) < 0):
        raise ValueError(
            f"{name}: position {int(pos.max())} requested but max_len={max_len} "
            "(valid positions are 0..max_len-1)"
        )
    return table[pos]  # (*, T, E)


class SinusoidalPositionalEncoding(nn.Module):
    """Fixed encoding of Vaswani et al. (2017): PE[p, 2i] = sin(p / 10000^(2i/E)),
    PE[p, 2i+1] = cos(p / 10000^(2i/E)). A buffer (not saved in the state dict), no parameters.
    """

    pe: Tensor

    def __init__(self, dim: int, max_len: int = 5000) -> None:
        super().__init__()
        self.dim = dim
        self.max_len = max_len
        pos = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)  # (max_len, 1)
        div = torch.exp(
            torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim)
        )  # (ceil(E/2),)
        pe = torch.zeros(max_len, dim, dtype=torch.float64)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div[: dim // 2])
        self.register_buffer("pe", pe.float(), persistent=False)

    def forward(self, positions_or_length: int | Tensor, offset: int = 0) -> Tensor:
        """(T, E) for an int length T, or (B, T, E) for positions (B, T)."""
        return _positions(self.pe, positions_or_length, offset, type(self).__name__)


class LearnedPositionalEmbedding(nn.Module):
    """A trained table ``weight`` (max_len, E), initialised N(0, 0.02²) as in BERT/GPT-2."""

    def __init__(self, max_len: int, dim: int) -> None:
        super().__init__()
        self.max_len = max_len
        self.dim = dim
        self.weight = nn.Parameter(torch.empty(max_len, dim))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, positions_or_length: int | Tensor, offset: int = 0) -> Tensor:
        """(T, E) for an int length T, or (B, T, E) for positions (B, T)."""
        return _positions(self.weight, positions_or_length, offset, type(self).__name__)


class TokenAndPositionEmbedding(nn.Module):
    """Token embedding plus learned position embedding (the Keras example's layer).

    ``token`` (V, E) and ``position`` (:class:`LearnedPositionalEmbedding`, max_len × E).
    """

    def __init__(self, vocab_size: int, max_len: int, dim: int) -> None:
        super().__init__()
        self.token = nn.Embedding(vocab_size, dim)
        self.position = LearnedPositionalEmbedding(max_len, dim)

    def forward(self, ids: Tensor, offset: int = 0) -> Tensor:
        """ids (B, T) long → (B, T, E); positions start at ``offset`` (cached decoding)."""
        if ids.dim() != 2:
            raise ValueError(
                f"TokenAndPositionEmbedding: expected ids (B, T), received {tuple(ids.shape)}"
            )
        return self.token(ids) + self.position(ids.size(1), offset)  # (B, T, E)


def _rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)  # 2 x (..., D/2)
    return torch.cat([-x2, x1], dim=-1)  # (..., D)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (Su et al., 2021), half-split ("rotate_half") layout.

    Pair (x_j, x_{j+D/2}) at position p is rotated by angle p · base^(-2j/D), so
    ⟨rope(q, m), rope(k, n)⟩ depends only on m − n. Buffers ``cos``/``sin`` (max_len, D).
    ``float32_angles=True`` computes the inverse frequencies, the angles and their cos/sin in
    float32 exactly as HF's ``LlamaRotaryEmbedding`` does (bit-identical tables, for parity with
    imported checkpoints); the default computes them in float64 and rounds once.
    """

    cos: Tensor
    sin: Tensor

    def __init__(
        self,
        head_dim: int,
        max_len: int = 2048,
        base: float = 10000.0,
        *,
        float32_angles: bool = False,
    ) -> None:
        super().__init__()
        if head_dim % 2 != 0:
            raise ValueError(f"RotaryEmbedding: head_dim must be even, got {head_dim}")
        self.dim = head_dim
        self.max_len = max_len
        self.base = base
        if float32_angles:  # HF: 1 / base ** (arange(0, D, 2).float() / D), outer product in fp32
            inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2).float() / head_dim))
            angles = torch.outer(torch.arange(max_len).float(), inv_freq)  # (L, D/2)
        else:
            inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
            angles = torch.outer(torch.arange(max_len, dtype=torch.float64), inv_freq)  # (L, D/2)
        angles = torch.cat([angles, angles], dim=-1)  # (L, D)
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def rotate(self, x: Tensor, offset: int = 0, positions: Tensor | None = None) -> Tensor:
        """Rotate x (B, H, T, D) for positions ``offset .. offset+T-1``, or for per-row
        ``positions`` (B, T) long (left-padded batches: each row counts from its first real
        token; ``offset`` is then added to them)."""
        if x.dim() != 4 or x.size(-1) != self.dim:
            raise ValueError(
                f"RotaryEmbedding: expected (B, H, T, {self.dim}), received {tuple(x.shape)}"
            )
        t = x.size(2)
        if positions is None:
            cos = _positions(self.cos, t, offset, "RotaryEmbedding").to(x.dtype)  # (T, D)
            sin = _positions(self.sin, t, offset, "RotaryEmbedding").to(x.dtype)  # (T, D)
        else:
            if (
                positions.dim() != 2
                or positions.size(1) != t
                or positions.size(0)
                not in (
                    1,
                    x.size(0),
                )
            ):
                raise ValueError(
                    f"RotaryEmbedding: positions must be (B, T) = ({x.size(0)}, {t}) for x "
                    f"{tuple(x.shape)}, received {tuple(positions.shape)}"
                )
            cos = _positions(self.cos, positions, offset, "RotaryEmbedding")  # (B, T, D)
            sin = _positions(self.sin, positions, offset, "RotaryEmbedding")  # (B, T, D)
            cos = cos.unsqueeze(1).to(x.dtype)  # (B, 1, T, D)
            sin = sin.unsqueeze(1).to(x.dtype)  # (B, 1, T, D)
        return x * cos + _rotate_half(x) * sin

    def forward(
        self, q: Tensor, k: Tensor, offset: int = 0, positions: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Rotate q (B, H, T, D) and k (B, Hkv, T, D) whose first position is ``offset``, or
        at per-row ``positions`` (B, T)."""
        return self.rotate(q, offset, positions), self.rotate(k, offset, positions)

    def apply(self, *args: Any, **kwargs: Any) -> Any:
        """``apply(q, k, offset=0)`` = :meth:`forward`; ``apply(fn)`` keeps nn.Module's meaning
        (so ``model.apply(init_fn)`` still recurses through this module)."""
        if len(args) == 1 and not kwargs and callable(args[0]) and not isinstance(args[0], Tensor):
            return super().apply(args[0])
        return self.forward(*args, **kwargs)
