"""GGUF files (llama.cpp): metadata → :class:`LlamaConfig`, tensors → a dhian state dict.

Owns reading a GGUF file (:func:`read_gguf`; the header is parsed by
:mod:`dhian.interop.gguf_header` with the ``gguf`` package's constants), its raw tensors
(:class:`GGUFTensor`: the file's quantised blocks and their
:class:`gguf.GGMLQuantizationType`, kept for int4/int8 kernels), dequantisation to
float32 with ``gguf.quants.dequantize`` (no hand-written dequantiser), undoing llama.cpp's
rope permutation of the Q/K projection rows (as HF transformers' GGUF loader does), and
:func:`load_gguf` — config, model, tokenizer and chat template in one call (float32, HF
layout: the parity tests' path; ``dhian`` verbs load through :mod:`dhian.interop.gguf_quant`).

Shapes: GGUF lists dimensions innermost first; :class:`GGUFTensor.shape` is the torch order
(out_features, in_features) for matrices. Notation: H heads, D head dim, E model dim.
Imports: numpy, torch, ``gguf``, :mod:`dhian.interop.gguf_header`, :mod:`dhian.models.llama`,
:mod:`dhian.text.gguf_tokenizer`, :mod:`dhian.errors`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dhian.errors import DataError
from dhian.interop.gguf_header import read_gguf_header
from dhian.models.llama.config import LlamaConfig
from dhian.models.llama.model import LlamaModel, build_llama
from dhian.text.gguf_tokenizer import tokenizer_from_gguf

__all__ = [
    "GGUFFile",
    "GGUFTensor",
    "dequantize",
    "gguf_state_dict",
    "llama_config_from_gguf",
    "load_gguf",
    "read_gguf",
    "reverse_rope_permute",
]

# GGUF tensor name (after "blk.{i}.") → LlamaModel parameter name (after "layers.{i}.").
_BLOCK_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_TOP_NAMES = {
    "token_embd.weight": "embed_tokens.weight",
    "output_norm.weight": "norm.weight",
    "output.weight": "lm_head.weight",
}


@dataclasses.dataclass(frozen=True)
class GGUFTensor:
    """One tensor as stored: ``raw`` is the file's bytes/values (a memory-mapped numpy array;
    for quantised types uint8 blocks of shape (rows, bytes per row)), ``qtype`` its
    :class:`gguf.GGMLQuantizationType`, ``shape`` the logical torch-order shape."""

    name: str
    qtype: Any  # gguf.GGMLQuantizationType
    shape: tuple[int, ...]
    raw: np.ndarray

    @property
    def type_name(self) -> str:
        """The quantisation type's name (``Q4_1``, ``Q8_0``, ``F32`` …)."""
        return str(self.qtype.name)


@dataclasses.dataclass(frozen=True)
class GGUFFile:
    """A read GGUF file: ``metadata`` (key → Python value; arrays as lists) and ``tensors``
    (name → :class:`GGUFTensor`, file order)."""

    path: Path
    metadata: dict[str, Any]
    tensors: dict[str, GGUFTensor]

    @property
    def architecture(self) -> str:
        """``general.architecture`` (``llama`` …)."""
        return str(self.metadata.get("general.architecture", ""))


def read_gguf(path: str | Path) -> GGUFFile:
    """Read ``path``'s metadata and (memory-mapped) tensors
    (:func:`dhian.interop.gguf_header.read_gguf_header`: the values ``gguf.GGUFReader`` gives,
    without its per-string numpy objects)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"GGUF file {str(p)!r} does not exist (dhian data get smollm2 fetches one)")
    try:
        metadata, raw = read_gguf_header(p)
    except DataError:
        raise
    except (ValueError, OSError) as exc:
        raise DataError(f"cannot read {str(p)!r} as GGUF ({exc})") from exc
    tensors = {t.name: GGUFTensor(t.name, t.qtype, tuple(reversed(t.dims)), t.data) for t in raw}
    return GGUFFile(p, metadata, tensors)


def dequantize(tensor: GGUFTensor) -> torch.Tensor:
    """``tensor`` as float32 (its torch-order shape), via ``gguf.quants.dequantize``."""
    import gguf

    values = gguf.quants.dequantize(tensor.raw, tensor.qtype)  # numpy, rows × elements
    return torch.from_numpy(np.array(values, dtype=np.float32)).reshape(tensor.shape)  # a copy


def reverse_rope_permute(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's ``permute`` of Q/K projection rows (w (H·D, E)).

    llama.cpp's converter reorders each head's rows from the half-split layout
    [x_0..x_{D/2-1}, x_{D/2}..x_{D-1}] to interleaved pairs; this returns HF's half-split
    layout (same as ``LlamaTensorProcessor._reverse_permute_weights`` in transformers).
    """
    rows = w.size(0)
    if rows % (2 * n_heads) != 0:
        raise ValueError(
            f"reverse_rope_permute: {rows} rows cannot split into {n_heads} heads of pairs"
        )
    half = rows // n_heads // 2
    return (
        w.reshape(n_heads, half, 2, *w.shape[1:])  # (H, D/2, 2, E): interleaved pairs
        .transpose(1, 2)  # (H, 2, D/2, E): halves
        .reshape(w.shape)  # (H·D, E)
    )


def _meta(metadata: dict[str, Any], key: str, path: Path | str = "") -> Any:
    if key not in metadata:
        raise DataError(f"GGUF {str(path)!r}: metadata key {key!r} is missing")
    return metadata[key]


def llama_config_from_gguf(file: GGUFFile) -> LlamaConfig:
    """The :class:`LlamaConfig` of a ``llama``-architecture GGUF file."""
    md = file.metadata
    if file.architecture != "llama":
        raise DataError(
            f"GGUF {str(file.path)!r}: architecture {file.architecture!r} is not supported "
            "(only 'llama')"
        )
    a = "llama."
    n_heads = int(_meta(md, a + "attention.head_count", file.path))
    dim = int(_meta(md, a + "embedding_length", file.path))
    tokens = md.get("tokenizer.ggml.tokens")
    vocab = int(md.get(a + "vocab_size", len(tokens) if tokens is not None else 0))
    head_dim = int(md.get(a + "attention.key_length", md.get(a + "rope.dimension_count", 0)))

    def special(key: str) -> int | None:
        value = md.get(f"tokenizer.ggml.{key}_token_id")
        return None if value is None else int(value)

    return LlamaConfig(
        vocab_size=vocab,
        dim=dim,
        n_layers=int(_meta(md, a + "block_count", file.path)),
        n_heads=n_heads,
        n_kv_heads=int(md.get(a + "attention.head_count_kv", n_heads)),
        ffn_dim=int(_meta(md, a + "feed_forward_length", file.path)),
        head_dim=head_dim if head_dim else dim // n_heads,
        norm_eps=float(md.get(a + "attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(md.get(a + "rope.freq_base", 10000.0)),
        max_seq_len=int(md.get(a + "context_length", 2048)),
        tie_embeddings="output.weight" not in file.tensors,
        bos_id=special("bos"),
        eos_id=special("eos"),
        pad_id=special("padding"),
    )


def _dhian_name(name: str) -> str | None:
    if name in _TOP_NAMES:
        return _TOP_NAMES[name]
    if name.startswith("blk."):
        _, index, rest = name.split(".", 2)
        if rest in _BLOCK_NAMES:
            return f"layers.{index}.{_BLOCK_NAMES[rest]}"
    return None


def gguf_state_dict(file: GGUFFile, cfg: LlamaConfig) -> dict[str, torch.Tensor]:
    """Every tensor dequantised to float32 under :class:`LlamaModel` names, Q/K rows in HF's
    half-split rope layout. Tensors the model does not use (e.g. ``rope_freqs``) are refused."""
    state: dict[str, torch.Tensor] = {}
    for name, tensor in file.tensors.items():
        key = _dhian_name(name)
        if key is None:
            raise DataError(f"GGUF {str(file.path)!r}: tensor {name!r} has no place in LlamaModel")
        w = dequantize(tensor)
        if key.endswith("q_proj.weight"):
            w = reverse_rope_permute(w, cfg.n_heads)
        elif key.endswith("k_proj.weight"):
            w = reverse_rope_permute(w, cfg.n_kv_heads)
        state[key] = w
    if cfg.tie_embeddings:
        state["lm_head.weight"] = state["embed_tokens.weight"]
    return state


def load_gguf(path: str | Path) -> tuple[LlamaConfig, LlamaModel, Any, str | None]:
    """``(config, model, tokenizer, chat_template)`` of a llama GGUF file: the model in eval
    mode with float32 dequantised weights, the :class:`dhian.text.tokenizer.Tokenizer` built
    from the metadata, and the jinja2 chat template string (``None`` when the file has none)."""
    file = read_gguf(path)
    cfg = llama_config_from_gguf(file)
    model = build_llama(cfg)
    missing, unexpected = model.load_state_dict(gguf_state_dict(file, cfg), strict=False)
    if missing or unexpected:
        raise DataError(
            f"GGUF {str(file.path)!r}: tensors missing {missing} / unexpected {unexpected}"
        )
    model.eval()
    template = file.metadata.get("tokenizer.chat_template")
    return cfg, model, tokenizer_from_gguf(file), None if template is None else str(template)
