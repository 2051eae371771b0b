"""A bias-free bf16 linear layer whose weight is reordered once into oneDNN's blocked layout,
usable eagerly and inside ``torch.compile`` (the LLaMA family's bf16 projections, issue #17).

Owns :class:`PackedLinear` and the operator ``dhian::packed_linear`` behind it.

Why: ``F.linear`` on bf16 CPU tensors reorders the (N, K) weight into oneDNN's layout on
every call; at decoding sizes (M = 1..8 rows) that reorder costs about as much as the GEMM, so
bf16 decoding read half of fp32's bytes and was no faster (docs/speed.md, LLM section). Here
the reorder happens once (``torch.ops.mkldnn._reorder_linear_weight``) and each call is one
``torch.ops.mkldnn._linear_pointwise`` (AMX where the CPU has it) — bit-identical outputs.

Inductor cannot lower ``mkldnn._linear_pointwise`` on a packed weight that is a graph input
(it expects weights it froze and packed itself), so under ``torch.compile`` the call goes
through the custom operator ``dhian::packed_linear`` (an opaque extern call for Inductor; the
weight stays an input, so compiled code is shared by models of the same shapes). Eagerly the
oneDNN operator is called directly (no custom-op dispatch cost).

The packed weight is a plain attribute (an opaque oneDNN tensor), not a parameter: the layer
cannot be moved or cast (build it again from the float weight), but its state dict holds the
plain (N, K) ``weight`` (unpacked on save, packed again on load), so saving and exporting a
model that holds it work as with ``nn.Linear``.

Shapes: x (..., K) → (..., N); weight (N, K) = (out_features, in_features).
Imports: torch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["PackedLinear", "packed_linear", "packed_linear_available"]


def packed_linear_available() -> bool:
    """Whether this torch build has the oneDNN operators :class:`PackedLinear` needs and the
    CPU computes bf16 in hardware (AVX512_BF16 or AMX); elsewhere keep ``nn.Linear``."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        ops = (torch.ops.mkldnn._linear_pointwise.default, torch.ops.mkldnn._reorder_linear_weight)
    except (AttributeError, RuntimeError):
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    native = any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)
    return all(ops) and native


@torch.library.custom_op("dhian::packed_linear", mutates_args=())
def packed_linear(x: Tensor, packed: Tensor, out_features: int) -> Tensor:
    """x (M, K) bf16 times the packed weight's transpose → (M, N) with N = ``out_features``."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")


@packed_linear.register_fake
def _packed_linear_fake(x: Tensor, packed: Tensor, out_features: int) -> Tensor:
    return x.new_empty(x.size(0), out_features)  # (M, N)


class PackedLinear(nn.Module):
    """``y = x Wᵀ`` (no bias) with W reordered once for oneDNN; built from a bf16 (or any
    float, cast to bf16) ``weight`` (N, K). Takes and returns bf16."""

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        if weight.dim() != 2:
            raise ValueError(f"PackedLinear: weight must be (N, K), received {tuple(weight.shape)}")
        self.out_features, self.in_features = weight.shape
        self.packed = self._pack(weight)

    @staticmethod
    def _pack(weight: Tensor) -> Tensor:
        w = weight.detach().to(torch.bfloat16).contiguous()  # (N, K)
        return torch.ops.mkldnn._reorder_linear_weight(w, None)

    @classmethod
    def from_float(cls, layer: nn.Linear) -> PackedLinear:
        """The packed form of the bias-free float ``layer``."""
        if layer.bias is not None:
            raise ValueError("PackedLinear: the layer has a bias; only bias-free layers pack")
        return cls(layer.weight)

    @property
    def weight(self) -> Tensor:
        """The plain (N, K) bf16 weight (unpacked: a copy)."""
        return self.packed.to_dense()

    def forward(self, x: Tensor) -> Tensor:
        """x (..., K) → (..., N)."""
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)  # (M, K)
        if torch.compiler.is_compiling():
            y = packed_linear(flat, self.packed, self.out_features)
        else:
            y = torch.ops.mkldnn._linear_pointwise(flat, self.packed, None, "none", [], "")
        return y.reshape(*lead, self.out_features)  # (..., N)

    def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "weight"] = self.weight

    def _load_from_state_dict(
        self,
        state_dict: Any,
        prefix: str,
        local_metadata: Any,
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        key = prefix + "weight"
        if key not in state_dict:
            missing_keys.append(key)
            return
        w = state_dict[key]
        if tuple(w.shape) != (self.out_features, self.in_features):
            error_msgs.append(
                f"PackedLinear: {key} has shape {tuple(w.shape)}, expected "
                f"{(self.out_features, self.in_features)}"
            )
            return
        self.packed = self._pack(w)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bf16 packed"
