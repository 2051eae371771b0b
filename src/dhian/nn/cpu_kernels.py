"""dhian's own C++ kernels for the CPU: built on first use, cached, and used where available.

Owns :func:`kernel_available` (builds or loads them once per process), :func:`kernel_ready`,
and the ops:
- :func:`q4_mm` / :func:`q8_mm`: ``y (M, N) = x (M, K) · Wᵀ`` for a few rows (up to :data:`KERNEL_ROWS`),
  the weight in :mod:`dhian.nn.block_quant`'s tiled layouts (``kernels/block_quant.cpp``). They
  compute what :func:`dhian.nn.block_quant.q4_rows` / ``q8_rows`` compute — the file's float32
  weights ``q·d + m`` times float32 activations — up to summation order; for SmolLM2's 120
  projections at one row 4.1 ms against ~7 for Inductor's fused loop (docs/speed.md).
- :func:`bf16_mm`: the same few-row product with a bf16 weight in :mod:`dhian.nn.bf16_linear`'s
  tiled layout, float32 activations and sums (``kernels/bf16_mm.cpp``): float32 matmul with
  the bf16 weights widened exactly, reading 2 bytes a weight.
- :func:`decode_attention`: one decoding step's attention over a static KV cache, reading only
  the slots up to each row's last allowed one (``kernels/decode_attention.cpp``); SDPA's flash
  kernel reads and masks the whole cache.
- :func:`rope_cache_write`: one decoding step's RoPE of q and k and the write of k, v into the
  cache, from the fused q|k|v projection, in one call (``kernels/rope_cache.cpp``): the same
  bits as the ~25 small PyTorch ops it replaces per layer in eager decoding.
- :func:`rms_norm`: RMSNorm of a few float32 rows in one call (``kernels/rms_norm.cpp``; eager
  decoding: PyTorch's is six small ops).
The sources say how they work in their headers.

Built with ``torch.utils.cpp_extension.load`` (``ninja`` and the C++ compiler Inductor also
needs) into ``$DHIAN_CACHE/kernels`` (default ``~/.cache/dhian/kernels``): about 15 s the
first time on a machine, a fraction of a second to load afterwards (ninja sees it is up to
date; a changed source is rebuilt). The ops are ``torch.ops.dhian_kernels.*`` with fake
kernels registered here, so ``torch.compile`` places them in a compiled graph as calls. Not
available — and callers fall back to their PyTorch paths — on a CPU without AVX-512, when the
build fails (a warning says why, once), or when ``DHIAN_KERNELS=0``.
Notation: M rows, K inputs, N outputs; B batch, Hkv key/value heads, G query heads per
key/value head, D head dim, Tmax cache slots.
Imports: stdlib, torch.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
from pathlib import Path

import torch
from torch import Tensor

__all__ = [
    "KERNEL_ROWS",
    "bf16_mm",
    "decode_attention",
    "eager_float32",
    "kernel_available",
    "kernel_ready",
    "q4_mm",
    "q8_mm",
    "rms_norm",
    "rope_cache_write",
    "usable",
]

#: products with at most this many rows take the block-quant kernel (8 rows at a time, each tile
#: read once from memory); above it dequantising to float32 once and a float32 matmul is
#: faster (SmolLM2's 120 projections: kernel 10 / 17 / 60 / 119 ms at 8 / 16 / 64 / 128 rows,
#: dequantise-and-matmul 98 / 98 / 129 / 172 ms; about even near 200)
KERNEL_ROWS = 192
#: the extension's name (the library the ops are registered under is ``dhian_kernels``)
_NAME = "dhian_cpu_kernels"
_SOURCES = [
    Path(__file__).parent / "kernels" / f
    for f in (
        "block_quant.cpp",
        "bf16_mm.cpp",
        "decode_attention.cpp",
        "rope_cache.cpp",
        "rms_norm.cpp",
    )
]
_FLAGS = [
    "-O3",
    "-mavx512f",
    "-mavx512bw",
    "-mavx512vl",
    "-mavx512dq",
    "-mfma",
    "-ffp-contract=off",  # w = q·d + m rounded as the file's dequantisation rounds it
    "-fopenmp",  # at::parallel_for is OpenMP in the header: without it the loop runs serially
]

_lock = threading.Lock()
_state: dict[str, bool] = {}


def _cpu_has_avx512() -> bool:
    return torch.backends.cpu.get_cpu_capability() in ("AVX512", "AMX")


def _build_dir() -> Path:
    root = Path(os.environ.get("DHIAN_CACHE") or Path.home() / ".cache" / "dhian").expanduser()
    path = root / "kernels"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _build() -> bool:
    from torch.utils import cpp_extension  # lazy: pulls in setuptools, only needed to build

    build_dir = _build_dir()
    if not any(build_dir.glob(f"{_NAME}*.so")):
        print(
            f"[dhian] building dhian's CPU kernels once into {build_dir} (~15 s)",
            file=sys.stderr,
            flush=True,
        )
    try:
        cpp_extension.load(
            name=_NAME,
            sources=[str(p) for p in _SOURCES],
            extra_cflags=_FLAGS,
            extra_ldflags=["-fopenmp"],
            build_directory=str(build_dir),
            is_python_module=False,
            verbose=False,
        )
    except Exception as exc:  # any build failure means: use the fallback paths
        warnings.warn(
            f"dhian's CPU kernels could not be built ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else exc!r}); int4-fp32 "
            f"models and decoding attention use the slower PyTorch paths. Set DHIAN_KERNELS=0 "
            f"to skip the build.",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    _register_fakes()
    return True


def _register_fakes() -> None:
    @torch.library.register_fake("dhian_kernels::q4_mm")
    def _q4_fake(x: Tensor, packed: Tensor, d: Tensor, m: Tensor) -> Tensor:
        return x.new_empty(x.shape[0], packed.shape[0] * packed.shape[-1])  # (M, N)

    @torch.library.register_fake("dhian_kernels::q8_mm")
    def _q8_fake(x: Tensor, codes: Tensor, scales: Tensor) -> Tensor:
        return x.new_empty(x.shape[0], codes.shape[0] * codes.shape[-1])  # (M, V)

    @torch.library.register_fake("dhian_kernels::bf16_mm")
    def _bf16_fake(x: Tensor, tiles: Tensor) -> Tensor:
        return x.new_empty(x.shape[0], tiles.shape[0] * tiles.shape[2])  # (M, N)

    @torch.library.register_fake("dhian_kernels::rms_norm")
    def _rms_fake(x: Tensor, weight: Tensor, eps: float) -> Tensor:
        return torch.empty_like(x)  # (M, E)

    @torch.library.register_fake("dhian_kernels::rope_cache_write")
    def _rope_fake(
        qkv: Tensor,
        cos: Tensor,
        sin: Tensor,
        slot: Tensor,
        k_buf: Tensor,
        v_buf: Tensor,
        heads: int,
    ) -> Tensor:
        return qkv.new_empty(qkv.shape[0], heads * k_buf.shape[-1])  # (B, H·D)

    @torch.library.register_fake("dhian_kernels::decode_attention")
    def _attention_fake(q: Tensor, k_buf: Tensor, v_buf: Tensor, mask: Tensor) -> Tensor:
        return torch.empty_like(q)  # (B, Hkv, G, D)


def kernel_available() -> bool:
    """Whether the kernels can be used in this process (built or loaded on the first call)."""
    if "ok" not in _state:
        with _lock:
            if "ok" not in _state:
                wanted = os.environ.get("DHIAN_KERNELS", "1") != "0"
                _state["ok"] = wanted and _cpu_has_avx512() and _build()
    return _state["ok"]


def kernel_ready() -> bool:
    """Whether the kernels are already loaded in this process (no build; safe to call while
    ``torch.compile`` traces, where a build must not start: code that compiles a step calls
    :func:`kernel_available` eagerly first — running the step eagerly once does)."""
    return _state.get("ok", False)


def usable() -> bool:
    """Whether a caller may take the kernels now: while ``torch.compile`` traces, only if they
    are already loaded (:func:`kernel_ready`; a build must not start inside tracing), else
    :func:`kernel_available` (builds or loads them on first use)."""
    if torch.compiler.is_compiling():
        return kernel_ready()
    return kernel_available()


def eager_float32(*tensors: Tensor) -> bool:
    """Whether an eager-only kernel path (the decoding step's RMSNorm, RoPE + cache write, the
    one-loop step) may run on ``tensors`` now: not while ``torch.compile`` traces (a compiled
    step fuses those ops itself), no gradient being recorded, every tensor float32 on the CPU,
    and the kernels available (:func:`kernel_available`: built or loaded on first use)."""
    if torch.compiler.is_compiling() or torch.is_grad_enabled():
        return False
    if not all(t.dtype == torch.float32 and t.device.type == "cpu" for t in tensors):
        return False
    return kernel_available()


def q4_mm(x: Tensor, packed: Tensor, d: Tensor, m: Tensor) -> Tensor:
    """x (M, K) float32 contiguous; packed (N/16, K/32, 16, 16) uint8,
    d, m (N/16, K/32, 16) float32 or float16 (one dtype) → (M, N) float32. Call
    :func:`kernel_available` first."""
    return torch.ops.dhian_kernels.q4_mm(x, packed, d, m)


def q8_mm(x: Tensor, codes: Tensor, scales: Tensor) -> Tensor:
    """x (M, E) float32 contiguous; codes (V/16, E/32, 32, 16) int8,
    scales (V/16, E/32, 16) float32 or float16 → (M, V) float32. Call :func:`kernel_available`
    first."""
    return torch.ops.dhian_kernels.q8_mm(x, codes, scales)


def bf16_mm(x: Tensor, tiles: Tensor) -> Tensor:
    """x (M, K) float32 contiguous; tiles (N/16, K/2, 16, 2) bfloat16 (element [t, p, o, i] =
    W[16t + o, 2p + i]) → (M, N) float32 = x · W.float()ᵀ up to summation order. Call
    :func:`kernel_available` first."""
    return torch.ops.dhian_kernels.bf16_mm(x, tiles)


def decode_attention(q: Tensor, k_buf: Tensor, v_buf: Tensor, mask: Tensor) -> Tensor:
    """q (B, Hkv, G, D), k_buf / v_buf (B, Hkv, Tmax, D) float32 contiguous, D a multiple of
    16; mask (B, Tmax) bool contiguous (True = attend) → (B, Hkv, G, D): softmax(q kᵀ/√D) v
    over each row's allowed slots (a row with none gives zeros). Call :func:`kernel_available`
    first."""
    return torch.ops.dhian_kernels.decode_attention(q, k_buf, v_buf, mask)


def rope_cache_write(
    qkv: Tensor, cos: Tensor, sin: Tensor, slot: Tensor, k_buf: Tensor, v_buf: Tensor, heads: int
) -> Tensor:
    """qkv (B, (H + 2·Hkv)·D) float32 contiguous (one new token per row), cos / sin (B or 1, D)
    float32 contiguous, slot (1,) or (B,) long; k_buf / v_buf (B, Hkv, Tmax, D) float32
    contiguous, written in place at each row's slot (k rotated, v as is) → q rotated (B, H·D)
    (= (B, Hkv, G, D)). RoPE in the half-split layout. Call :func:`kernel_available` first."""
    return torch.ops.dhian_kernels.rope_cache_write(qkv, cos, sin, slot, k_buf, v_buf, heads)


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """x (M, E) float32 contiguous, weight (E,) float32 → (M, E): ``x · rsqrt(mean(x²) + eps)
    · weight`` per row, rounded as ``nn.RMSNorm`` rounds it up to the order of the sum of
    squares. Call :func:`kernel_available` first."""
    return torch.ops.dhian_kernels.rms_norm(x, weight, eps)
