"""Weight-only quantised linear layers for CPU inference: int4 (group size 32) and int8
(per output channel), both on PyTorch's own CPU kernels.

Owns :class:`Int4Linear` (``torch.ops.aten._weight_int4pack_mm_for_cpu``: 4-bit weights in
groups of 32 along the input dim, one bf16 scale and zero per group, ``w = (q - 8)·s + z``;
built from unsigned 4-bit codes with their per-group ``w = q·d + m`` affine maps — llama.cpp's
Q4_1 blocks map onto it with ``s = d``, ``z = m + 8·d`` — or quantised from a float matrix),
:class:`Int8Linear` (``torch.ops.aten._weight_int8pack_mm``: symmetric int8 weights, one scale
per output row) and :func:`quantize_int4` (min/max asymmetric group quantisation of a float
matrix, the Q4_1 rule, for checkpoints that carry no 4-bit blocks).

Both kernels are fast with bf16 activations and slow with float32 ones on CPU, so the layers
compute in bf16 and return the input's dtype: a float32 model keeps its float32 residual
stream and norms, only the matmuls read quantised weights. Inference only (buffers, no
parameters, no gradient).

Shapes: x (..., K) → (..., N); weight (N, K) = (out_features, in_features); G = K / 32 groups.
Imports: torch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["GROUP", "Int4Linear", "Int8Linear", "quantize_int4"]

#: int4 group size along the input dim (llama.cpp's Q4 block size)
GROUP = 32


def quantize_int4(w: Tensor, group: int = GROUP) -> tuple[Tensor, Tensor, Tensor]:
    """Asymmetric 4-bit quantisation of ``w`` (N, K) per group of ``group`` inputs (the Q4_1
    rule: ``d = (max - min) / 15``, ``m = min``, ``q = round((w - m) / d)`` in 0..15).
    Returns codes (N, K) int32, scales d (N, G) and offsets m (N, G) float32."""
    n, k = w.shape
    blocks = w.float().reshape(n, k // group, group)  # (N, G, 32)
    lo, hi = blocks.amin(-1), blocks.amax(-1)  # (N, G)
    d = (hi - lo) / 15.0
    inv = torch.where(d == 0, torch.zeros_like(d), 1.0 / d)
    q = ((blocks - lo[..., None]) * inv[..., None]).round().clamp(0, 15)  # (N, G, 32)
    return q.reshape(n, k).to(torch.int32), d, lo


class Int4Linear(nn.Module):
    """``y = x Wᵀ`` with W held as packed 4-bit codes and bf16 (scale, zero) per group of 32.

    Buffers: ``packed`` (the kernel's layout of the (N, K) codes) and ``scales_zeros``
    (G, N, 2) bf16. Build with :meth:`from_codes` or :meth:`from_float`.
    """

    packed: Tensor
    scales_zeros: Tensor

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        if in_features % GROUP != 0:
            raise ValueError(f"Int4Linear: in_features {in_features} is not a multiple of {GROUP}")
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("packed", torch.zeros(0, dtype=torch.uint8))
        self.register_buffer("scales_zeros", torch.zeros(0, dtype=torch.bfloat16))

    @classmethod
    def from_codes(cls, q: Tensor, d: Tensor, m: Tensor) -> Int4Linear:
        """From unsigned codes q (N, K) in 0..15 and per-group affine maps ``w = q·d + m``
        (d, m (N, G)): the kernel's ``(q - 8)·s + z`` with ``s = d``, ``z = m + 8·d`` (bf16)."""
        n, k = q.shape
        if d.shape != (n, k // GROUP) or m.shape != d.shape:
            raise ValueError(
                f"Int4Linear: codes {tuple(q.shape)} need d and m of shape {(n, k // GROUP)}, "
                f"received {tuple(d.shape)} and {tuple(m.shape)}"
            )
        layer = cls(k, n)
        codes = q.to(torch.int32).contiguous()
        layer.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
        zero = m.float() + 8.0 * d.float()  # (N, G)
        layer.scales_zeros = (
            torch.stack([d.float(), zero], dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16)
        )  # (G, N, 2)
        return layer

    @classmethod
    def from_float(cls, w: Tensor) -> Int4Linear:
        """Quantise a float matrix w (N, K) with :func:`quantize_int4`."""
        return cls.from_codes(*quantize_int4(w))

    def forward(self, x: Tensor) -> Tensor:
        """x (..., K) any float dtype → (..., N) in x's dtype (computed with bf16 inputs)."""
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)  # (M, K)
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.packed, GROUP, self.scales_zeros)
        return y.reshape(*lead, self.out_features).to(x.dtype)  # (..., N)

    def dequantized_weight(self) -> Tensor:
        """The (N, K) matrix the kernel multiplies by, as float32 (for tests and checks): the
        layer applied to the identity, so each entry is ``(q - 8)·s + z`` rounded to bf16."""
        eye = torch.eye(self.in_features, dtype=torch.bfloat16)  # (K, K)
        cols = torch.ops.aten._weight_int4pack_mm_for_cpu(
            eye, self.packed, GROUP, self.scales_zeros
        )  # (K, N): one nonzero product per output
        return cols.float().T.contiguous()

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, group={GROUP}"


class Int8Linear(nn.Module):
    """``y = x Wᵀ`` with W as int8 (N, K) and one bf16 scale per output row (symmetric,
    ``w ≈ q·s``). Buffers ``weight`` (N, K) int8, ``scales`` (N,) bf16."""

    weight: Tensor
    scales: Tensor

    def __init__(self, weight: Tensor, scales: Tensor) -> None:
        super().__init__()
        if weight.dtype != torch.int8 or weight.dim() != 2 or scales.shape != weight.shape[:1]:
            raise ValueError(
                f"Int8Linear: expected int8 weight (N, K) and scales (N,), received "
                f"{weight.dtype} {tuple(weight.shape)} and {tuple(scales.shape)}"
            )
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight", weight.contiguous())
        self.register_buffer("scales", scales.to(torch.bfloat16).contiguous())

    @classmethod
    def from_float(cls, w: Tensor) -> Int8Linear:
        """Symmetric per-row int8 of w (N, K): ``s = max|w_row| / 127``, ``q = round(w / s)``."""
        wf = w.float()
        s = wf.abs().amax(dim=1) / 127.0  # (N,)
        s = torch.where(s == 0, torch.ones_like(s), s)
        q = (wf / s[:, None]).round().clamp(-127, 127).to(torch.int8)  # (N, K)
        return cls(q, s)

    def forward(self, x: Tensor) -> Tensor:
        """x (..., K) any float dtype → (..., N) in x's dtype (computed with bf16 inputs)."""
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)  # (M, K)
        y = torch.ops.aten._weight_int8pack_mm(flat, self.weight, self.scales)  # (M, N)
        return y.reshape(*lead, self.out_features).to(x.dtype)

    def dequantized_weight(self) -> Tensor:
        """The (N, K) float32 matrix ``q·s`` (for tests and checks)."""
        return self.weight.float() * self.scales.float()[:, None]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"
