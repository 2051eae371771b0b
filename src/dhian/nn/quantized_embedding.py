"""An embedding table held as int8 blocks with one scale per 32 values (llama.cpp's Q8_0),
dequantised on lookup.

Owns :class:`BlockInt8Embedding`: ``codes`` (V, E) int8 and ``scales`` (V, E/32) float32; row
lookup returns ``codes·scale`` per block in float32, exactly the values of the file's Q8_0
dequantisation (an fp16 scale times an int8 code is exact in float32), at a quarter of the
float32 table's memory. Inference only.

Shapes: ids (...) long → (..., E); V vocab, E dim, G = E / 32 blocks per row.
Imports: torch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["BlockInt8Embedding"]

BLOCK = 32


class BlockInt8Embedding(nn.Module):
    """Embedding lookup over int8 ``codes`` (V, E) with per-block ``scales`` (V, E/32)."""

    codes: Tensor
    scales: Tensor

    def __init__(self, codes: Tensor, scales: Tensor) -> None:
        super().__init__()
        v, e = codes.shape
        if codes.dtype != torch.int8 or e % BLOCK != 0 or scales.shape != (v, e // BLOCK):
            raise ValueError(
                f"BlockInt8Embedding: expected int8 codes (V, E) with E a multiple of {BLOCK} and "
                f"scales (V, E/{BLOCK}), received {codes.dtype} {tuple(codes.shape)} and "
                f"{tuple(scales.shape)}"
            )
        self.num_embeddings, self.embedding_dim = v, e
        self.register_buffer("codes", codes.contiguous())
        self.register_buffer("scales", scales.float().contiguous())

    def forward(self, ids: Tensor) -> Tensor:
        """ids (...) → float32 (..., E): each block's codes times its scale."""
        q = self.codes[ids].float()  # (..., E)
        s = self.scales[ids]  # (..., G)
        return (q.unflatten(-1, (-1, BLOCK)) * s[..., None]).flatten(-2)  # (..., E)

    def dequantized_weight(self) -> Tensor:
        """The whole (V, E) table in float32."""
        return self(torch.arange(self.num_embeddings))

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, block={BLOCK}"
