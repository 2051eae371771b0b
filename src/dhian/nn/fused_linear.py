"""Linear layers on PyTorch's oneDNN CPU operators, with the activation or the residual add
fused into the GEMM: int8 (AMX / VNNI) and prepacked bf16 / fp32. Inference only.

Owns :class:`FusedLinear`, :func:`quantize_uint8`, :func:`fused_linear_available` and
:func:`bf16_native` (whether the CPU computes bf16 in hardware, which decides where the bf16
forms pay).

- ``int8``: weights symmetric int8, one scale per output row, prepacked once
  (``torch.ops.onednn.qlinear_prepack``); each call quantizes its input to uint8 with one
  scale and zero point for the whole tensor, taken from the tensor's own min/max
  (:func:`quantize_uint8`: dynamic quantization, no calibration data, what ONNX Runtime's
  ``quantize_dynamic`` does; the codes are read in place, not copied), then one
  ``torch.ops.onednn.qlinear_pointwise`` call
  computes the int8 GEMM, dequantizes, adds the bias and applies the post-op, writing float32
  (or bf16). These are the operators ``torch.compile``'s x86 Inductor backend emits for a
  PT2E-quantized linear; called eagerly they need no compilation.
- ``bf16`` / ``fp32``: the weight is reordered once into oneDNN's blocked layout
  (``torch.ops.mkldnn._reorder_linear_weight``) and every call is one
  ``torch.ops.mkldnn._linear_pointwise`` (bf16 on AMX where the CPU has it), instead of
  reordering the weight on every call as ``F.linear`` on bf16 does.

Post-ops: ``activation`` ``gelu`` (erf), ``gelu_tanh``, ``relu``, ``silu`` (oneDNN's
``swish``; applied to x Wᵀ + b), or
``residual``: a tensor of the output's shape added to x Wᵀ + b (the residual connection).
The packed weights are opaque oneDNN tensors kept as plain attributes, not buffers: the layer
cannot be saved, moved to another device or cast (build it again from the float weights).

Shapes: x (..., K) → (..., N); weight (N, K) = (out_features, in_features).
Imports: torch.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

__all__ = [
    "ACTIVATION_POST_OPS",
    "MODES",
    "FusedLinear",
    "bf16_native",
    "fused_linear_available",
    "quantize_uint8",
]

#: precisions of :class:`FusedLinear`
MODES = ("int8", "bf16", "fp32")
#: activation name → (oneDNN post-op, algorithm)
ACTIVATION_POST_OPS = {
    "none": ("none", ""),
    "gelu": ("gelu", "none"),
    "gelu_tanh": ("gelu", "tanh"),
    "relu": ("relu", ""),
    "silu": ("swish", ""),
}


def fused_linear_available(mode: str = "int8") -> bool:
    """Whether this torch build has the oneDNN operators :class:`FusedLinear` needs for
    ``mode`` (x86 CPU builds with mkldnn do; others fall back to the plain layers)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        if mode == "int8":
            return bool(torch.ops.onednn.qlinear_pointwise.default) and bool(
                torch.ops.onednn.qlinear_prepack.default
            )
        return bool(torch.ops.mkldnn._linear_pointwise.default) and bool(
            torch.ops.mkldnn._reorder_linear_weight.default
        )
    except (AttributeError, RuntimeError):
        return False


def bf16_native() -> bool:
    """Whether this CPU has bf16 instructions (AVX512_BF16 or AMX), as torch detects them."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def _uint8_view(q: Tensor) -> Tensor:
    """The codes of a quint8 tensor as a plain uint8 tensor on the same memory (no copy:
    ``int_repr()`` copies, which cost as much as the int8 GEMM itself on BERT-base shapes)."""
    out = torch.empty(0, dtype=torch.uint8, device=q.device)
    return out.set_(q.untyped_storage(), q.storage_offset(), q.shape, q.stride())


def quantize_uint8(x: Tensor) -> tuple[Tensor, float, int]:
    """Dynamic asymmetric quantization of a float32 tensor with one scale: the range
    [min(x, 0), max(x, 0)] onto 0..255 (``scale = range / 255``, ``zero = round(-min / scale)``).
    Returns the codes (x's shape, uint8), the scale and the zero point. One ``aminmax`` pass and
    one quantizing pass (``torch.quantize_per_tensor_dynamic`` reads x three times)."""
    if x.numel() == 0:
        return torch.zeros(x.shape, dtype=torch.uint8), 1.0, 0
    lo, hi = torch.aminmax(x)
    low, high = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = (high - low) / 255.0 or 1.0  # an all-zero input: any scale is exact
    zero = int(min(max(round(-low / scale), 0), 255))
    with warnings.catch_warnings():  # quint8 tensors are deprecated; used only here, briefly
        warnings.simplefilter("ignore", UserWarning)
        q = torch.quantize_per_tensor(x, scale, zero, torch.quint8)
    return _uint8_view(q), scale, zero


class FusedLinear(nn.Module):
    """``y = act(x Wᵀ + b)`` or ``y = x Wᵀ + b + residual`` in one oneDNN call (see the module
    docstring). Build with :meth:`from_float`; ``mode`` is ``int8`` | ``bf16`` | ``fp32``.

    ``int8`` takes float32 or bf16 input and returns ``out_dtype`` (float32 unless asked);
    ``bf16`` / ``fp32`` take and return their own dtype.
    """

    def __init__(self, weight: Tensor, bias: Tensor | None, mode: str) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"FusedLinear: unknown mode {mode!r}; choose one of {MODES}")
        if weight.dim() != 2:
            raise ValueError(f"FusedLinear: weight must be (N, K), received {tuple(weight.shape)}")
        self.mode = mode
        self.out_features, self.in_features = weight.shape
        w = weight.detach().float()
        if mode == "int8":
            scale = (w.abs().amax(dim=1) / 127.0).clamp_min(1e-12)  # (N,)
            codes = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)  # (N, K)
            self.w_scale = scale
            self.w_zero = torch.zeros(w.size(0), dtype=torch.int32)
            self.packed = torch.ops.onednn.qlinear_prepack(codes, None)
            self.bias = None if bias is None else bias.detach().float().contiguous()
        else:
            dtype = torch.bfloat16 if mode == "bf16" else torch.float32
            self.packed = torch.ops.mkldnn._reorder_linear_weight(w.to(dtype), None)
            self.bias = None if bias is None else bias.detach().to(dtype).contiguous()

    @classmethod
    def from_float(cls, layer: nn.Linear, mode: str) -> FusedLinear:
        """The fused form of the float ``layer`` in ``mode``."""
        return cls(layer.weight, layer.bias, mode)

    def forward(
        self,
        x: Tensor,
        activation: str = "none",
        residual: Tensor | None = None,
        out_dtype: torch.dtype | None = None,
    ) -> Tensor:
        """x (..., K) → (..., N); ``activation`` (see :data:`ACTIVATION_POST_OPS`) or
        ``residual`` (..., N) added (not both). ``out_dtype``: int8 mode only (float32 default;
        with ``residual``, the residual's dtype)."""
        if x.size(-1) != self.in_features:
            raise ValueError(
                f"FusedLinear: expected x (..., {self.in_features}), received {tuple(x.shape)}"
            )
        if activation not in ACTIVATION_POST_OPS:
            raise ValueError(
                f"FusedLinear: unknown activation {activation!r}; "
                f"choose one of {', '.join(ACTIVATION_POST_OPS)}"
            )
        if residual is not None and activation != "none":
            raise ValueError("FusedLinear: give an activation or a residual, not both")
        post, algorithm = ACTIVATION_POST_OPS[activation]
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features)  # (M, K)
        other = None if residual is None else residual.reshape(-1, self.out_features)  # (M, N)
        if self.mode == "int8":
            y = self._int8(flat, post, algorithm, other, out_dtype)
        elif other is not None:
            y = torch.ops.mkldnn._linear_pointwise.binary(
                flat.to(self.packed.dtype), other, self.packed, self.bias, "add"
            )
        else:
            y = torch.ops.mkldnn._linear_pointwise(
                flat.to(self.packed.dtype), self.packed, self.bias, post, [], algorithm
            )
        return y.reshape(*lead, self.out_features)  # (..., N)

    def _int8(
        self,
        flat: Tensor,
        post: str,
        algorithm: str,
        other: Tensor | None,
        out_dtype: torch.dtype | None,
    ) -> Tensor:
        """(M, K) float → uint8 (one dynamic scale / zero point) → int8 GEMM → (M, N)."""
        codes, scale, zero = quantize_uint8(flat.float())  # (M, K) uint8
        if other is not None:
            return torch.ops.onednn.qlinear_pointwise.binary(
                codes, scale, zero, self.packed, self.w_scale, self.w_zero, other, self.bias,
                1.0, 0, other.dtype, 1.0, 0, "add", 1.0, "none", [], "",
            )  # fmt: skip
        return torch.ops.onednn.qlinear_pointwise(
            codes, scale, zero, self.packed, self.w_scale, self.w_zero, self.bias,
            1.0, 0, out_dtype or torch.float32, post, [], algorithm,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, mode={self.mode}"
