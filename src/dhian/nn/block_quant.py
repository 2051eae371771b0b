"""llama.cpp's block-quantised weights used as they are, with float32 math: a linear layer on
4-bit blocks (Q4_1 / Q4_0) and an embedding table that is also the tied output layer on 8-bit
blocks (Q8_0). Every product uses exactly the weight values of the file's float32
dequantisation, so a model built from them computes what the float32 model computes (up to
summation order), while holding the file's bytes: 4.5–5 bits a weight instead of 32.

Owns :class:`BlockQ4Linear`, :class:`BlockQ8Embedding` (+ :class:`BlockQ8Head`, its tied
output layer) and the fused few-row products :func:`q4_rows` / :func:`q8_rows`.

How it is fast: up to 192 rows (decoding steps, short prompts; eager or compiled) go to dhian's
C++ kernel (:mod:`dhian.nn.cpu_kernels`, AVX-512, built on first use) where it is
available. Without it, with one row to multiply inside a compiled graph
(``torch.compile``, CPU Inductor: the compiled decoding step), the product is written as
unpack → scale → multiply → sum, which Inductor turns into one vectorised loop that reads each
weight's 4 (or 8) bits once and never materialises a float32 weight. The weights are stored in
tiles of :data:`TILE` output features, each tile's bytes contiguous and its features
innermost, so the loop's vector lanes run over outputs (no horizontal sums) and it reads
memory in order. Every other product (eager code, prefill, batches) dequantises the weight to
float32 in slices of output features small enough to stay in cache and uses ``torch.matmul``:
exact, cheap per row when many rows share it, and dearer than the fused loop for one row (so
an ``int4-fp32`` model is meant to decode with its step compiled).

Layouts (G = K / 32 blocks along the input dim, N outputs, V vocabulary, E embedding dim,
S = TILE output features per tile, or 1 when N is not a multiple of TILE):
- Q4: ``packed`` (N/S, G, 16, S) uint8, byte j of block g holding the code of input ``32g + j``
  in its low nibble and of ``32g + 16 + j`` in its high nibble (the file's own nibble order);
  ``d``, ``m`` (N/S, G, S), weight ``w = q·d + m`` (Q4_0: ``m = −8·d``).
- Q8: ``codes`` (V/S, G, 32, S) int8 and ``scales`` (V/S, G, S), ``w = q·s``.
The maps (d, m, scales) are float16 where that holds them exactly (always, for a GGUF file's
blocks), else float32; every product widens them to float32 first.
Inference only (buffers, no gradient).
Imports: torch, :mod:`dhian.nn.cpu_kernels`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from functools import reduce

import torch
from torch import Tensor, nn

from dhian.nn import cpu_kernels

__all__ = [
    "BLOCK",
    "FUSED_ROWS",
    "TILE",
    "BlockQ4Linear",
    "BlockQ8Embedding",
    "BlockQ8Head",
    "q4_rows",
    "q8_rows",
]

#: values per block (llama.cpp's QK4_1 / QK8_0)
BLOCK = 32
#: output features per tile (one AVX-512 vector of float32)
TILE = 16
#: products with at most this many rows take the fused loop when compiled
FUSED_ROWS = 1
#: runs of blocks along the input dim that a fused one-row loop reads side by side: each tile's
#: blocks are summed as STREAMS separate sums over equal runs, which Inductor fuses into one loop
#: reading STREAMS places of the tile at once (more memory requests in flight than one
#: sequential stream; the compiled int4-fp32 step at batch 1: 47 → 52 tok/s with 2, and 3 was
#: slower than 2 in a micro-benchmark)
STREAMS = 2
#: output features dequantised at a time on the float32 path (bounds the scratch memory: a
#: slice of a 576-wide layer is 2.4 MB, so it stays in cache between dequantising and use)
_SLICE = 1024


def _in_own_buffer(x: Tensor) -> Tensor:
    """x, computed into a buffer of its own when compiled (eagerly: x itself).

    Without it Inductor inlines the producer of a fused loop's input (an RMSNorm, SiLU·up, …)
    into the loop and recomputes it for every tile of outputs: a scalar square root and
    division per 32 weights read (the compiled int4-fp32 step at batch 1: 45 → 47 tok/s with it). The
    prim (Inductor's own) makes its lowering realise the input; it is a no-op on a tensor
    that already has the strides asked for."""
    import torch._inductor.inductor_prims  # registers prims.inductor_force_stride_order

    return torch.ops.prims.inductor_force_stride_order(x, x.stride())


def _runs(g: int) -> list[slice]:
    """The equal runs of a tile's G blocks that a fused loop reads side by side: STREAMS of
    them where G divides, else one."""
    n = g // STREAMS if g % STREAMS == 0 else g
    return [slice(start, start + n) for start in range(0, g, n)]


def q4_rows(x: Tensor, packed: Tensor, d: Tensor, m: Tensor) -> Tensor:
    """``x Wᵀ`` for a few rows x (M, K) of a tiled Q4 weight (see the module docstring), written
    as the unpack → scale → multiply → sum that Inductor fuses into one loop; the blocks are
    summed in P = :data:`STREAMS` runs side by side, so the loop reads P places of each tile at
    once. → (M, N)."""
    g = packed.shape[1]
    x = _in_own_buffer(x)
    xb = x.reshape(-1, 1, g, 2, BLOCK // 2, 1)  # (M, 1, G, 2, 16, 1)
    sums = []
    for blocks in _runs(g):
        dp, mp = d[:, blocks, None, :], m[:, blocks, None, :]  # (N/S, G/P, 1, S)
        codes = packed[:, blocks]  # (N/S, G/P, 16, S)
        lo = (codes & 15).float() * dp + mp  # (N/S, G/P, 16, S)
        hi = (codes >> 4).float() * dp + mp
        sums += [(xb[:, :, blocks, 0] * lo).sum((2, 3)), (xb[:, :, blocks, 1] * hi).sum((2, 3))]
    return reduce(operator.add, sums).reshape(x.shape[0], -1)  # (M, N/S, S) → (M, N)


def q8_rows(x: Tensor, codes: Tensor, scales: Tensor) -> Tensor:
    """``x Wᵀ`` for a few rows x (M, E) of a tiled Q8 table, fused like :func:`q4_rows`.
    → (M, V)."""
    g = codes.shape[1]
    x = _in_own_buffer(x)
    xb = x.reshape(-1, 1, g, BLOCK, 1)  # (M, 1, G, 32, 1)
    sums = []
    for blocks in _runs(g):
        w = codes[:, blocks].float() * scales[:, blocks, None, :]  # (V/S, G/P, 32, S)
        sums.append((xb[:, :, blocks] * w).sum((2, 3)))  # (M, V/S, S)
    return reduce(operator.add, sums).reshape(x.shape[0], -1)  # (M, V)


def _sliced_matmul(x: Tensor, n: int, columns: Callable[[int, int], Tensor]) -> Tensor:
    """``x Wᵀ`` (M, n) for x (M, K), with ``columns(start, stop)`` giving Wᵀ[:, start:stop]
    (K, stop − start) in float32, dequantised :data:`_SLICE` output features at a time."""
    if n <= _SLICE:
        return x @ columns(0, n)
    return torch.cat([x @ columns(s, min(s + _SLICE, n)) for s in range(0, n, _SLICE)], dim=-1)


def _as_maps(*maps: Tensor) -> list[Tensor]:
    """Block maps (d and m, or scales), contiguous, as float16 where every value is a float16
    value — the file's own precision: GGUF stores them as float16, so maps from a file always
    fit — else float32. Products widen them to float32 exactly, so the weights are the same
    either way; the kernel reads 20 bytes per 32 Q4 weights instead of 24 (SmolLM2's
    projections at one row: 6.2 → 4.2 ms)."""
    halves = [t.to(torch.float16).contiguous() for t in maps]
    if all(torch.equal(h.float(), t.float()) for h, t in zip(halves, maps, strict=True)):
        return halves  # (overflow to inf or a NaN compares unequal: those stay float32)
    return [t.float().contiguous() for t in maps]


def _kernel_takes(x: Tensor, codes: Tensor) -> bool:
    """Whether :mod:`dhian.nn.cpu_kernels` computes ``x Wᵀ`` for x (M, K) and these
    tiled codes: few enough rows, whole tiles of :data:`TILE`, CPU tensors, and the kernels
    usable (:func:`~dhian.nn.cpu_kernels.usable`)."""
    if not 1 <= x.shape[0] <= cpu_kernels.KERNEL_ROWS or codes.shape[-1] != TILE:
        return False
    if x.device.type != "cpu" or codes.device.type != "cpu":
        return False
    return cpu_kernels.usable()


def _tile(n: int) -> int:
    return TILE if n % TILE == 0 else 1


def _to_tiles(t: Tensor) -> Tensor:
    """(G, ..., N) → (N/S, G, ..., S), contiguous."""
    n = t.shape[-1]
    s = _tile(n)
    tiles = t.reshape(*t.shape[:-1], n // s, s)  # (G, ..., N/S, S)
    return tiles.movedim(-2, 0).contiguous()


def _from_tiles(t: Tensor) -> Tensor:
    """(N/S, G, ..., S) → (G, ..., N)."""
    return t.movedim(0, -2).flatten(-2)


class BlockQ4Linear(nn.Module):
    """``y = x Wᵀ`` with W (N, K) held as 4-bit codes and a (d, m) per block of 32."""

    packed: Tensor
    d: Tensor
    m: Tensor

    def __init__(self, packed: Tensor, d: Tensor, m: Tensor) -> None:
        super().__init__()
        nt, g, half, s = packed.shape
        shape = (nt, g, s)
        if packed.dtype != torch.uint8 or half != BLOCK // 2 or d.shape != shape != m.shape:
            raise ValueError(
                f"BlockQ4Linear: expected uint8 packed (N/S, G, 16, S) and d, m (N/S, G, S), "
                f"received {packed.dtype} {tuple(packed.shape)}, {tuple(d.shape)}, "
                f"{tuple(m.shape)}"
            )
        self.in_features, self.out_features = g * BLOCK, nt * s
        self.register_buffer("packed", packed.contiguous())
        d, m = _as_maps(d, m)
        self.register_buffer("d", d)
        self.register_buffer("m", m)

    @classmethod
    def from_codes(cls, q: Tensor, d: Tensor, m: Tensor) -> BlockQ4Linear:
        """From codes q (N, K) in 0..15 and per-block maps d, m (N, G): ``w = q·d + m``."""
        n, k = q.shape
        if k % BLOCK or d.shape != (n, k // BLOCK) or m.shape != d.shape:
            raise ValueError(
                f"BlockQ4Linear: codes {tuple(q.shape)} need K a multiple of {BLOCK} and d, m "
                f"of shape {(n, k // BLOCK)}, received {tuple(d.shape)} and {tuple(m.shape)}"
            )
        if q.numel() and (int(q.min()) < 0 or int(q.max()) > 15):
            raise ValueError("BlockQ4Linear: codes must lie in 0..15")
        blocks = q.to(torch.uint8).reshape(n, k // BLOCK, 2, BLOCK // 2)  # (N, G, 2, 16)
        packed = blocks[:, :, 0] | (blocks[:, :, 1] << 4)  # (N, G, 16)
        return cls(
            _to_tiles(packed.permute(1, 2, 0)), _to_tiles(d.T.float()), _to_tiles(m.T.float())
        )  # (N/S, G, 16, S), (N/S, G, S) x 2

    def dequantized_weight(self) -> Tensor:
        """The (N, K) float32 weight (what every product multiplies by)."""
        return self._columns(0, self.out_features).T.contiguous()

    def _columns(self, start: int, stop: int) -> Tensor:
        """Wᵀ[:, start:stop] as float32 (K, n); start and stop multiples of the tile."""
        s = self.packed.shape[-1]
        p = _from_tiles(self.packed[start // s : stop // s])  # (G, 16, n)
        d = _from_tiles(self.d[start // s : stop // s])  # (G, n)
        m = _from_tiles(self.m[start // s : stop // s])  # (G, n)
        q = torch.stack([p & 15, p >> 4], dim=1).float()  # (G, 2, 16, n)
        w = q * d[:, None, None, :] + m[:, None, None, :]  # (G, 2, 16, n)
        return w.reshape(self.in_features, stop - start)  # (K, n)

    def forward(self, x: Tensor) -> Tensor:
        """x (..., K) float32 → (..., N) float32."""
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features).float()  # (M, K)
        if _kernel_takes(flat, self.packed):
            y = cpu_kernels.q4_mm(flat.contiguous(), self.packed, self.d, self.m)
        elif flat.shape[0] <= FUSED_ROWS and torch.compiler.is_compiling():
            y = q4_rows(flat, self.packed, self.d, self.m)
        else:
            y = _sliced_matmul(flat, self.out_features, self._columns)
        return y.reshape(*lead, self.out_features)  # (..., N)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, block={BLOCK}"


class BlockQ8Embedding(nn.Module):
    """A (V, E) table of int8 codes with a scale per block of 32 values (Q8_0), used
    both for lookups (:meth:`forward`) and as the tied output layer (:meth:`logits`)."""

    codes: Tensor
    scales: Tensor

    def __init__(self, codes: Tensor, scales: Tensor) -> None:
        super().__init__()
        vt, g, block, s = codes.shape
        if codes.dtype != torch.int8 or block != BLOCK or scales.shape != (vt, g, s):
            raise ValueError(
                f"BlockQ8Embedding: expected int8 codes (V/S, G, 32, S) and scales (V/S, G, S), "
                f"received {codes.dtype} {tuple(codes.shape)} and {tuple(scales.shape)}"
            )
        self.num_embeddings, self.embedding_dim = vt * s, g * BLOCK
        self.register_buffer("codes", codes.contiguous())
        self.register_buffer("scales", _as_maps(scales)[0])

    @classmethod
    def from_rows(cls, codes: Tensor, scales: Tensor) -> BlockQ8Embedding:
        """From row-major codes (V, E) int8 and scales (V, E/32) (the file's Q8_0 order)."""
        v, e = codes.shape
        if e % BLOCK or scales.shape != (v, e // BLOCK):
            raise ValueError(
                f"BlockQ8Embedding: codes {tuple(codes.shape)} need scales of shape "
                f"{(v, e // BLOCK)}, received {tuple(scales.shape)}"
            )
        by_block = codes.reshape(v, e // BLOCK, BLOCK).permute(1, 2, 0)  # (G, 32, V)
        return cls(_to_tiles(by_block), _to_tiles(scales.T.float()))  # (V/S, G, 32, S), (V/S, G, S)

    def forward(self, ids: Tensor) -> Tensor:
        """ids (...) long → float32 (..., E): each block's codes times its scale."""
        s = self.codes.shape[-1]
        flat = ids.reshape(-1)  # (L,)
        tile, lane = flat // s, flat % s
        q = self.codes[tile, :, :, lane].float()  # (L, G, 32)
        rows = q * self.scales[tile, :, lane][..., None]  # (L, G, 32)
        return rows.reshape(*ids.shape, self.embedding_dim)  # (..., E)

    def dequantized_weight(self) -> Tensor:
        """The whole (V, E) table in float32."""
        return self._columns(0, self.num_embeddings).T.contiguous()

    def _columns(self, start: int, stop: int) -> Tensor:
        """Wᵀ[:, start:stop] as float32 (E, n); start and stop multiples of the tile."""
        s = self.codes.shape[-1]
        q = _from_tiles(self.codes[start // s : stop // s]).float()  # (G, 32, n)
        w = q * _from_tiles(self.scales[start // s : stop // s])[:, None, :]  # (G, 32, n)
        return w.reshape(self.embedding_dim, stop - start)  # (E, n)

    def logits(self, x: Tensor) -> Tensor:
        """The tied output layer: x (..., E) → (..., V) float32, ``x Wᵀ``."""
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.embedding_dim).float()  # (M, E)
        if _kernel_takes(flat, self.codes):
            y = cpu_kernels.q8_mm(flat.contiguous(), self.codes, self.scales)
        elif flat.shape[0] <= FUSED_ROWS and torch.compiler.is_compiling():
            y = q8_rows(flat, self.codes, self.scales)
        else:
            y = _sliced_matmul(flat, self.num_embeddings, self._columns)
        return y.reshape(*lead, self.num_embeddings)  # (..., V)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, block={BLOCK}"


class BlockQ8Head(nn.Module):
    """The output layer tied to a :class:`BlockQ8Embedding`: ``x (..., E) → (..., V)`` logits
    from the same codes (one copy of the table serves both)."""

    def __init__(self, table: BlockQ8Embedding) -> None:
        super().__init__()
        self.table = table
        self.in_features, self.out_features = table.embedding_dim, table.num_embeddings

    def forward(self, x: Tensor) -> Tensor:
        """x (..., E) → float32 (..., V)."""
        return self.table.logits(x)
