"""The LLaMA decoder backbone and LM head, with a preallocated static KV cache.

Owns :class:`LlamaModel` (token embedding, ``n_layers`` × [RMSNorm → grouped-query attention
with RoPE → residual, RMSNorm → SwiGLU MLP → residual], final RMSNorm, LM head tied to the
embedding when the config says so), :class:`LlamaKVCache` (one (B, Hkv, Tmax, D) key and value
buffer per layer, written in place) and :func:`build_llama`. The model knows no generation
(gpt-fast style); :mod:`dhian.decoding.llm_generate` drives it.

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

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dhian.errors import ConfigError
from dhian.models.llama.config import LlamaConfig
from dhian.nn.mha import scaled_dot_product
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


class LlamaAttention(nn.Module):
    """Grouped-query self attention with RoPE: ``q_proj`` E→H·D, ``k_proj``/``v_proj``
    E→Hkv·D, ``o_proj`` H·D→E, no biases (HF layout)."""

    def __init__(self, cfg: LlamaConfig, rotary: RotaryEmbedding) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)
        self.rotary = [rotary]  # shared, not a submodule (its buffers live on LlamaModel)

    def forward(
        self,
        x: Tensor,
        positions: Tensor,
        mask: Tensor | None,
        cache: LlamaKVCache | None,
        layer: int,
        need_weights: bool,
    ) -> tuple[Tensor, Tensor | None]:
        """x (B, T, E), positions (B, T); mask bool broadcastable to (B, H, T, S) or ``None``
        (then causal over the T new tokens when there is no cache). Returns (B, T, E) and
        weights (B, H, T, S) when ``need_weights``."""
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim)  # (B, T, H, D)
        k = self.k_proj(x).view(b, t, self.n_kv_heads, self.head_dim)  # (B, T, Hkv, D)
        v = self.v_proj(x).view(b, t, self.n_kv_heads, self.head_dim)  # (B, T, Hkv, D)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H|Hkv, T, D)
        q, k = self.rotary[0](q, k, positions=positions)
        if cache is not None:
            k, v = cache.write(layer, cache.length, k, v)  # (B, Hkv, S, D)
        causal = mask is None and cache is None and t > 1
        out, weights = scaled_dot_product(
            q, k, v, mask=mask, need_weights=need_weights, is_causal=causal
        )  # (B, H, T, D)
        out = out.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim)  # (B, T, H·D)
        return self.o_proj(out), weights


class LlamaMLP(nn.Module):
    """SwiGLU: ``down_proj(silu(gate_proj(x)) * up_proj(x))``, E→F→E, no biases."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.up_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, T, E) → (B, T, E)."""
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # (B, T, F) inside


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
        positions: Tensor,
        mask: Tensor | None,
        cache: LlamaKVCache | None,
        layer: int,
        need_weights: bool,
    ) -> tuple[Tensor, Tensor | None]:
        """x (B, T, E) → (B, T, E), attention weights (B, H, T, S) | None."""
        a, weights = self.self_attn(
            self.input_layernorm(x), positions, mask, cache, layer, need_weights
        )
        x = x + a
        return x + self.mlp(self.post_attention_layernorm(x)), weights


class LlamaModel(nn.Module):
    """LLaMA decoder with its LM head. ``forward(ids, positions, cache, attn_mask, …)``."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.rotary = RotaryEmbedding(
            cfg.head_dim, cfg.max_seq_len, cfg.rope_theta, float32_angles=True
        )
        self.layers = nn.ModuleList([LlamaBlock(cfg, self.rotary) for _ in range(cfg.n_layers)])
        self.norm = nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """N(0, 0.02²) linear and embedding weights, unit norms (HF's initializer_range)."""
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
            elif isinstance(m, nn.RMSNorm) and m.weight is not None:
                nn.init.ones_(m.weight)

    def new_cache(
        self, batch_size: int, max_len: int | None = None, dtype: torch.dtype | None = None
    ) -> LlamaKVCache:
        """An empty :class:`LlamaKVCache` on this model's device (``max_len`` defaults to
        ``cfg.max_seq_len``)."""
        w = self.embed_tokens.weight
        return LlamaKVCache(
            self.cfg,
            batch_size,
            self.cfg.max_seq_len if max_len is None else max_len,
            dtype=w.dtype if dtype is None else dtype,
            device=w.device,
        )

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
        x = self.embed_tokens(ids)  # (B, T, E)
        all_weights: list[Tensor] = []
        for i, layer in enumerate(self.layers):
            x, w = layer(x, positions, mask, cache, i, need_weights)
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
