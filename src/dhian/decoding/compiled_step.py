"""``torch.compile`` (CPU Inductor) of a LLaMA model's static-shape decoding step, its
compiled code cached across processes, and the rule that says when compiling pays (issue #17).

Owns :class:`CompiledDecoder` (one model's compiled ``decode_step``, one compiled graph per
batch size B and cache length Tmax; :meth:`~CompiledDecoder.plan` tells
:func:`dhian.decoding.llm_generate.llm_generate` which step to use and how long a cache to
allocate), :class:`CompileRecord` (what dhian remembers of one compiled shape),
:func:`cache_bucket` (cache lengths rounded up to a power of two, so prompts of different
lengths share a compiled step), :func:`precision_label` and :func:`model_signature`.

Mechanism: ``torch.compile(model.decode_step, dynamic=False, fullgraph=True)``. The step has
static shapes for a given (B, Tmax) (the cache slot and positions are tensors, the key mask
covers the whole cache), so one generation compiles once. Inductor's FX-graph and AOTAutograd
caches are pointed at ``$DHIAN_CACHE/inductor`` (``TORCHINDUCTOR_CACHE_DIR``, unless the user
set it): a later process re-traces the step with Dynamo (seconds) but finds the lowered graph
and its compiled C++ kernels there and skips Inductor's code generation and the C++ compiler
(most of the first compile). The weights are inputs of the compiled graph, not constants, so
the cached code serves every model of the same architecture and precision (a fine-tuned copy of
SmolLM2 included); the cache is keyed on what the code depends on — module types, parameter and
buffer names, shapes, dtypes, the config, torch's version and the machine type
(:func:`model_signature`) — plus the precision label and (B, Tmax). Inductor adds its own keys
(CPU instruction set, compiler), so a stale entry is never used.

dhian's record of each compiled shape, ``$DHIAN_CACHE/compiled/<key>.json``, holds the cold
compile time, the latest warm start (an Inductor cache hit) and the per-step time of the eager
and the compiled step measured right after compiling (:meth:`CompiledDecoder.prepare`). The
``auto`` rule reads it: compile where ``new tokens × (eager − compiled step time)`` exceeds the
start-up cost (a warm start when the shape is cached, a cold compile otherwise), and always in a
long-lived process (``dhian serve``), where the compile runs in a background thread while the
requests decode eagerly.
Notation: B batch, Tmax cache slots.
Imports: torch, :mod:`dhian.nn.quantized_linear`, :mod:`dhian.data.fetch` (the cache dir).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dhian.data.fetch import cache_dir
from dhian.nn.bf16_linear import Bf16Embedding, Bf16Linear
from dhian.nn.block_quant import BlockQ4Linear, BlockQ8Embedding
from dhian.nn.cpu_kernels import kernel_available
from dhian.nn.quantized_linear import Int4Linear, Int8Linear

__all__ = [
    "COMPILE_CHOICES",
    "CompileRecord",
    "CompiledDecoder",
    "cache_bucket",
    "compiled_decode_step",
    "inductor_cache_dir",
    "model_signature",
    "precision_label",
]

#: the values of ``--compile``
COMPILE_CHOICES = ("auto", "on", "off")
#: the shortest cache a compiled step is built for (cache lengths are powers of two from here)
MIN_BUCKET = 256
#: a warm start (Inductor cache hit) is assumed to take this fraction of the cold compile until
#: one has been timed (rough, from the contended measurements of docs/speed.md)
WARM_FRACTION = 0.2
#: decoding steps timed (median, alternating) for the eager and the compiled step after
#: compiling
TIMING_STEPS = 8
#: Dynamo's per-function limit of compiled variants: every (B, Tmax) and every model of the
#: process is one (torch's default of 8 would fall back to eager silently)
RECOMPILE_LIMIT = 64

Shape = tuple[int, int]  # (B, Tmax)


def cache_bucket(length: int, limit: int) -> int:
    """The cache length a compiled step is built for: the smallest power of two ≥ ``length``
    and ≥ :data:`MIN_BUCKET`, but at most ``limit`` (the model's context) and never below
    ``length``."""
    if length < 1:
        raise ValueError(f"cache_bucket: length must be >= 1, got {length}")
    bucket = MIN_BUCKET
    while bucket < length:
        bucket *= 2
    return max(length, min(bucket, limit))


def precision_label(model: Any) -> str:
    """``int4`` | ``int4-fp32`` | ``int8`` (weight-only quantised projections) or the compute dtype
    (``fp32`` | ``bf16`` | ``float16`` …) of a LLaMA-family model."""
    kinds = {type(m) for m in model.modules()}
    if Int4Linear in kinds:
        return "int4"
    if BlockQ4Linear in kinds:
        return "int4-fp32"
    if Int8Linear in kinds:
        return "int8"
    if Bf16Linear in kinds or Bf16Embedding in kinds:
        return "bf16"  # bf16 weights, float32 math
    dtype = getattr(model, "compute_dtype", torch.float32)
    return {torch.float32: "fp32", torch.bfloat16: "bf16"}.get(dtype, str(dtype).split(".")[-1])


def model_signature(model: Any) -> str:
    """A 16-hex-digit hash of what a compiled step of ``model`` depends on: module types and
    names, parameter and buffer names/shapes/strides/dtypes/devices, the config, torch's version and
    the machine type, whether dhian's block-quant kernel is in use — not the weights' values
    (they are inputs of the compiled graph)."""
    h = hashlib.sha256()
    h.update(f"torch {torch.__version__} {platform.machine()} {type(model).__qualname__}".encode())
    h.update(repr(getattr(model, "cfg", "")).encode())
    for name, module in model.named_modules():
        h.update(f"{name}:{type(module).__qualname__};".encode())
    tensors = [*model.named_parameters(), *model.named_buffers()]
    for name, t in tensors:
        h.update(f"{name}:{tuple(t.shape)}:{t.stride()}:{t.dtype}:{t.device.type};".encode())
    if any(isinstance(m, BlockQ4Linear | BlockQ8Embedding) for m in model.modules()):
        # builds or loads dhian's kernel before anything is traced; a step with it and one
        # without are different programs with different timings
        h.update(f"block-quant kernel {kernel_available()};".encode())
    return h.hexdigest()[:16]


def inductor_cache_dir() -> Path:
    """Where Inductor keeps its compiled graphs: ``$TORCHINDUCTOR_CACHE_DIR`` when the user set
    it, else ``$DHIAN_CACHE/inductor`` (set as ``TORCHINDUCTOR_CACHE_DIR`` by
    :meth:`CompiledDecoder.prepare`, so Inductor writes there). Inductor itself sets the
    variable to its default (``<tmp>/torchinductor_<user>``) the first time it looks, so that
    value counts as unset."""
    given = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if given:
        path = Path(given).absolute()
        default = path.parent == Path(tempfile.gettempdir()).absolute()
        if not (default and path.name.startswith("torchinductor_")):
            return path
    return cache_dir() / "inductor"


@dataclasses.dataclass(frozen=True)
class CompileRecord:
    """What dhian remembers of one compiled (model, B, Tmax): ``compile_s`` the cold compile
    (Inductor cache miss), ``load_s`` the latest warm start (cache hit; ``None`` until one
    happened), ``eager_step_s`` / ``compiled_step_s`` one decoding step of each, measured
    after compiling, and the Inductor cache dir the code went to."""

    key: str
    compile_s: float
    load_s: float | None
    eager_step_s: float
    compiled_step_s: float
    inductor_dir: str

    @property
    def saving_s(self) -> float:
        """Seconds a compiled step saves over an eager one (0 when it does not)."""
        return max(0.0, self.eager_step_s - self.compiled_step_s)

    @property
    def start_s(self) -> float:
        """Expected seconds to get the cached step in a new process (the latest warm start,
        else a fraction :data:`WARM_FRACTION` of the cold compile)."""
        return self.load_s if self.load_s is not None else WARM_FRACTION * self.compile_s


def _read_record(path: Path) -> CompileRecord | None:
    try:
        data = json.loads(path.read_text())
        return CompileRecord(**{f.name: data[f.name] for f in dataclasses.fields(CompileRecord)})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_record(path: Path, record: CompileRecord) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    tmp.write_text(json.dumps(dataclasses.asdict(record), indent=1) + "\n")
    os.replace(tmp, path)


def _interleaved_medians(
    first: Callable[..., Any], second: Callable[..., Any], args: tuple[Any, ...], steps: int
) -> tuple[float, float]:
    """Median seconds of ``first(*args)`` and ``second(*args)``, called alternately ``steps``
    times each (so a burst of load on a shared machine hits both alike)."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(steps):
        for fn, out in ((first, times[0]), (second, times[1])):
            t = time.perf_counter()
            fn(*args)
            out.append(time.perf_counter() - t)
    return statistics.median(times[0]), statistics.median(times[1])


class CompiledDecoder:
    """The compiled ``decode_step`` of one LLaMA-family ``model``, per (B, Tmax), and the
    ``compile`` rule: ``on`` (always compile), ``off`` (never) or ``auto`` (compile where it
    pays, see the module docstring). ``long_lived`` (a server): ``on`` and ``auto`` compile in
    a background thread and decode eagerly until the compiled step is ready. ``notice(line)``
    receives one line before each compile and after it (e.g. printed to stderr).
    ``cpp_wrapper``: Inductor's C++ wrapper (``torch._inductor.config.cpp_wrapper``) instead
    of its Python one, which launches the ~300 kernels and extern calls of a step from Python:
    ~1.1x less CPU per int4 batch-1 step here, but a ~3.4x longer cold compile (contended,
    docs/speed.md); off by default, its records carry a ``-cpp`` label.

    ``compiles`` / ``loads`` count the cold compiles and warm starts (cache hits) it ran.
    """

    def __init__(
        self,
        model: Any,
        compile: str = "auto",
        *,
        long_lived: bool = False,
        notice: Callable[[str], None] | None = None,
        cpp_wrapper: bool = False,
    ) -> None:
        if compile not in COMPILE_CHOICES:
            raise ValueError(
                f"CompiledDecoder: compile must be one of {', '.join(COMPILE_CHOICES)}, "
                f"got {compile!r}"
            )
        if not callable(getattr(model, "decode_step", None)):
            raise ValueError(
                f"CompiledDecoder: {type(model).__name__} has no static-shape decode_step; "
                "only LLaMA-family models can be compiled"
            )
        self.model = model
        self.compile = compile
        self.long_lived = long_lived
        self.notice = notice
        self.cpp_wrapper = cpp_wrapper
        self.label = precision_label(model) + ("-cpp" if cpp_wrapper else "")
        self.signature = model_signature(model)
        self.compiles = 0
        self.loads = 0
        self._step: Callable[..., Tensor] | None = None
        self._ready: set[Shape] = set()
        self._busy: dict[Shape, threading.Thread] = {}
        self._failed: dict[Shape, str] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ records
    def key(self, batch: int, cache_len: int) -> str:
        """The cache key of one compiled shape: precision, B, Tmax and the model signature."""
        return f"{self.label}-b{batch}-t{cache_len}-{self.signature}"

    def record_path(self, batch: int, cache_len: int) -> Path:
        """``$DHIAN_CACHE/compiled/<key>.json``."""
        return cache_dir() / "compiled" / f"{self.key(batch, cache_len)}.json"

    def record(self, batch: int, cache_len: int) -> CompileRecord | None:
        """The record of (B, Tmax) when its compiled code is in the current Inductor cache."""
        rec = _read_record(self.record_path(batch, cache_len))
        if rec is None or Path(rec.inductor_dir) != inductor_cache_dir():
            return None
        return rec if Path(rec.inductor_dir).is_dir() else None

    def records(self) -> list[CompileRecord]:
        """Every record of this model (any shape) in the current Inductor cache."""
        folder = cache_dir() / "compiled"
        found = (_read_record(p) for p in folder.glob(f"{self.label}-*-{self.signature}.json"))
        here = inductor_cache_dir()
        return [r for r in found if r is not None and Path(r.inductor_dir) == here]

    def pays(self, batch: int, cache_len: int, new_tokens: int) -> bool:
        """Whether compiling (B, Tmax) before ``new_tokens`` steps is expected to save time:
        ``new_tokens × saving ≥ start-up``, from this shape's record (a warm start) or, when it
        was never compiled, from this model's other shapes (a cold compile). Unknown: False."""
        rec = self.record(batch, cache_len)
        if rec is not None:
            return new_tokens * rec.saving_s >= rec.start_s
        others = self.records()
        if not others:
            return False
        saving = min(r.saving_s for r in others)
        return new_tokens * saving >= max(r.compile_s for r in others)

    # ------------------------------------------------------------------ the plan
    def plan(
        self, batch: int, length: int, new_tokens: int
    ) -> tuple[Callable[..., Tensor] | None, int]:
        """The step to decode ``new_tokens`` tokens of ``batch`` rows with a cache of
        ``length`` slots, and the cache length to allocate: ``(compiled step, bucket)`` where
        the rule compiles (compiling it now, or ``None`` while a background compile runs),
        else ``(None, length)`` (decode eagerly)."""
        if self.compile == "off":
            return None, length
        bucket = cache_bucket(length, int(self.model.cfg.max_seq_len))
        shape = (batch, bucket)
        if shape in self._ready:
            return self._compiled(), bucket
        if shape in self._failed:
            return None, length
        if self.long_lived:
            self._start_background(shape)
            return None, length
        if self.compile == "auto" and not self.pays(batch, bucket, new_tokens):
            return None, length
        try:
            self.prepare(batch, bucket)
        except Exception as exc:  # any compiler failure: decode eagerly, say why
            self._fail(shape, exc)
            return None, length
        return self._compiled(), bucket

    def ready(self, batch: int, cache_len: int) -> bool:
        """Whether (B, Tmax) is compiled in this process."""
        return (batch, cache_len) in self._ready

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the background compiles that are running."""
        for thread in list(self._busy.values()):
            thread.join(timeout)

    # ------------------------------------------------------------------ compiling
    def _compiled(self) -> Callable[..., Tensor]:
        if self._step is None:
            # imported here: torch._dynamo costs about a second to import, paid only when
            # compiling; its per-function variant limit is raised (one per (B, Tmax) and model)
            import torch._dynamo

            limit = torch._dynamo.config.recompile_limit
            torch._dynamo.config.recompile_limit = max(limit, RECOMPILE_LIMIT)
            options: dict[str, Any] | None = {"cpp_wrapper": True} if self.cpp_wrapper else None
            self._step = torch.compile(
                self.model.decode_step, dynamic=False, fullgraph=True, options=options
            )
        return self._step

    def _inputs(self, batch: int, cache_len: int) -> tuple[Any, ...]:
        """Stand-in inputs of the step's shapes: token 0 at position 0 in slot 0 of a fresh
        cache, only that slot attended."""
        device = self.model.norm.weight.device
        token = torch.zeros(batch, 1, dtype=torch.long, device=device)  # (B, 1)
        slot = torch.zeros(1, dtype=torch.long, device=device)  # (1,)
        key_mask = torch.zeros(batch, cache_len, dtype=torch.bool, device=device)  # (B, Tmax)
        key_mask[:, 0] = True
        return token, token.clone(), slot, key_mask, self.model.new_cache(batch, cache_len)

    def prepare(self, batch: int, cache_len: int) -> float:
        """Compile (or load from the Inductor cache) the step for (B, Tmax) now; update its
        record; returns the seconds it took (0 when it was ready). Raises what the compiler
        raises."""
        shape = (batch, cache_len)
        if shape in self._ready:
            return 0.0
        where = inductor_cache_dir()
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(where)
        old = self.record(batch, cache_len)
        what = f"decode step for batch {batch}, {cache_len} cache slots ({self.label})"
        if self.notice is not None:
            if old is None:
                self.notice(f"compiling the {what} (once, cached in {where})")
            else:
                self.notice(f"loading the compiled {what} from {where}")
        # imported here: Dynamo's counters say whether Inductor hit its cache; importing
        # torch._dynamo costs about a second, paid only when compiling
        from torch._dynamo.utils import counters

        inputs = self._inputs(batch, cache_len)
        step = self._compiled()
        built = (
            counters["inductor"]["fxgraph_cache_miss"]
            + counters["inductor"]["fxgraph_cache_bypass"]
        )
        was_training = self.model.training
        if was_training:  # compile for eval mode, as llm_generate runs it (Dynamo guards on it)
            self.model.eval()
        try:
            with torch.no_grad():
                t = time.perf_counter()
                step(*inputs)
                seconds = time.perf_counter() - t
                # Inductor built code (a cache miss or bypass), or loaded it / reused this
                # process's code for the same graph
                inductor = counters["inductor"]
                cold = inductor["fxgraph_cache_miss"] + inductor["fxgraph_cache_bypass"] > built
                eager_s, compiled_s = _interleaved_medians(
                    self.model.decode_step, step, inputs, TIMING_STEPS
                )
        finally:
            if was_training:
                self.model.train()
        if cold:
            self.compiles += 1
        else:
            self.loads += 1
        compile_s = seconds if cold or old is None else old.compile_s
        record = CompileRecord(
            self.key(batch, cache_len),
            round(compile_s, 3),
            None if cold else round(seconds, 3),
            round(eager_s, 6),
            round(compiled_s, 6),
            str(where),
        )
        _write_record(self.record_path(batch, cache_len), record)
        with self._lock:
            self._ready.add(shape)
        if self.notice is not None:
            self.notice(
                f"{'compiled' if cold else 'loaded'} the {what} in {seconds:.1f} s; one step: "
                f"{1e3 * compiled_s:.1f} ms compiled, {1e3 * eager_s:.1f} ms eager"
            )
        return seconds

    def _fail(self, shape: Shape, exc: BaseException) -> None:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        with self._lock:
            self._failed[shape] = reason
        if self.notice is not None:
            self.notice(f"compiling the decode step failed ({reason}); decoding eagerly")

    def _background(self, shape: Shape) -> None:
        try:
            self.prepare(*shape)
        except Exception as exc:  # the server goes on decoding eagerly
            self._fail(shape, exc)

    def _start_background(self, shape: Shape) -> None:
        with self._lock:
            if shape in self._busy or shape in self._ready or shape in self._failed:
                return
            thread = threading.Thread(
                target=self._background, args=(shape,), name="dhian-compile", daemon=True
            )
            self._busy[shape] = thread
        thread.start()


def compiled_decode_step(model: Any) -> Callable[..., Tensor]:
    """``torch.compile(model.decode_step, dynamic=False)`` of a :class:`CompiledDecoder` kept
    on ``model`` (compiles at its first call for each shape), for ``llm_generate(...,
    step_fn=...)`` or :class:`dhian.inference.engine.LLMEngine`'s ``step_fn``."""
    decoder = getattr(model, "_dhian_compiled_decoder", None)
    if decoder is None:
        decoder = CompiledDecoder(model, "on")
        model._dhian_compiled_decoder = decoder
    return decoder._compiled()
