"""The LLaMA decoder backbone and LM head, with a preallocated static KV cache.

Owns :class:`LlamaModel` (token embedding, ``n_layers`` × [RMSNorm → grouped-query attention
with RoPE → residual, RMSNorm → SwiGLU MLP → residual], final RMSNorm, LM head tied to the
embedding when the config says so), :class:`LlamaKVCache` (one (B, Hkv, Tmax, D) key and value
buffer per layer, written in place) and :func:`build_llama`. The model knows no generation
(gpt-fast style); :mod:`dhian.decoding.llm_generate` drives it through :meth:`LlamaModel.forward`
(prefill, any T) and :meth:`LlamaModel.decode_step` (one token per row, static shapes: the
step that ``torch.compile`` can capture once).

Inference layout (:meth:`LlamaModel.fuse_projections`): q/k/v become one ``qkv_proj`` and
gate/up one ``gate_up_proj`` (one GEMM each instead of three and two); the quantised loaders
(:mod:`dhian.interop.gguf_quant`) build the fused modules directly. RoPE tables are gathered
once per forward, not per layer; grouped-query attention never repeats K/V (the G query heads
of a key/value head are attended as G query rows of that head).

Parameter names follow HF ``LlamaForCausalLM`` without the ``model.`` prefix
(``embed_tokens``, ``layers.{i}.self_attn.q_proj`` …, ``norm``, ``lm_head``), so checkpoints
map one to one (:mod:`dhian.interop.hf_llama`).

Notation: B batch, T new tokens, S key slots (cached + new), Tmax cache capacity, E model dim,
H query heads, Hkv key/value heads, D head dim, F MLP hidden size, V vocab, L layers.
Attention masks are bool, True = may attend.
Imports: torch, :mod:`dhian.nn.mha`, :mod:`dhian.nn.positional`,
:mod:`dhian.models.llama.config`.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dhian.errors import ConfigError
from dhian.models.llama.config import LlamaConfig
from dhian.models.llama.kernel_step import kernel_step
from dhian.nn import cpu_kernels
from dhian.nn.mha import decode_step_attention, scaled_dot_product
from dhian.nn.positional import RotaryEmbedding

__all__ = ["LlamaAttention", "LlamaBlock", "LlamaKVCache", "LlamaMLP", "LlamaModel", "build_llama"]


class LlamaKVCache:
    """Preallocated keys and values of every layer: ``k[i]``, ``v[i]`` (B, Hkv, Tmax, D).

    Slots are shared by all rows: a forward over T new tokens writes slots
    ``length .. length+T-1`` in place (no concatenation) and then advances ``length``. With
    left-padded batches the padding occupies slots too; the caller's key mask hides them.
    """

    def __init__(
        self,
        cfg: LlamaConfig,
        batch_size: int,
        max_len: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        if max_len <= 0 or batch_size <= 0:
            raise ValueError(
                f"LlamaKVCache: batch_size and max_len must be > 0, got {batch_size}, {max_len}"
            )
        shape = (batch_size, cfg.n_kv_heads, max_len, cfg.head_dim)  # (B, Hkv, Tmax, D)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.n_layers)]
        self.batch_size = batch_size
        self.max_len = max_len
        self.length = 0  # slots written so far

    def write(self, layer: int, start: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store k, v (B, Hkv, T, D) at slots ``start .. start+T-1`` of ``layer``; return views
        of the filled slots (B, Hkv, start+T, D)."""
        end = start + k.size(2)
        if end > self.max_len:
            raise ValueError(
                f"LlamaKVCache: {end} slots needed but the cache holds {self.max_len}; "
                "allocate it with a larger max_len"
            )
        self.k[layer][:, :, start:end] = k  # in place (B, Hkv, T, D)
        self.v[layer][:, :, start:end] = v  # in place (B, Hkv, T, D)
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def reorder(self, index: Tensor) -> LlamaKVCache:
        """Keep rows ``index`` (B',) in place of the batch; returns ``self``."""
        self.k = [k.index_select(0, index) for k in self.k]  # (B', Hkv, Tmax, D)
        self.v = [v.index_select(0, index) for v in self.v]  # (B', Hkv, Tmax, D)
        self.batch_size = int(index.numel())
        return self


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """RoPE, half-split layout: x (B, H, T, D), cos/sin broadcastable to it."""
    x1, x2 = x.chunk(2, dim=-1)  # 2 x (B, H, T, D/2)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def _decode_norm(norm: nn.Module, x: Tensor) -> Tensor:
    """``norm(x)`` for a decoding step's x (B, 1, E): through dhian's one-call RMSNorm kernel
    when eager, float32 on the CPU, without gradient and the kernels built (PyTorch's
    RMSNorm is six small ops there, ~2 ms of a SmolLM2 step); else ``norm`` itself (a
    compiled step fuses it)."""
    if (
        isinstance(norm, nn.RMSNorm)
        and norm.weight is not None
        and cpu_kernels.eager_float32(x, norm.weight)
    ):
        eps = torch.finfo(x.dtype).eps if norm.eps is None else norm.eps
        rows = x.reshape(-1, x.size(-1)).contiguous()  # (B, E)
        return cpu_kernels.rms_norm(rows, norm.weight, eps).view(x.shape)  # (B, 1, E)
    return norm(x)


class LlamaAttention(nn.Module):
    """Grouped-query self attention with RoPE: ``q_proj`` E→H·D, ``k_proj``/``v_proj``
    E→Hkv·D, ``o_proj`` H·D→E, no biases (HF layout); after :meth:`fuse` one ``qkv_proj``
    E→(H+2·Hkv)·D replaces the three."""

    def __init__(self, cfg: LlamaConfig, rotary: RotaryEmbedding) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj: nn.Module | None = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.k_proj: nn.Module | None = nn.Linear(
            cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False
        )
        self.v_proj: nn.Module | None = nn.Linear(
            cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False
        )
        self.qkv_proj: nn.Module | None = None
        self.o_proj: nn.Module = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)
        self.rotary = [rotary]  # shared, not a submodule (its buffers live on LlamaModel)

    def fuse(self, qkv: nn.Module | None = None) -> None:
        """Use one projection for q, k and v: ``qkv`` (E → (H+2·Hkv)·D, rows q|k|v), or the
        three float matrices concatenated when ``qkv`` is None."""
        if qkv is None:
            parts = [self.q_proj, self.k_proj, self.v_proj]
            weights = [p.weight for p in parts if isinstance(p, nn.Linear)]
            if len(weights) != 3:
                raise ValueError("LlamaAttention.fuse: q/k/v are not float nn.Linear layers")
            w = torch.cat([x.detach() for x in weights], dim=0)  # ((H+2Hkv)·D, E)
            qkv = nn.Linear(w.size(1), w.size(0), bias=False, device=w.device, dtype=w.dtype)
            qkv.weight = nn.Parameter(w, requires_grad=weights[0].requires_grad)
        self.qkv_proj = qkv
        self.q_proj = self.k_proj = self.v_proj = None

    def _project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, T, E) → q (B, H, T, D), k and v (B, Hkv, T, D) (before RoPE)."""
        b, t, _ = x.shape
        h, hkv, d = self.n_heads, self.n_kv_heads, self.head_dim
        if self.qkv_proj is not None:
            q, k, v = self.qkv_proj(x).split([h * d, hkv * d, hkv * d], dim=-1)
        else:
            assert self.q_proj is not None and self.k_proj is not None and self.v_proj is not None
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = q.view(b, t, h, d).transpose(1, 2)  # (B, H, T, D)
        k = k.view(b, t, hkv, d).transpose(1, 2)  # (B, Hkv, T, D)
        v = v.view(b, t, hkv, d).transpose(1, 2)  # (B, Hkv, T, D)
        return q, k, v

    def forward(
        self,
        x: Tensor,
        rope: tuple[Tensor, Tensor],
        mask: Tensor | None,
        cache: LlamaKVCache | None,
        layer: int,
        need_weights: bool,
    ) -> tuple[Tensor, Tensor | None]:
        """x (B, T, E); ``rope`` = cos, sin (B|1, 1, T, D) of each token's position; mask bool
        broadcastable to (B, H, T, S) or ``None`` (then causal over the T new tokens when there
        is no cache). Returns (B, T, E) and weights (B, H, T, S) when ``need_weights``."""
        b, t, _ = x.shape
        q, k, v = self._project(x)
        q, k = _rotate(q, *rope), _rotate(k, *rope)
        if cache is not None:
            k, v = cache.write(layer, cache.length, k, v)  # (B, Hkv, S, D)
        causal = mask is None and cache is None and t > 1
        out, weights = scaled_dot_product(
            q, k, v, mask=mask, need_weights=need_weights, is_causal=causal
        )  # (B, H, T, D)
        out = out.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim)  # (B, T, H·D)
        return self.o_proj(out), weights

    def _fused_rope_write(self, x: Tensor, k_buf: Tensor) -> bool:
        """Whether :meth:`decode` takes dhian's one-call RoPE + cache write: eager (a compiled
        step fuses those ops itself), float32 on the CPU, q/k/v fused, no gradient, kernels
        built."""
        return (
            self.qkv_proj is not None
            and k_buf.is_contiguous()
            and cpu_kernels.eager_float32(x, k_buf)
        )

    def decode(
        self,
        x: Tensor,
        rope: tuple[Tensor, Tensor],
        slot: Tensor,
        mask: Tensor,
        k_buf: Tensor,
        v_buf: Tensor,
    ) -> Tensor:
        """One new token per row, static shapes: x (B, 1, E), rope cos/sin (B, 1, 1, D),
        ``slot`` (1,) long = the cache slot written, ``mask`` (B, 1, 1, Tmax) bool over all
        slots (True = attend), ``k_buf``/``v_buf`` (B, Hkv, Tmax, D) written in place.
        ``slot`` may also be (B,): each row's own slot (continuous batching).
        The G = H/Hkv query heads of each key/value head are attended as G query rows of that
        head (no repeated K/V). Returns (B, 1, E)."""
        b = x.size(0)
        g = self.n_heads // self.n_kv_heads
        if self._fused_rope_write(x, k_buf):  # eager float32: one call for RoPE + cache write
            assert self.qkv_proj is not None
            qkv = self.qkv_proj(x).view(b, -1)  # (B, (H + 2·Hkv)·D)
            cos, sin = (t.reshape(t.size(0), -1).contiguous() for t in rope)  # (B|1, D) x 2
            q_rot = cpu_kernels.rope_cache_write(
                qkv, cos, sin, slot.contiguous(), k_buf, v_buf, self.n_heads
            )  # (B, H·D); k_buf, v_buf written at the slot
            qg = q_rot.view(b, self.n_kv_heads, g, self.head_dim)  # (B, Hkv, G, D)
        else:
            q, k, v = self._project(x)  # (B, H, 1, D), (B, Hkv, 1, D) x 2
            q, k = _rotate(q, *rope), _rotate(k, *rope)
            rows, slots = torch.arange(b, device=x.device), slot.expand(b)  # (B,) x 2
            k_buf[rows, :, slots] = k[:, :, 0].to(k_buf.dtype)  # (B, Hkv, D) in place
            v_buf[rows, :, slots] = v[:, :, 0].to(v_buf.dtype)
            qg = q.reshape(b, self.n_kv_heads, g, self.head_dim).to(k_buf.dtype)  # (B, Hkv, G, D)
        out, _ = decode_step_attention(qg, k_buf, v_buf, mask)  # (B, Hkv, G, D)
        out = out.reshape(b, 1, self.n_heads * self.head_dim).to(x.dtype)  # (B, 1, H·D)
        return self.o_proj(out)


class LlamaMLP(nn.Module):
    """SwiGLU: ``down_proj(silu(gate_proj(x)) * up_proj(x))``, E→F→E, no biases; after
    :meth:`fuse` one ``gate_up_proj`` E→2F (rows gate|up) replaces gate and up."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.gate_proj: nn.Module | None = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.up_proj: nn.Module | None = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.gate_up_proj: nn.Module | None = None
        self.down_proj: nn.Module = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def fuse(self, gate_up: nn.Module | None = None) -> None:
        """Use one projection ``gate_up`` (E → 2F, rows gate|up) for gate and up, or the two
        float matrices concatenated when it is None."""
        if gate_up is None:
            weights = [p.weight for p in (self.gate_proj, self.up_proj) if isinstance(p, nn.Linear)]
            if len(weights) != 2:
                raise ValueError("LlamaMLP.fuse: gate/up are not float nn.Linear layers")
            w = torch.cat([x.detach() for x in weights], dim=0)  # (2F, E)
            gate_up = nn.Linear(w.size(1), w.size(0), bias=False, device=w.device, dtype=w.dtype)
            gate_up.weight = nn.Parameter(w, requires_grad=weights[0].requires_grad)
        self.gate_up_proj = gate_up
        self.gate_proj = self.up_proj = None

    def forward(self, x: Tensor) -> Tensor:
        """x (B, T, E) → (B, T, E)."""
        if self.gate_up_proj is not None:
            gate, up = self.gate_up_proj(x).chunk(2, dim=-1)  # 2 x (B, T, F)
        else:
            assert self.gate_proj is not None and self.up_proj is not None
            gate, up = self.gate_proj(x), self.up_proj(x)
        return self.down_proj(F.silu(gate) * up)


class LlamaBlock(nn.Module):
    """Pre-norm block: x + attn(norm(x)); then + mlp(norm(x))."""

    def __init__(self, cfg: LlamaConfig, rotary: RotaryEmbedding) -> None:
        super().__init__()
        self.input_layernorm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.self_attn = LlamaAttention(cfg, rotary)
        self.post_attention_layernorm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.mlp = LlamaMLP(cfg)

    def forward(
        self,
        x: Tensor,
        rope: tuple[Tensor, Tensor],
        mask: Tensor | None,
        cache: LlamaKVCache | None,
        layer: int,
        need_weights: bool,
    ) -> tuple[Tensor, Tensor | None]:
        """x (B, T, E) → (B, T, E), attention weights (B, H, T, S) | None."""
        a, weights = self.self_attn(self.input_layernorm(x), rope, mask, cache, layer, need_weights)
        x = x + a
        return x + self.mlp(self.post_attention_layernorm(x)), weights

    def decode(
        self,
        x: Tensor,
        rope: tuple[Tensor, Tensor],
        slot: Tensor,
        mask: Tensor,
        k_buf: Tensor,
        v_buf: Tensor,
    ) -> Tensor:
        """One token per row (see :meth:`LlamaAttention.decode`): x (B, 1, E) → (B, 1, E)."""
        h = _decode_norm(self.input_layernorm, x)  # (B, 1, E)
        x = x + self.self_attn.decode(h, rope, slot, mask, k_buf, v_buf)
        return x + self.mlp(_decode_norm(self.post_attention_layernorm, x))


class LlamaModel(nn.Module):
    """LLaMA decoder with its LM head. ``forward(ids, positions, cache, attn_mask, …)``.

    ``rotary``: the RoPE tables to use (default: built here for ``cfg``). The streaming loaders
    build the model on the meta device and pass tables computed on the CPU: computing them on
    meta would import PyTorch's Python meta kernels (~70 MB of modules) for nothing."""

    def __init__(self, cfg: LlamaConfig, rotary: RotaryEmbedding | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        # an uninitialised table (reset_parameters fills it): nn.Embedding's own init would run
        # normal_ even on the meta device
        embed = nn.Embedding(cfg.vocab_size, cfg.dim, _weight=torch.empty(cfg.vocab_size, cfg.dim))
        head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            head.weight = embed.weight
        # nn.Module: the quantised loaders swap in block-int8 / int8 versions
        self.embed_tokens: nn.Module = embed
        self.rotary = (
            rotary
            if rotary is not None
            else RotaryEmbedding(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta, float32_angles=True)
        )
        self.layers = nn.ModuleList([LlamaBlock(cfg, self.rotary) for _ in range(cfg.n_layers)])
        self.norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.lm_head: nn.Module = head
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """N(0, 0.02²) linear and embedding weights, unit norms (HF's initializer_range).
        Meta tensors (a model built on the meta device, to be filled by a loader) are skipped:
        they hold no values, and ``normal_`` on meta would import PyTorch's Python meta kernels."""
        for m in self.modules():
            if isinstance(getattr(m, "weight", None), Tensor) and m.weight.is_meta:
                continue
            if isinstance(m, nn.Linear | nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
            elif isinstance(m, nn.RMSNorm) and m.weight is not None:
                nn.init.ones_(m.weight)

    def fuse_projections(self) -> LlamaModel:
        """Fuse q/k/v and gate/up of every layer into one projection each (float weights;
        see :meth:`LlamaAttention.fuse`); returns ``self``. For inference: the state dict then
        has ``qkv_proj``/``gate_up_proj`` names (:meth:`unfused_state_dict` gives HF's)."""
        for block in self.layers:
            assert isinstance(block, LlamaBlock)
            if block.self_attn.qkv_proj is None:
                block.self_attn.fuse()
            if block.mlp.gate_up_proj is None:
                block.mlp.fuse()
        return self

    def column_major_weights(self) -> LlamaModel:
        """Store every float32 ``nn.Linear`` weight (N, K) column-major, in place: the same
        shape and values, strides (1, N) (the (K, N) transpose is contiguous); the LM head's
        weight is shared with the embedding when tied, so the table changes layout too.
        Returns ``self``. For inference: MKL's sgemm then reads a row-major (K, N) right-hand
        side instead of packing the (N, K) transpose on every call, ~1.8x less time in the
        decoding GEMMs at batch 8 and ~10% less at batch 1 (docs/speed.md, issue #17). bf16
        weights are left alone (oneDNN's bf16 GEMMs were slower on the transpose)."""
        seen: set[int] = set()
        for m in self.modules():
            w = getattr(m, "weight", None)
            if not isinstance(m, nn.Linear) or not isinstance(w, nn.Parameter):
                continue
            if id(w) in seen or w.dtype != torch.float32 or w.dim() != 2 or w.is_meta:
                continue
            seen.add(id(w))
            if w.stride() != (1, w.size(0)):
                w.data = w.data.t().contiguous().t()  # (N, K) with strides (1, N)
        return self

    def unfused_state_dict(self) -> dict[str, Tensor]:
        """The state dict under HF's per-projection names (fused float projections split
        back into q/k/v and gate/up). Quantised layers are refused."""
        out: dict[str, Tensor] = {}
        h, hkv, d, f = self.cfg.n_heads, self.cfg.n_kv_heads, self.cfg.head_dim, self.cfg.ffn_dim
        for key, value in self.state_dict().items():
            if key.endswith("qkv_proj.weight"):
                stem = key[: -len("qkv_proj.weight")]
                for name, part in zip(
                    ("q_proj", "k_proj", "v_proj"),
                    value.split([h * d, hkv * d, hkv * d]),
                    strict=True,
                ):
                    out[f"{stem}{name}.weight"] = part
            elif key.endswith("gate_up_proj.weight"):
                stem = key[: -len("gate_up_proj.weight")]
                out[f"{stem}gate_proj.weight"], out[f"{stem}up_proj.weight"] = value.split([f, f])
            elif not key.endswith((".weight", ".bias")) or not value.is_floating_point():
                raise ValueError(
                    f"LlamaModel: {key!r} is a quantised buffer; load the model in fp32 or bf16 "
                    "to export it"
                )
            else:
                out[key] = value
        return out

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype of the residual stream (that of the final norm's weight)."""
        return self.norm.weight.dtype

    def new_cache(
        self, batch_size: int, max_len: int | None = None, dtype: torch.dtype | None = None
    ) -> LlamaKVCache:
        """An empty :class:`LlamaKVCache` on this model's device (``max_len`` defaults to
        ``cfg.max_seq_len``; ``dtype`` to :attr:`compute_dtype`)."""
        w = self.norm.weight
        return LlamaKVCache(
            self.cfg,
            batch_size,
            self.cfg.max_seq_len if max_len is None else max_len,
            dtype=w.dtype if dtype is None else dtype,
            device=w.device,
        )

    def rope(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """cos, sin (B, 1, T, D) in ``dtype`` for ``positions`` (B, T) (no range check: the
        callers keep positions below ``cfg.max_seq_len``)."""
        cos = self.rotary.cos[positions].unsqueeze(1).to(dtype)  # (B, 1, T, D)
        sin = self.rotary.sin[positions].unsqueeze(1).to(dtype)  # (B, 1, T, D)
        return cos, sin

    def decode_step(
        self, token: Tensor, positions: Tensor, slot: Tensor, key_mask: Tensor, cache: Any
    ) -> Tensor:
        """Logits (B, V) float32 of one new token per row, with static shapes (compilable).

        ``token`` (B, 1) long at RoPE ``positions`` (B, 1); ``slot`` (1,) long: the cache slot
        its keys/values are written to ((B,): one per row); ``cache`` anything with per-layer
        ``k``/``v`` lists of (B, Hkv, Tmax, D) buffers; ``key_mask`` (B, Tmax) bool over every cache slot
        (True = a real token at or before ``slot``). Attends over the whole buffer (masked),
        so no shape depends on the step. Does not advance ``cache.length`` (the caller does).
        """
        fast = kernel_step(self, token, positions, slot, key_mask, cache)
        if fast is not None:  # eager on the CPU kernels: the same ops, called from one loop
            return fast
        b = token.size(0)
        x = self.embed_tokens(token).to(self.compute_dtype)  # (B, 1, E)
        rope = self.rope(positions, x.dtype)  # (B, 1, 1, D) x 2
        mask = key_mask[:, None, None, :]  # (B, 1, 1, Tmax)
        for i, layer in enumerate(self.layers):
            x = cast(LlamaBlock, layer).decode(x, rope, slot, mask, cache.k[i], cache.v[i])
        logits: Tensor = self.lm_head(_decode_norm(self.norm, x))  # (B, 1, V)
        return logits.view(b, -1).float()

    def forward(
        self,
        ids: Tensor,
        positions: Tensor | None = None,
        cache: LlamaKVCache | None = None,
        attn_mask: Tensor | None = None,
        need_weights: bool = False,
        logits_to_keep: int | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Logits for ``ids`` (B, T) long.

        ``positions`` (B, T) long: each token's RoPE position (per row, so left-padded rows
        count from their first real token); default ``cache.length + arange(T)``.
        ``cache``: the new keys/values are written at slots ``cache.length ..`` and
        ``cache.length`` advances by T. ``attn_mask``: bool key mask (B, S) over all key slots
        (S = cached + T; True = real token) combined here with the causal mask, or a full mask
        broadcastable to (B, H, T, S); ``None`` = every slot is a real token.
        ``logits_to_keep``: only the last k positions get logits (k=1 while decoding).
        Returns logits (B, T|k, V) and, when ``need_weights``, the attention probabilities
        stacked (L, B, H, T, S), else ``None``.
        """
        if ids.dim() != 2:
            raise ValueError(f"LlamaModel: expected ids (B, T), received {tuple(ids.shape)}")
        b, t = ids.shape
        past = 0 if cache is None else cache.length
        s = past + t
        if positions is None:
            positions = torch.arange(past, s, device=ids.device).expand(b, t)  # (B, T)
        mask: Tensor | None = None
        if attn_mask is not None and attn_mask.dim() == 2:
            if attn_mask.shape != (b, s):
                raise ValueError(
                    f"LlamaModel: a 2-D attn_mask is a key mask (B, S) = {(b, s)} over cached + "
                    f"new slots, received {tuple(attn_mask.shape)}"
                )
            slots = torch.arange(s, device=ids.device)  # (S,)
            causal = slots[None, :] <= slots[past:, None]  # (T, S)
            mask = attn_mask[:, None, None, :] & causal  # (B, 1, T, S)
        elif attn_mask is not None:
            mask = attn_mask
        elif past > 0 and (t > 1 or need_weights):
            slots = torch.arange(s, device=ids.device)  # (S,)
            mask = slots[None, :] <= slots[past:, None]  # (T, S)
        elif need_weights and t > 1:
            slots = torch.arange(t, device=ids.device)  # (T,)
            mask = slots[None, :] <= slots[:, None]  # (T, T)
        if mask is None and cache is not None and t > 1:  # empty cache: causal over T
            slots = torch.arange(t, device=ids.device)
            mask = slots[None, :] <= slots[:, None]  # (T, T)
        if int(positions.max()) >= self.cfg.max_seq_len or int(positions.min()) < 0:
            raise ValueError(
                f"LlamaModel: positions must lie in 0..{self.cfg.max_seq_len - 1} "
                f"(cfg.max_seq_len), received {int(positions.min())}..{int(positions.max())}"
            )
        x = self.embed_tokens(ids).to(self.compute_dtype)  # (B, T, E)
        rope = self.rope(positions, x.dtype)  # (B, 1, T, D) x 2
        all_weights: list[Tensor] = []
        for i, layer in enumerate(self.layers):
            x, w = layer(x, rope, mask, cache, i, need_weights)
            if w is not None:
                all_weights.append(w)
        if cache is not None:
            cache.length = s
        if logits_to_keep is not None:
            x = x[:, -logits_to_keep:]  # (B, k, E)
        logits = self.lm_head(self.norm(x))  # (B, T|k, V)
        return logits, (torch.stack(all_weights) if need_weights else None)


def build_llama(
    cfg: LlamaConfig,
    src_vocab_size: int | None = None,
    tgt_vocab_size: int | None = None,
    **_special_ids: object,
) -> LlamaModel:
    """A randomly initialised :class:`LlamaModel` for ``cfg`` (load weights with
    :func:`dhian.interop.gguf.load_gguf` or :func:`dhian.interop.hf_llama.import_hf_llama`).

    The vocabulary and special ids live in ``cfg``; the family-builder arguments
    (``src_vocab_size``, ``pad_id`` …) are accepted for :func:`dhian.models.families.build_model`
    and a vocabulary size that disagrees with ``cfg.vocab_size`` is an error."""
    for given in (src_vocab_size, tgt_vocab_size):
        if given is not None and given != cfg.vocab_size:
            raise ConfigError(
                f"llama: the tokenizer has {given} ids but model.vocab_size is {cfg.vocab_size}; "
                "use the tokenizer the model was trained with"
            )
    return LlamaModel(cfg)
