"""Scaled dot-product attention and multi-head attention with a KV cache.

Owns :func:`scaled_dot_product` (one SDPA call on the fast path, an eager path that returns the
weights), :func:`decode_step_attention` (a decoding step over a static cache),
:class:`MultiHeadAttention` — the only place heads are split and merged — and
:class:`KVCache` for incremental decoding. Re-exported by :mod:`dhian.nn.attention`.

Notation: B batch, H heads, Tq/Tk query/key lengths, D head dim, E model dim.
Masks follow :mod:`dhian.nn.masks`: bool, True = may attend, broadcastable to (B, H, Tq, Tk);
a fully masked query row gives zero weights and a zero output (never NaN).
Imports: torch, :mod:`dhian.nn.cpu_kernels`, :mod:`dhian.nn.masks`, :mod:`dhian.nn.positional`.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dhian.nn import cpu_kernels
from dhian.nn.masks import causal_mask, combine
from dhian.nn.positional import RotaryEmbedding

__all__ = [
    "KVCache",
    "MultiHeadAttention",
    "causal_attention_mask",
    "decode_step_attention",
    "kv_caches",
    "scaled_dot_product",
]


def causal_attention_mask(
    mask: Tensor | None,
    tq: int,
    tk: int,
    causal: bool,
    need_weights: bool,
    device: torch.device,
) -> tuple[Tensor | None, bool]:
    """``(mask, is_causal)`` for :func:`scaled_dot_product` of Tq queries (the last Tq of Tk
    keys) under an optional bool ``mask``: SDPA's own ``is_causal`` flag where it applies
    (Tq == Tk, no other mask, no weights wanted), else the causal mask combined into ``mask``;
    a single query (decoding) needs neither."""
    if not causal or tq <= 1:
        return mask, False
    if tq == tk and mask is None and not need_weights:
        return None, True
    return combine(mask, causal_mask(tq, device, tk=tk)), False


def _check_mask(mask: Tensor, b: int, h: int, tq: int, tk: int) -> Tensor:
    """``mask`` as a 4-D view (B|1, H|1, Tq|1, Tk|1); any bool mask that broadcasts to
    (B, H, Tq, Tk) like ``torch.nn.functional.scaled_dot_product_attention`` accepts (2-D
    (Tq, Tk), 3-D, a (B, 1, 1, Tk) padding mask, ...)."""
    if mask.dtype != torch.bool:
        raise ValueError(f"attention mask must be torch.bool (True = may attend), got {mask.dtype}")
    target = (b, h, tq, tk)
    ok = mask.dim() <= 4 and all(
        m in (1, n) for m, n in zip(mask.shape[::-1], target[::-1], strict=False)
    )
    if not ok:
        raise ValueError(
            f"attention mask: expected a bool mask broadcastable to (B, H, Tq, Tk) = "
            f"{target}, received shape {tuple(mask.shape)} "
            "(see dhian.nn.masks.padding_mask / as_key_mask / causal_mask)"
        )
    return mask.view((1,) * (4 - mask.dim()) + tuple(mask.shape))  # (B|1, H|1, Tq|1, Tk|1)


def _fp32_for_backward(q: Tensor, k: Tensor, v: Tensor) -> bool:
    """Whether the fast path should run SDPA in float32: bf16/fp16 inputs on the CPU that
    autograd will differentiate (training, e.g. under bf16 autocast). torch's CPU
    flash-attention *backward* in bf16 is ~5x slower than in float32 (its forward is as fast),
    measured on quickstart shapes (B 35-120, H 4, T 17-56, D 64; torch 2.13, Sapphire Rapids
    with AMX), and 31% of a bf16 training step went there. The float32 softmax keeps (and
    slightly improves) the precision; the output is cast back to the input dtype."""
    low = q.dtype in (torch.bfloat16, torch.float16)
    grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    return low and grad and q.device.type == "cpu"


def _all_rows_kept(keep: Tensor) -> bool:
    """Whether every query row of ``keep`` (B|1, H|1, Tq|1, 1) has an allowed key, so nothing
    needs zeroing after SDPA. Checked on the CPU only, where reading the small bool tensor
    costs microseconds (the usual padding mask); on an accelerator it would stall the stream,
    so there the rows are always zeroed (``False``)."""
    return keep.device.type == "cpu" and bool(keep.all())


def scaled_dot_product(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    dropout: float = 0.0,
    need_weights: bool = False,
    *,
    is_causal: bool = False,
    scale: float | None = None,
) -> tuple[Tensor, Tensor | None]:
    """softmax(q kᵀ / √D + mask) v, with grouped-query attention (GQA) when k/v have fewer heads.

    q (B, H, Tq, D), k (B, Hkv, Tk, D), v (B, Hkv, Tk, Dv) with H % Hkv == 0 (Hkv = H is plain
    multi-head attention; query head i reads key/value head i // (H / Hkv), as HF's
    ``repeat_kv``). ``mask`` bool broadcastable to (B, H, Tq, Tk) exactly as for
    ``torch.nn.functional.scaled_dot_product_attention`` (e.g. (Tq, Tk), (B, Tq, Tk),
    (B, 1, 1, Tk)), True = may attend. ``is_causal`` adds the square causal mask (Tq == Tk).
    ``dropout`` is the attention dropout probability (pass 0.0 in eval mode).
    Returns out (B, H, Tq, Dv) and, when ``need_weights``, the probabilities (B, H, Tq, Tk)
    *before* dropout (rows sum to 1; fully masked rows are all zero); otherwise ``None``.
    Without ``need_weights`` this is one ``torch.nn.functional.scaled_dot_product_attention``
    call (``enable_gqa`` for GQA; in float32 for bf16/fp16 on the CPU when gradients will flow,
    see :func:`_fp32_for_backward`); with it, an eager computation that agrees with the fast path
    to float rounding and never materialises repeated keys/values.
    """
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(
            "scaled_dot_product: expected q (B, H, Tq, D), k (B, Hkv, Tk, D), v (B, Hkv, Tk, Dv); "
            f"received q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    b, h, tq, d = q.shape
    hkv, tk = k.size(1), k.size(2)
    if k.shape != (b, hkv, tk, d) or v.shape[:3] != (b, hkv, tk) or hkv == 0 or h % hkv != 0:
        raise ValueError(
            f"scaled_dot_product: expected k (B, Hkv, Tk, D) = {(b, hkv, tk, d)} and v "
            f"(B, Hkv, Tk, Dv) with (B, Hkv, Tk) = {(b, hkv, tk)} and H={h} a multiple of Hkv; "
            f"received k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if is_causal:
        if tq != tk:
            raise ValueError(
                f"scaled_dot_product: is_causal needs Tq == Tk, received Tq={tq}, Tk={tk}; "
                "pass masks.causal_mask(tq, tk=tk) instead"
            )
        if need_weights or mask is not None:
            mask = combine(mask, causal_mask(tq, q.device))
            is_causal = False
    keep: Tensor | None = None  # (B|1, H|1, Tq|1, 1): the row has at least one allowed key
    if mask is not None:
        mask = _check_mask(mask, b, h, tq, tk)  # (B|1, H|1, Tq|1, Tk|1)
        keep = mask.any(dim=-1, keepdim=True)
        if _all_rows_kept(keep):
            keep = None
        else:
            # A row with no allowed key attends everywhere (finite, clean gradients) and is
            # zeroed afterwards; rows with an allowed key are unchanged.
            mask = mask | ~keep
    scale_ = 1.0 / math.sqrt(d) if scale is None else scale
    if not need_weights:
        if _fp32_for_backward(q, k, v):
            with torch.autocast("cpu", enabled=False):  # autocast would cast q/k/v back down
                out = F.scaled_dot_product_attention(
                    q.float(),
                    k.float(),
                    v.float(),
                    attn_mask=mask,
                    dropout_p=dropout,
                    is_causal=is_causal,
                    scale=scale_,
                    enable_gqa=hkv != h,
                ).to(q.dtype)  # (B, H, Tq, Dv)
        else:
            out = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=mask,
                dropout_p=dropout,
                is_causal=is_causal,
                scale=scale_,
                enable_gqa=hkv != h,
            )  # (B, H, Tq, Dv)
        if keep is not None:
            # where() keeps SDPA's (B, Tq, H, Dv) memory order, so merging heads stays a view
            # (masked_fill would copy into (B, H, Tq, Dv) order first)
            out = torch.where(keep, out, out.new_zeros(()))
        return out, None
    g = h // hkv  # query heads per key/value head
    qg = q.view(b, hkv, g, tq, d)  # (B, Hkv, G, Tq, D): head i = (i // G, i % G)
    scores = torch.matmul(qg, k.unsqueeze(2).transpose(-2, -1)) * scale_  # (B, Hkv, G, Tq, Tk)
    scores = scores.view(b, h, tq, tk)  # (B, H, Tq, Tk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)  # (B, H, Tq, Tk)
    if keep is not None:
        weights = weights.masked_fill(~keep, 0.0)
    dropped = F.dropout(weights, p=dropout) if dropout > 0.0 else weights
    out = torch.matmul(dropped.view(b, hkv, g, tq, tk), v.unsqueeze(2))  # (B, Hkv, G, Tq, Dv)
    return out.reshape(b, h, tq, v.size(-1)), weights  # (B, H, Tq, Dv)


def decode_step_attention(
    qg: Tensor, k_buf: Tensor, v_buf: Tensor, mask: Tensor
) -> tuple[Tensor, None]:
    """One decoding step's attention over a static KV cache: ``qg`` (B, Hkv, G, D) — the G
    query heads of each key/value head as G query rows (GQA without repeating K/V) —
    ``k_buf``/``v_buf`` (B, Hkv, Tmax, D), ``mask`` (B, 1, 1, Tmax) bool (True = attend).
    Returns ``(out (B, Hkv, G, D), None)``: no weights on this path (the LLaMA step's
    :meth:`decode`; weights come from :func:`scaled_dot_product`).

    float32 on the CPU with dhian's kernel (:func:`dhian.nn.cpu_kernels.decode_attention`):
    reads only the slots up to each row's last allowed one; otherwise one SDPA call over the
    whole cache. Both compute softmax(q kᵀ/√D) v over the allowed slots (tested to agree)."""
    b, tmax = k_buf.shape[0], k_buf.shape[2]
    if _decode_kernel_takes(qg, k_buf, v_buf, mask):
        keep = mask.reshape(b, tmax)  # (B, Tmax)
        out = cpu_kernels.decode_attention(qg.contiguous(), k_buf, v_buf, keep.contiguous())
        return out, None
    return F.scaled_dot_product_attention(qg, k_buf, v_buf, attn_mask=mask), None


def _decode_kernel_takes(qg: Tensor, k_buf: Tensor, v_buf: Tensor, mask: Tensor) -> bool:
    b, hkv, tmax, d = k_buf.shape
    if not (
        qg.dtype == k_buf.dtype == v_buf.dtype == torch.float32
        and qg.device.type == "cpu"
        and k_buf.is_contiguous()
        and v_buf.is_contiguous()
        and v_buf.shape == k_buf.shape
        and qg.shape[:2] == (b, hkv)
        and qg.shape[3] == d
        and d % 16 == 0
        and mask.dtype == torch.bool
        and mask.shape == (b, 1, 1, tmax)
        and not (torch.is_grad_enabled() and (qg.requires_grad or k_buf.requires_grad))
    ):
        return False
    return cpu_kernels.usable()


@dataclasses.dataclass
class KVCache:
    """Keys and values of one attention layer kept across decoding steps.

    ``k``, ``v``: (B, H, T, D) or ``None`` (empty). ``static=False`` (self attention): each
    call appends this step's k/v. ``static=True`` (cross attention): k/v are computed from the
    memory on the first call and reused afterwards. Mutated in place by
    :class:`MultiHeadAttention`.
    """

    k: Tensor | None = None
    v: Tensor | None = None
    static: bool = False

    @classmethod
    def empty(cls, static: bool = False) -> KVCache:
        """A cache holding nothing yet."""
        return cls(None, None, static)

    @property
    def length(self) -> int:
        """Number of cached positions T (0 when empty)."""
        return 0 if self.k is None else self.k.size(2)

    def reorder(self, index: Tensor) -> KVCache:
        """Keep rows ``index`` (B',) of the batch, in place (beam search); returns ``self``."""
        if self.k is not None:
            self.k = self.k.index_select(0, index)  # (B', H, T, D)
        if self.v is not None:
            self.v = self.v.index_select(0, index)  # (B', H, T, D)
        return self


def kv_caches(num_layers: int, static: bool = False) -> list[KVCache]:
    """One empty :class:`KVCache` per layer."""
    return [KVCache.empty(static) for _ in range(num_layers)]


class MultiHeadAttention(nn.Module):
    """Multi-head attention laid out like :class:`torch.nn.MultiheadAttention`.

    Parameters: ``in_proj_weight`` (3E, E) = [W_q; W_k; W_v], ``in_proj_bias`` (3E) (``None``
    when ``bias=False``), ``out_proj`` (Linear E→E), so weights copy across. ``rotary``: an
    optional :class:`~dhian.nn.positional.RotaryEmbedding` applied to q and k in self attention
    (offset = the cache length) before caching.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        rotary: RotaryEmbedding | None = None,
    ) -> None:
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(
                f"MultiHeadAttention: embed_dim={embed_dim} is not divisible by "
                f"num_heads={num_heads}"
            )
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias: nn.Parameter | None
        if bias:
            self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        if rotary is not None and rotary.dim != self.head_dim:
            raise ValueError(
                f"MultiHeadAttention: rotary dim {rotary.dim} != head dim {self.head_dim}"
            )
        self.rotary = rotary
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform in-projection, zero biases (as torch.nn.MultiheadAttention)."""
        nn.init.xavier_uniform_(self.in_proj_weight)
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
        if self.out_proj.bias is not None:
            nn.init.zeros_(self.out_proj.bias)

    def _split(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        x = x.view(b, t, self.num_heads, self.head_dim)  # (B, T, H, D)
        return x.transpose(1, 2)  # (B, H, T, D)

    def _proj(self, x: Tensor, part: slice) -> Tensor:
        bias = None if self.in_proj_bias is None else self.in_proj_bias[part]
        return F.linear(x, self.in_proj_weight[part], bias)

    def _check_3d(self, name: str, x: Tensor, batch: int | None) -> None:
        if (
            x.dim() != 3
            or x.size(-1) != self.embed_dim
            or (batch is not None and x.size(0) != batch)
        ):
            b = "B" if batch is None else batch
            raise ValueError(
                f"MultiHeadAttention: expected {name} of shape ({b}, T, {self.embed_dim}), "
                f"received {tuple(x.shape)}"
            )

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        value: Tensor | None = None,
        mask: Tensor | None = None,
        need_weights: bool = False,
        cache: KVCache | None = None,
        causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from ``query`` (B, Tq, E) to ``key``/``value`` (B, Tk, E).

        ``key is None`` = self attention (``value`` defaults to ``key``). ``mask``: bool,
        True = may attend, broadcastable to (B, H, Tq, Tk) where Tk counts cached positions.
        ``causal=True`` adds the causal mask (offset by the cache length; skipped for Tq = 1).
        ``cache``: non-static → self attention appending k/v; static → cross attention that
        projects ``key`` on the first call and reuses the cached k/v afterwards (``key`` may
        then be ``None``). Returns out (B, Tq, E) and per-head weights (B, H, Tq, Tk) when
        ``need_weights`` else ``None``.
        """
        self._check_3d("query", query, None)
        b, tq, e = query.shape
        static = cache is not None and cache.static
        if key is None and not static:  # self attention
            q, k, v = self._proj(query, slice(None)).split(e, dim=-1)  # 3 x (B, Tq, E)
            q, k, v = self._split(q), self._split(k), self._split(v)  # (B, H, Tq, D)
            offset = 0 if cache is None else cache.length
            if self.rotary is not None:
                q, k = self.rotary(q, k, offset)
            if cache is not None:
                if cache.k is not None and cache.v is not None:
                    k = torch.cat([cache.k, k], dim=2)  # (B, H, T + Tq, D)
                    v = torch.cat([cache.v, v], dim=2)  # (B, H, T + Tq, D)
                cache.k, cache.v = k, v
        else:  # cross attention
            if cache is not None and not cache.static:
                raise ValueError(
                    "MultiHeadAttention: a non-static cache means self attention; pass key=None "
                    "(or use KVCache.empty(static=True) for cross attention)"
                )
            q = self._split(self._proj(query, slice(0, e)))  # (B, H, Tq, D)
            if cache is not None and cache.k is not None and cache.v is not None:
                k, v = cache.k, cache.v
            else:
                if key is None:
                    raise ValueError(
                        "MultiHeadAttention: cross attention with an empty static cache needs key"
                    )
                self._check_3d("key", key, b)
                if value is None or value is key:
                    k, v = self._proj(key, slice(e, 3 * e)).split(e, dim=-1)  # (B, Tk, E)
                else:
                    self._check_3d("value", value, b)
                    if value.size(1) != key.size(1):
                        raise ValueError(
                            f"MultiHeadAttention: key {tuple(key.shape)} and value "
                            f"{tuple(value.shape)} must have the same length Tk"
                        )
                    k = self._proj(key, slice(e, 2 * e))  # (B, Tk, E)
                    v = self._proj(value, slice(2 * e, 3 * e))  # (B, Tk, E)
                k, v = self._split(k), self._split(v)  # (B, H, Tk, D)
                if cache is not None:
                    cache.k, cache.v = k, v
            if k.size(0) != b:
                raise ValueError(
                    f"MultiHeadAttention: cached keys have batch {k.size(0)}, query has {b}"
                )
        mask, is_causal = causal_attention_mask(
            mask, tq, k.size(2), causal, need_weights, query.device
        )
        out, weights = scaled_dot_product(
            q,
            k,
            v,
            mask=mask,
            dropout=self.dropout if self.training else 0.0,
            need_weights=need_weights,
            is_causal=is_causal,
        )  # (B, H, Tq, D)
        out = out.transpose(1, 2).reshape(b, tq, e)  # (B, Tq, H, D) -> (B, Tq, E)
        return self.out_proj(out), weights
