"""bf16 weights with float32 math: a linear layer, and an embedding table that is also the tied
output layer, whose weights are held as bfloat16 (2 bytes a weight) and multiplied in float32.
Every product is float32 matmul with the bf16 weights widened (exact), up to summation order;
activations, norms and the residual stream stay float32 (the LLaMA family's ``--dtype bf16``
on the CPU, issue #17).

Owns :class:`Bf16Linear`, :class:`Bf16Embedding` (+ :class:`Bf16Head`, its tied output layer)
and the tiled layout they share (:func:`to_tiles`, :func:`from_tiles`).

How it is fast: up to :data:`KERNEL_ROWS` rows (decoding steps, short prompts; eager or
compiled) go to dhian's C++ kernel (:func:`dhian.nn.cpu_kernels.bf16_mm`, AVX-512, built on
first use), which reads each weight's 2 bytes once, in order, and widens them in registers:
SmolLM2's 121 products at one row in ~11 ms (24 GB/s) where oneDNN's prepacked bf16 GEMM took
~16 ms. Other products (long prompts, no kernel) widen the weight to float32
:data:`_SLICE` output features at a time and use ``torch.matmul`` (compute-bound there, so as
fast as the float32 model).

Layout: ``tiles`` (N'/S, K'/2, S, 2) bfloat16 with S = :data:`TILE` = 16, element
``[t, p, o, i] = W[S·t + o, 2p + i]`` (one 64-byte line holds 16 outputs' weights for two
inputs); N' and K' are N and K rounded up to a multiple of S and of 2, the padding zeros.
State dicts hold the plain (N, K) bf16 ``weight`` (as ``nn.Linear`` / ``nn.Embedding`` do),
so saving and exporting work as for a plain bf16 model. Inference only (buffers, no gradient).
Notation: M rows, K inputs, N outputs, V vocabulary, E embedding dim.
Imports: torch, :mod:`dhian.nn.cpu_kernels`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dhian.nn import cpu_kernels

__all__ = [
    "KERNEL_ROWS",
    "TILE",
    "Bf16Embedding",
    "Bf16Head",
    "Bf16Linear",
    "from_tiles",
    "to_tiles",
]

#: output features per tile (one AVX-512 vector of float32)
TILE = 16
#: products with at most this many rows take the kernel; above it the float32 matmul of the
#: widened weight is faster (SmolLM2's 121 products: kernel 11 / 14 / 76 ms at 1 / 8 / 64 rows,
#: oneDNN bf16 16 / 17 / 24; the kernel's FMAs run out of compute past ~16 rows)
KERNEL_ROWS = 16
#: output features widened at a time on the float32 path (a 1024 x 576 slice is 2.4 MB: it
#: stays in cache between widening and use)
_SLICE = 1024


def to_tiles(weight: Tensor) -> Tensor:
    """(N, K) float → (N'/16, K'/2, 16, 2) bfloat16 tiles (see the module docstring), N' and K'
    padded with zeros to multiples of 16 and 2."""
    n, k = weight.shape
    w = F.pad(weight.detach().to(torch.bfloat16), (0, -k % 2, 0, -n % TILE))  # (N', K')
    tiles = w.reshape(w.size(0) // TILE, TILE, w.size(1) // 2, 2)  # (N'/S, S, K'/2, 2)
    return tiles.permute(0, 2, 1, 3).contiguous()  # (N'/S, K'/2, S, 2)


def _untiled(tiles: Tensor) -> Tensor:
    """(T, K'/2, S, 2) tiles → the padded (T·S, K') weight (a copy), in the tiles' dtype."""
    nt, pairs, s, _ = tiles.shape
    return tiles.permute(0, 2, 1, 3).reshape(nt * s, pairs * 2)  # (N', K')


def from_tiles(tiles: Tensor, n: int, k: int) -> Tensor:
    """The plain (n, k) weight of ``tiles`` (a copy), in the tiles' dtype."""
    return _untiled(tiles)[:n, :k].contiguous()


def _kernel_takes(x: Tensor, tiles: Tensor) -> bool:
    """Whether :func:`dhian.nn.cpu_kernels.bf16_mm` computes ``x Wᵀ`` for x (M, K'): few
    enough rows, bf16 CPU tiles, and the kernels usable (:func:`~dhian.nn.cpu_kernels.usable`)."""
    if not 1 <= x.shape[0] <= KERNEL_ROWS or tiles.dtype != torch.bfloat16:
        return False
    if x.device.type != "cpu" or tiles.device.type != "cpu":
        return False
    return cpu_kernels.usable()


def _product(x: Tensor, tiles: Tensor, n: int, k: int) -> Tensor:
    """``x Wᵀ`` in float32 for x (M, k) and the tiled W (n, k) → (M, n)."""
    if k % 2:  # the tiles carry a zero input column
        x = F.pad(x, (0, 1))  # (M, K')
    if _kernel_takes(x, tiles):
        y = cpu_kernels.bf16_mm(x.contiguous(), tiles)  # (M, N')
        return y if y.shape[1] == n else y[:, :n]  # (M, N)
    s = _SLICE // TILE  # tiles per slice
    parts = []
    for start in range(0, tiles.shape[0], s):
        w = _untiled(tiles[start : start + s]).float()  # (s·S, K') float32
        parts.append(x @ w.T)  # (M, s·S)
    y = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)  # (M, N')
    return y if y.shape[1] == n else y[:, :n]  # (M, N)


class _PlainWeightState(nn.Module):
    """State dicts that hold the plain (N, K) bf16 ``weight`` (what ``weight`` returns), as
    ``nn.Linear`` / ``nn.Embedding`` do; loading one hands it to :meth:`_set_weight`."""

    @property
    def weight(self) -> Tensor:
        raise NotImplementedError

    def _set_weight(self, w: Tensor, key: str, error_msgs: list[str]) -> None:
        raise NotImplementedError

    def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
        destination[prefix + "weight"] = self.weight  # the plain weight, not the tiles

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
        self._set_weight(state_dict[key], key, error_msgs)


class _Bf16Tiles(_PlainWeightState):
    """A (rows, cols) weight held as bf16 tiles: the plain ``weight``, its loading, and the
    product ``x Wᵀ`` in float32."""

    tiles: Tensor
    #: the weight's dims, as the error messages name them
    _dims = "(rows, cols)"

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        if weight.dim() != 2:
            raise ValueError(
                f"{type(self).__name__}: weight must be {self._dims}, received "
                f"{tuple(weight.shape)}"
            )
        self._rows, self._cols = weight.shape
        self.register_buffer("tiles", to_tiles(weight))

    @property
    def weight(self) -> Tensor:
        """The plain (rows, cols) bf16 weight (a copy)."""
        return from_tiles(self.tiles, self._rows, self._cols)

    def _set_weight(self, w: Tensor, key: str, error_msgs: list[str]) -> None:
        shape = (self._rows, self._cols)
        if tuple(w.shape) != shape:
            error_msgs.append(
                f"{type(self).__name__}: {key} has shape {tuple(w.shape)}, expected {shape}"
            )
            return
        self.tiles = to_tiles(w.to(self.tiles.device))

    def _times_transpose(self, x: Tensor) -> Tensor:
        """x (..., cols) → float32 (..., rows) = ``x Wᵀ``."""
        flat = x.reshape(-1, self._cols)  # (M, cols)
        if flat.dtype != torch.float32:
            flat = flat.float()
        y = _product(flat, self.tiles, self._rows, self._cols)  # (M, rows)
        return y.view(*x.shape[:-1], self._rows)  # (..., rows)


class Bf16Linear(_Bf16Tiles):
    """``y = x Wᵀ`` (no bias) with W (N, K) held as bf16 tiles; takes and returns float32."""

    _dims = "(N, K)"

    def __init__(self, weight: Tensor) -> None:
        super().__init__(weight)
        self.out_features, self.in_features = self._rows, self._cols

    @classmethod
    def from_float(cls, layer: nn.Linear) -> Bf16Linear:
        """The bf16 form of the bias-free float ``layer`` (its weight rounded to bf16)."""
        if layer.bias is not None:
            raise ValueError("Bf16Linear: the layer has a bias; only bias-free layers convert")
        return cls(layer.weight)

    def forward(self, x: Tensor) -> Tensor:
        """x (..., K) → float32 (..., N)."""
        return self._times_transpose(x)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bf16 tiles"


class Bf16Embedding(_Bf16Tiles):
    """A (V, E) bf16 table in tiles, used both for lookups (:meth:`forward`, float32 rows) and
    as the tied output layer (:meth:`logits`)."""

    _dims = "(V, E)"

    def __init__(self, weight: Tensor) -> None:
        super().__init__(weight)
        self.num_embeddings, self.embedding_dim = self._rows, self._cols

    def forward(self, ids: Tensor) -> Tensor:
        """ids (...) long → float32 (..., E)."""
        flat = ids.reshape(-1)  # (L,)
        rows = self.tiles[flat // TILE, :, flat % TILE]  # (L, E'/2, 2)
        rows = rows.reshape(flat.numel(), -1)[:, : self.embedding_dim].float()  # (L, E)
        return rows.reshape(*ids.shape, self.embedding_dim)  # (..., E)

    def logits(self, x: Tensor) -> Tensor:
        """The tied output layer: x (..., E) → float32 (..., V), ``x Wᵀ``."""
        return self._times_transpose(x)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, bf16 tiles"


class Bf16Head(_PlainWeightState):
    """The output layer tied to a :class:`Bf16Embedding`: ``x (..., E) → (..., V)`` logits
    from the same tiles (one copy of the table serves both). Its state dict holds the table as
    ``weight``, as a tied ``nn.Linear`` head's does; loading it leaves the table to the
    embedding."""

    def __init__(self, table: Bf16Embedding) -> None:
        super().__init__()
        self._table = [table]  # not a submodule: the embedding owns (and moves) the table
        self.in_features, self.out_features = table.embedding_dim, table.num_embeddings

    @property
    def table(self) -> Bf16Embedding:
        """The embedding whose tiles this head reads."""
        return self._table[0]

    @property
    def weight(self) -> Tensor:
        """The plain (V, E) bf16 table (a copy)."""
        return self.table.weight

    def forward(self, x: Tensor) -> Tensor:
        """x (..., E) → float32 (..., V)."""
        return self.table.logits(x)

    def _set_weight(self, w: Tensor, key: str, error_msgs: list[str]) -> None:
        pass  # tied: the embedding loads the table
