"""Inference precision of a built model: ``fp32`` (as trained), ``bf16``, ``int8`` or
``int4`` (LLaMA family only).

Owns :func:`apply_precision` (the one entry point, used by the loaders and ``--dtype`` of the
inference verbs), :func:`check_precision`, :func:`resolve_precision` (``auto`` → the family's
default), :func:`model_precision` and :class:`Int8MultiHeadAttention`.

LLaMA-family models (:class:`dhian.models.llama.LlamaModel`) take another road, weight-only
quantisation on PyTorch's CPU kernels (:func:`dhian.models.llama.quantize.quantize_llama`;
from a GGUF file :mod:`dhian.interop.gguf_quant` builds it from the file's own blocks):
``int8`` = per-row int8 projections, ``int4`` = group-32 int4 projections; both keep float32
norms and residual stream, an exact block-int8 embedding and a per-row int8 LM head;
``bf16`` = bf16 weights with float32 math (:mod:`dhian.nn.bf16_linear`). The rest of this
docstring is about the other families.

- ``fp32``: parameters and buffers as float32 (a no-op for a freshly loaded model).
- ``bf16``: every parameter and floating buffer cast to bfloat16 (weights *and* activations:
  the inputs are token ids, so each layer then computes in bf16). Nothing is kept in float32
  inside the model: LayerNorm and softmax on CPU accumulate in float32 internally and round
  their outputs, which the tests bound (``tests/models/test_precision.py``). What must stay
  exact is done by the callers: greedy, beam search and sampling cast the logits to float32
  before ``log_softmax``, so hypothesis scores accumulate in float32. BERT encoders (and seq2seq transformers, below) on a CPU
  with bf16 instructions (AVX512_BF16 / AMX) then become bf16
  :class:`~dhian.nn.fused_encoder.FusedEncoderBlock` s: weights prepacked once for oneDNN,
  GELU and residual adds fused into the GEMMs (1.17x less CPU work than plain bf16 on
  BERT-base here, docs/speed.md); such a model cannot be cast back (load it again).
- ``int8``, BERT encoders: every encoder layer becomes a
  :class:`~dhian.nn.fused_encoder.FusedEncoderBlock` (where torch has the oneDNN operators):
  four int8 GEMMs per layer on PyTorch's oneDNN kernels (AMX / VNNI), each quantizing its
  input dynamically (one uint8 scale per tensor), with the GELU and the residual adds fused
  into the GEMMs; attention, LayerNorms and the residual stream stay float32. The rest of the
  model (pooler, heads) is quantized as below. ``apply_precision(..., fused=False)`` keeps the
  generic path for BERT too (the benchmark's comparison).
- ``int8`` and (on a CPU with bf16 instructions) ``bf16``, seq2seq transformers
  (:class:`~dhian.models.transformer.model.TransformerSeq2Seq`): the encoder layers become
  :class:`~dhian.nn.fused_encoder.FusedEncoderBlock` s as for BERT, the decoder layers
  :class:`~dhian.nn.fused_decoder.FusedDecoderBlock` s (fused q/k/v, residual adds and the
  feed-forward activation fused into the GEMMs, cross-attention keys/values projected once per
  sentence) and the output layer (E → V, the largest GEMM of a decoding step) one ``mode``
  :class:`~dhian.nn.fused_linear.FusedLinear` (float32 logits from int8; the searches take the
  log-softmax in float32). ``fused=False`` keeps dynamic quantization / the plain cast.
- ``int8``, everything else: dynamic quantization (``torch.ao.quantization.quantize_dynamic``,
  the fbgemm/onednn ``x86`` engine, VNNI where the CPU has it): every ``nn.Linear`` and the
  recurrent layers
  (``nn.GRU``/``nn.LSTM``) get int8 weights, quantized once per output row (per-channel
  scales), and their input activations are quantized per call (per-tensor, from their observed
  range); outputs are float32. dhian's fused attention in-projection (a raw ``(3E, E)``
  parameter, not an ``nn.Linear``) is quantized too, by swapping each
  :class:`~dhian.nn.MultiHeadAttention` for :class:`Int8MultiHeadAttention`. Embeddings,
  LayerNorms and the logits of models whose output layer *is* the embedding matrix (tied GPT,
  BERT's masked-LM decoder) stay float32. CPU only, inference only (the result has no
  trainable quantized weights).

``torch.ao.quantization`` is deprecated in favour of torchao (torch 2.13 still ships it and it
works; its deprecation warnings are silenced here). If a later torch drops it, ``int8`` raises
:class:`~dhian.errors.ConfigError` saying so.

Notation: B batch, T length, E model dim.
Imports: stdlib, torch, :mod:`dhian.nn`, :mod:`dhian.models` (bert, llama, transformer), :mod:`dhian.errors`.
"""

from __future__ import annotations

import warnings
from typing import Any, TypeVar, cast

import torch
from torch import Tensor, nn

from dhian.errors import ConfigError, nearest
from dhian.models.bert.model import BertBackbone
from dhian.models.llama.model import LlamaModel
from dhian.models.llama.quantize import quantize_llama
from dhian.models.transformer.model import TransformerSeq2Seq
from dhian.nn import DecoderBlock, EncoderBlock, MultiHeadAttention
from dhian.nn.bf16_linear import Bf16Embedding, Bf16Linear
from dhian.nn.block_quant import BlockQ4Linear, BlockQ8Embedding, BlockQ8Head
from dhian.nn.fused_decoder import FusedDecoderBlock
from dhian.nn.fused_encoder import FusedEncoderBlock
from dhian.nn.fused_linear import FusedLinear, bf16_native, fused_linear_available
from dhian.nn.huge_pages import in_huge_pages
from dhian.nn.quantized_embedding import BlockInt8Embedding
from dhian.nn.quantized_linear import Int4Linear, Int8Linear

__all__ = [
    "AUTO",
    "PRECISIONS",
    "Int8MultiHeadAttention",
    "apply_precision",
    "check_precision",
    "model_precision",
    "resolve_precision",
]

#: the accepted ``--dtype`` values (``int4``, ``int4-fp32``: LLaMA family only)
PRECISIONS = ("fp32", "bf16", "int8", "int4", "int4-fp32")
#: weight-only quantised LLaMA modes
_LLAMA_QUANT = ("int8", "int4", "int4-fp32")
#: ``--dtype auto``: each family's default (``Family.default_dtype`` in :mod:`dhian.models.families`)
AUTO = "auto"

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def check_precision(dtype: str) -> str:
    """``dtype`` itself if it is one of :data:`PRECISIONS` or ``auto``, else a one-line
    ConfigError."""
    if dtype not in (*PRECISIONS, AUTO):
        raise ConfigError(
            f"unknown dtype {dtype!r}{nearest(str(dtype), (*PRECISIONS, AUTO))}; "
            f"choose one of {', '.join((*PRECISIONS, AUTO))}"
        )
    return dtype


def resolve_precision(dtype: str, default: str = "fp32") -> str:
    """``dtype`` with ``auto`` replaced by ``default`` (a family's fastest mode that passes its
    quality bound, see docs/speed.md)."""
    check_precision(dtype)
    return default if dtype == AUTO else dtype


def _quantize_dynamic(model: nn.Module, types: set[type[nn.Module]]) -> nn.Module:
    """``quantize_dynamic`` in place with per-channel int8 weights for ``types``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            from torch.ao.quantization import (
                default_dynamic_qconfig,
                per_channel_dynamic_qconfig,
                quantize_dynamic,
            )

            spec: dict[Any, Any] = {
                t: per_channel_dynamic_qconfig if t is nn.Linear else default_dynamic_qconfig
                for t in types
            }
            return quantize_dynamic(model, spec, dtype=torch.qint8, inplace=True)
    except (ImportError, AttributeError) as exc:  # pragma: no cover - depends on torch
        raise ConfigError(
            f"--dtype int8 needs torch.ao.quantization.quantize_dynamic, which torch "
            f"{torch.__version__} does not provide ({exc}); use --dtype fp32 or bf16"
        ) from exc


def _int8_linear(weight: Tensor, bias: Tensor | None) -> nn.Module:
    """A dynamically quantized int8 linear layer computing ``x @ weight.T + bias``."""
    lin = nn.Linear(weight.size(1), weight.size(0), bias=bias is not None)
    with torch.no_grad():
        lin.weight.copy_(weight)
        if bias is not None:
            lin.bias.copy_(bias)
    wrapped = _quantize_dynamic(nn.Sequential(lin), {nn.Linear})
    assert isinstance(wrapped, nn.Sequential)
    return wrapped[0]


class Int8MultiHeadAttention(MultiHeadAttention):
    """:class:`~dhian.nn.MultiHeadAttention` whose fused in-projection is int8.

    Made from a float ``mha`` by :meth:`from_float`: the (3E, E) in-projection becomes int8
    linears for each slice the attention asks for — all of q/k/v (self attention), q alone and
    k/v together (cross attention), k and v alone (distinct key and value) — so every call is
    one quantized GEMM. Scales are per output row, so a slice is quantized exactly like the
    same rows of the fused matrix. Everything else (heads, cache, masks, rotary, ``out_proj``)
    is the float module's. The float ``in_proj_weight`` / ``in_proj_bias`` are kept (frozen) for
    code that reads the documented fused layout directly (the transformer's one-off cross
    attention keys/values in ``start``). Inference only.
    """

    def __init__(self, mha: MultiHeadAttention) -> None:
        nn.Module.__init__(self)
        self.embed_dim = mha.embed_dim
        self.num_heads = mha.num_heads
        self.head_dim = mha.head_dim
        self.dropout = mha.dropout
        self.rotary = mha.rotary
        self.out_proj = mha.out_proj
        self.training = mha.training
        e = mha.embed_dim
        w = mha.in_proj_weight.detach().float()  # (3E, E)
        b = None if mha.in_proj_bias is None else mha.in_proj_bias.detach().float()  # (3E,)
        self.in_proj_weight = nn.Parameter(w, requires_grad=False)
        self.in_proj_bias = None if b is None else nn.Parameter(b, requires_grad=False)
        self.slices = {(0, 3 * e): "qkv", (0, e): "q", (e, 3 * e): "kv", (e, 2 * e): "k"}
        self.slices[(2 * e, 3 * e)] = "v"
        self.proj = nn.ModuleDict(
            {
                name: _int8_linear(w[lo:hi], None if b is None else b[lo:hi])
                for (lo, hi), name in self.slices.items()
            }
        )

    @classmethod
    def from_float(cls, mha: MultiHeadAttention) -> Int8MultiHeadAttention:
        """The int8 version of ``mha`` (its ``out_proj`` is shared, quantize it separately)."""
        return cls(mha)

    def _proj(self, x: Tensor, part: slice) -> Tensor:
        """x (B, T, E) → the rows ``part`` of [q; k; v] projections (B, T, |part|)."""
        lo, hi, _ = part.indices(3 * self.embed_dim)
        return self.proj[self.slices[(lo, hi)]](x)


def _swap_attention(model: nn.Module) -> None:
    """Replace every float MultiHeadAttention under ``model`` by its int8 version (in place)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, MultiHeadAttention) and not isinstance(
                child, Int8MultiHeadAttention
            ):
                setattr(parent, name, Int8MultiHeadAttention.from_float(child))


def _fuse_layers(model: nn.Module, mode: str) -> None:
    """Replace the layers of every BERT backbone and seq2seq transformer under ``model`` by
    their fused ``mode`` form (in place); a no-op where torch lacks the oneDNN operators, and
    for bf16 on a CPU without bf16 instructions (emulated bf16 GEMMs gain nothing from fusion).

    BERT: encoder layers → :class:`FusedEncoderBlock`. Seq2seq transformer: encoder layers →
    :class:`FusedEncoderBlock`, decoder layers → :class:`FusedDecoderBlock`, and the output
    layer (E → V, the largest GEMM of every decoding step) → a ``mode``
    :class:`FusedLinear` (float32 logits for int8, bf16 for bf16; the searches take the
    log-softmax in float32)."""
    if not fused_linear_available(mode) or (mode == "bf16" and not bf16_native()):
        return
    if _devices(model) - {"cpu"}:
        return
    for module in list(model.modules()):
        if isinstance(module, BertBackbone):
            module.layers = _fused_encoder(module.layers, mode)
        if isinstance(module, TransformerSeq2Seq):
            module.encoder = _fused_encoder(module.encoder, mode)
            module.decoder = nn.ModuleList(
                FusedDecoderBlock(block, mode)
                if isinstance(block, DecoderBlock)
                and block.cross_attn is not None
                and block.self_attn.rotary is None
                else block
                for block in module.decoder
            )
            if isinstance(module.output, nn.Linear):
                # typed nn.Linear in the model (its float form); same call signature
                cast(Any, module).output = FusedLinear.from_float(module.output, mode)


def _fused_encoder(layers: nn.ModuleList, mode: str) -> nn.ModuleList:
    """``layers`` with every (non-rotary) :class:`EncoderBlock` made a FusedEncoderBlock."""
    return nn.ModuleList(
        FusedEncoderBlock(block, mode)
        if isinstance(block, EncoderBlock) and block.self_attn.rotary is None
        else block
        for block in layers
    )


def _devices(model: nn.Module) -> set[str]:
    return {p.device.type for p in model.parameters()} | {b.device.type for b in model.buffers()}


def apply_precision(model: ModuleT, dtype: str = "fp32", fused: bool = True) -> ModuleT:
    """``model`` converted for inference in ``dtype`` (``fp32`` | ``bf16`` | ``int8``).

    BERT encoders on the CPU become :class:`~dhian.nn.fused_encoder.FusedEncoderBlock` for
    ``int8`` (and for ``bf16`` where the CPU has bf16 instructions); ``fused=False`` keeps them
    on the generic path (the benchmark's before/after comparison).

    Converts in place and returns the module to use (the same object, unless ``model`` is
    itself a bare ``nn.Linear``/``GRU``/``LSTM`` quantized to int8). Puts the model in eval
    mode for ``int8`` (quantized layers are inference only). Raises
    :class:`~dhian.errors.ConfigError` for an unknown ``dtype``, for ``int8`` on a non-CPU
    device, for a model already quantized to int8 and for one whose layers are fused for bf16
    that is asked for another dtype.
    """
    check_precision(dtype)
    if dtype == AUTO:
        raise ConfigError("apply_precision: resolve 'auto' first (resolve_precision)")
    current = model_precision(model)
    if isinstance(model, LlamaModel):
        if current != dtype or dtype not in _LLAMA_QUANT:
            if current in _LLAMA_QUANT:
                raise ConfigError(
                    f"this model is already quantized to {current} and cannot become {dtype}; "
                    "load it again"
                )
            if dtype in _LLAMA_QUANT and _devices(model) - {"cpu"}:
                raise ConfigError(f"--dtype {dtype} runs on the CPU only; use --device cpu")
            quantize_llama(model, dtype)
        # decoding streams every weight once per token: 2 MiB pages read it faster
        return cast(ModuleT, in_huge_pages(model))
    if dtype in ("int4", "int4-fp32"):
        raise ConfigError(
            f"--dtype {dtype} is for LLaMA-family models (smollm2, GGUF, HF llama); use int8"
        )
    if current == "int8" and dtype != "int8":
        raise ConfigError(
            f"this model is already quantized to int8 and cannot become {dtype}; load it again"
        )
    fused_as = {
        m.mode for m in model.modules() if isinstance(m, FusedEncoderBlock | FusedDecoderBlock)
    }
    if fused_as and dtype not in fused_as:
        raise ConfigError(
            f"this model's layers are fused for {fused_as.pop()} and cannot become "
            f"{dtype}; load it again"
        )
    if dtype == "fp32":
        return model.float()
    if dtype == "bf16":
        model.to(torch.bfloat16)
        if fused and not fused_as:
            _fuse_layers(model, "bf16")
        return model
    if _devices(model) - {"cpu"}:
        raise ConfigError("--dtype int8 runs on the CPU only; use --device cpu (or --dtype bf16)")
    if current == "int8":
        return model
    model.float().eval()
    if fused:
        _fuse_layers(model, "int8")
    _swap_attention(model)
    # in place (children swapped); a bare Linear/GRU/LSTM root comes back as a new module
    return cast(ModuleT, _quantize_dynamic(model, {nn.Linear, nn.GRU, nn.LSTM}))


def model_precision(model: nn.Module) -> str:
    """The precision ``model`` runs in: ``int8`` when it holds quantized layers, else ``bf16``
    when its floating parameters are bfloat16, else ``fp32``."""
    for module in model.modules():
        if isinstance(module, Int4Linear):
            return "int4"
        if isinstance(module, BlockQ4Linear):
            return "int4-fp32"
        if isinstance(module, Bf16Linear | Bf16Embedding):
            return "bf16"
        if isinstance(module, Int8Linear | Int8MultiHeadAttention):
            return "int8"
        if isinstance(module, FusedEncoderBlock | FusedDecoderBlock) and module.mode == "int8":
            return "int8"
        if "quantized" in type(module).__module__ and not isinstance(
            module, BlockInt8Embedding | BlockQ8Embedding | BlockQ8Head
        ):
            return "int8"
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    return "bf16" if torch.bfloat16 in dtypes else "fp32"
