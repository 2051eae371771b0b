"""dhian's own C++ kernel for few-row products with block-quantised weights (float32 math):
built on first use, cached, and used by :mod:`dhian.nn.block_quant` where it is available.

Owns :func:`kernel_available` (builds or loads it once per process) and :func:`q4_mm` /
:func:`q8_mm` (``y (M, N) = x (M, K) · Wᵀ`` for M ≤ :data:`KERNEL_ROWS` rows, the weight in
:mod:`dhian.nn.block_quant`'s tiled layouts). The source is ``kernels/block_quant.cpp`` next to
this file (AVX-512 intrinsics; its header says how it works). It computes exactly what
:func:`dhian.nn.block_quant.q4_rows` / ``q8_rows`` compute — the file's float32 weights
``q·d + m`` times float32 activations — up to summation order, 2× faster than Inductor's loop
for one row and 2–3× faster than a float32 matmul for 8 (docs/speed.md).

Built with ``torch.utils.cpp_extension.load`` (``ninja`` and the C++ compiler Inductor also
needs) into ``$DHIAN_CACHE/kernels`` (default ``~/.cache/dhian/kernels``): about 10 s the
first time on a machine, a fraction of a second to load afterwards (ninja sees it is up to
date; a changed source is rebuilt). The ops are ``torch.ops.dhian_kernels.q4_mm`` /
``q8_mm`` with fake kernels registered here, so ``torch.compile`` places them in a compiled
graph as calls. Not available — and :mod:`dhian.nn.block_quant` falls back to its own paths —
on a CPU without AVX-512, when the build fails (a warning says why, once), or when
``DHIAN_KERNELS=0``.
Notation: M rows, K inputs, N outputs.
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

__all__ = ["KERNEL_ROWS", "kernel_available", "kernel_ready", "q4_mm", "q8_mm"]

#: the most rows one kernel call takes (its register blocking; MAX_ROWS in the C++ source)
KERNEL_ROWS = 8
#: the extension's name (the library the ops are registered under is ``dhian_kernels``)
_NAME = "dhian_block_quant"
_SOURCE = Path(__file__).parent / "kernels" / "block_quant.cpp"
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
            f"[dhian] building the block-quant kernel once into {build_dir} (~10 s)",
            file=sys.stderr,
            flush=True,
        )
    try:
        cpp_extension.load(
            name=_NAME,
            sources=[str(_SOURCE)],
            extra_cflags=_FLAGS,
            extra_ldflags=["-fopenmp"],
            build_directory=str(build_dir),
            is_python_module=False,
            verbose=False,
        )
    except Exception as exc:  # any build failure means: use the fallback paths
        warnings.warn(
            f"dhian's block-quant kernel could not be built ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else exc!r}); int4-fp32 "
            f"models use the slower pure-PyTorch paths. Set DHIAN_KERNELS=0 to skip the build.",
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


def kernel_available() -> bool:
    """Whether the kernel can be used in this process (built or loaded on the first call)."""
    if "ok" not in _state:
        with _lock:
            if "ok" not in _state:
                wanted = os.environ.get("DHIAN_KERNELS", "1") != "0"
                _state["ok"] = wanted and _cpu_has_avx512() and _build()
    return _state["ok"]


def kernel_ready() -> bool:
    """Whether the kernel is already loaded in this process (no build; safe to call while
    ``torch.compile`` traces, where a build must not start: code that compiles a step calls
    :func:`kernel_available` eagerly first — running the step eagerly once does)."""
    return _state.get("ok", False)


def q4_mm(x: Tensor, packed: Tensor, d: Tensor, m: Tensor) -> Tensor:
    """x (M, K) float32 contiguous, M ≤ :data:`KERNEL_ROWS`; packed (N/16, K/32, 16, 16) uint8,
    d, m (N/16, K/32, 16) float32 → (M, N) float32. Call :func:`kernel_available` first."""
    return torch.ops.dhian_kernels.q4_mm(x, packed, d, m)


def q8_mm(x: Tensor, codes: Tensor, scales: Tensor) -> Tensor:
    """x (M, E) float32 contiguous, M ≤ :data:`KERNEL_ROWS`; codes (V/16, E/32, 32, 16) int8,
    scales (V/16, E/32, 16) float32 → (M, V) float32. Call :func:`kernel_available` first."""
    return torch.ops.dhian_kernels.q8_mm(x, codes, scales)
