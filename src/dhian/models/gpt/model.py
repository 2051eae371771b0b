"""GPT: a decoder-only causal language model (GPT-2 / nanoGPT shape).

Owns :class:`GPT` (token embedding → [learned positions] → dropout → ``n_layer`` pre-norm
:class:`~dhian.nn.DecoderBlock` with causal self attention and no cross attention → final
LayerNorm → logits through the token embedding matrix when tied), :func:`build_gpt` (the one
place :class:`~dhian.models.gpt.config.GPTConfig` is read) and :func:`lm_loss`.

Positions: ``learned`` adds a trained (block_size, E) table; ``rotary`` rotates q and k in every
attention layer (no table). Either way the longest context is ``block_size``; longer inputs
raise ``ValueError`` (generation in :mod:`dhian.decoding.sampling` crops the context instead).

Notation: B batch, T length (new tokens), Tk keys (cached + new), H heads, E model dim (n_embd),
V vocab.
Imports: torch, :mod:`dhian.nn`, the family config, :mod:`dhian.models.outputs`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import cast

import torch.nn.functional as F
from torch import Tensor, nn

from dhian.models.gpt.config import GPTConfig
from dhian.models.outputs import LMOutput
from dhian.nn import (
    DecoderBlock,
    FeedForward,
    KVCache,
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    as_key_mask,
    kv_caches,
)

__all__ = ["GPT", "GPTOutput", "build_gpt", "lm_loss"]


@dataclasses.dataclass
class GPTOutput(LMOutput):
    """:class:`LMOutput` (``logits`` (B, T, V), ``attention`` list per layer of (B, H, T, Tk) or
    ``None``) plus ``caches``: the per-layer :class:`~dhian.nn.KVCache` passed in (now extended
    by this call's keys and values), or ``None``."""

    caches: list[KVCache] | None = None


def lm_loss(
    logits: Tensor, targets: Tensor, ignore_index: int = -100, label_smoothing: float = 0.0
) -> Tensor:
    """Mean next-token cross entropy: logits (B, T, V), targets (B, T) long (``ignore_index``
    positions do not count). ``exp`` of it is the perplexity."""
    v = logits.size(-1)
    return F.cross_entropy(
        logits.reshape(-1, v).float(),  # (B*T, V)
        targets.reshape(-1),  # (B*T,)
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
    )


class GPT(nn.Module):
    """Decoder-only transformer LM. Submodules: ``tok_emb`` (V, E), ``pos_emb`` (learned
    positions only), ``blocks`` (pre-norm :class:`~dhian.nn.DecoderBlock`, names ``self_attn``,
    ``ff.linear1``/``ff.linear2``, ``norm1``/``norm2``), ``norm_f`` and, when the embeddings are
    not tied, ``lm_head`` (E → V). Tied logits use ``tok_emb.weight`` directly, so the state dict
    holds no shared tensor (safetensors-friendly).
    """

    def __init__(
        self,
        vocab_size: int,
        n_layer: int,
        n_head: int,
        n_embd: int,
        block_size: int,
        ff_dim: int = 0,
        dropout: float = 0.0,
        bias: bool = True,
        positions: str = "learned",
        rope_base: float = 10000.0,
        activation: str = "gelu",
        tie_embeddings: bool = True,
        layer_norm_eps: float = 1e-5,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        if vocab_size <= 0:
            raise ValueError(f"GPT: vocab_size must be positive, got {vocab_size}")
        if positions not in ("learned", "rotary"):
            raise ValueError(f"GPT: positions must be learned or rotary, got {positions!r}")
        self.vocab_size = vocab_size
        self.n_layer = n_layer
        self.n_head = n_head
        self.n_embd = n_embd
        self.block_size = block_size
        self.positions = positions
        self.init_std = init_std
        hidden = ff_dim or 4 * n_embd
        self.tok_emb = nn.Embedding(vocab_size, n_embd)
        self.pos_emb: LearnedPositionalEmbedding | None = None
        rotary: RotaryEmbedding | None = None
        if positions == "learned":
            self.pos_emb = LearnedPositionalEmbedding(block_size, n_embd)
        else:
            rotary = RotaryEmbedding(n_embd // n_head, max_len=block_size, base=rope_base)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            [
                DecoderBlock(
                    n_embd,
                    n_head,
                    hidden,
                    dropout=dropout,
                    norm_first=True,
                    activation=activation,
                    layer_norm_eps=layer_norm_eps,
                    cross_attention=False,
                    bias=bias,
                    rotary=rotary,
                    ff=_feed_forward(n_embd, hidden, dropout, activation, bias),
                )
                for _ in range(n_layer)
            ]
        )
        if not bias:  # bias-free LayerNorms too (nanoGPT's bias=False)
            for block in self._decoder_blocks():
                block.norm1 = nn.LayerNorm(n_embd, eps=layer_norm_eps, bias=False)
                block.norm2 = nn.LayerNorm(n_embd, eps=layer_norm_eps, bias=False)
        self.norm_f = nn.LayerNorm(n_embd, eps=layer_norm_eps, bias=bias)
        self.lm_head: nn.Linear | None = None
        if not tie_embeddings:
            self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2 init: N(0, init_std²) weights, zero biases, unit LayerNorms; residual output
        projections (``out_proj``, ``ff.linear2``) get std init_std / √(2·n_layer)."""
        std = self.init_std
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=std)
                if isinstance(module, nn.Linear) and module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, LearnedPositionalEmbedding):
                nn.init.normal_(module.weight, std=std)
        residual_std = std / math.sqrt(2 * self.n_layer)
        for block in self._decoder_blocks():
            attn = block.self_attn
            nn.init.normal_(attn.in_proj_weight, std=std)
            if attn.in_proj_bias is not None:
                nn.init.zeros_(attn.in_proj_bias)
            nn.init.normal_(attn.out_proj.weight, std=residual_std)
            nn.init.normal_(block.ff.linear2.weight, std=residual_std)

    def _decoder_blocks(self) -> list[DecoderBlock]:
        return [cast(DecoderBlock, b) for b in self.blocks]

    def init_caches(self) -> list[KVCache]:
        """One empty self-attention :class:`~dhian.nn.KVCache` per layer (incremental decoding)."""
        return kv_caches(self.n_layer)

    def num_parameters(self) -> int:
        """Number of trainable parameters (tied weights counted once)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def forward(
        self,
        ids: Tensor,
        positions: Tensor | None = None,
        attention_mask: Tensor | None = None,
        need_weights: bool = False,
        caches: list[KVCache] | None = None,
        logits_to_keep: int = 0,
    ) -> GPTOutput:
        """Next-token logits for every position of ``ids`` (B, T) long.

        ``caches``: per-layer caches (see :meth:`init_caches`) holding Tc earlier positions; this
        call's keys/values are appended, so T may be 1 per step. ``positions`` (B, T): position
        ids for learned positions (default ``Tc .. Tc+T-1``; per-row ids let left-padded rows
        start at 0). With rotary positions q/k are rotated by column index ``Tc + t``; a per-row
        shift (left padding) does not change attention, which only sees relative positions, so
        ``positions`` is then unused. ``attention_mask`` (B, Tc + T) bool, True = real token
        (keys that are False are never attended to); the causal mask is always applied. Without
        a mask and a cache, attention is one fused causal SDPA call. ``need_weights`` returns
        per-layer self-attention weights (B, H, T, Tc + T). ``logits_to_keep`` k > 0 runs the
        output layer on the last k positions only (generation needs the last one: at V = 50k
        the output layer costs about as much as the whole stack of a GPT-2-small).
        Returns :class:`GPTOutput` (logits (B, T, V), or (B, k, V) with ``logits_to_keep``,
        attention, caches).
        """
        if ids.dim() != 2:
            raise ValueError(f"GPT: expected ids of shape (B, T), received {tuple(ids.shape)}")
        b, t = ids.shape
        if caches is not None and len(caches) != self.n_layer:
            raise ValueError(f"GPT: expected {self.n_layer} caches, received {len(caches)}")
        past = caches[0].length if caches else 0
        if past + t > self.block_size:
            raise ValueError(
                f"GPT: {past + t} positions ({past} cached + {t} new) exceed block_size="
                f"{self.block_size}; crop the context to the last {self.block_size} tokens "
                "(dhian.decoding.sampling.generate does) or build a model with a larger block_size"
            )
        x = self.tok_emb(ids)  # (B, T, E)
        if self.pos_emb is not None:
            if positions is None:
                x = x + self.pos_emb(t, offset=past)  # (B, T, E) + (T, E)
            else:
                if positions.shape != ids.shape:
                    raise ValueError(
                        f"GPT: positions must have the shape of ids {tuple(ids.shape)}, "
                        f"received {tuple(positions.shape)}"
                    )
                if positions.numel() and int(positions.max()) >= self.block_size:
                    raise ValueError(
                        f"GPT: position {int(positions.max())} >= block_size={self.block_size}"
                    )
                x = x + self.pos_emb(positions)  # (B, T, E) + (B, T, E)
        x = self.drop(x)
        mask = None
        if attention_mask is not None:
            if attention_mask.shape != (b, past + t):
                raise ValueError(
                    f"GPT: attention_mask must be (B, cached + T) = {(b, past + t)}, "
                    f"received {tuple(attention_mask.shape)}"
                )
            mask = as_key_mask(attention_mask)  # (B, 1, 1, Tk)
        weights: list[Tensor] = []
        for i, block in enumerate(self.blocks):
            x, w, _ = block(
                x,
                self_mask=mask,
                need_weights=need_weights,
                self_cache=None if caches is None else caches[i],
                causal=True,
            )  # (B, T, E), (B, H, T, Tk) | None
            if w is not None:
                weights.append(w)
        if logits_to_keep > 0:
            x = x[:, -logits_to_keep:]  # (B, k, E)
        x = self.norm_f(x)  # (B, T|k, E)
        head = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight  # (V, E)
        logits = F.linear(x, head)  # (B, T|k, V)
        return GPTOutput(logits, weights if need_weights else None, caches)


def _feed_forward(
    dim: int, hidden: int, dropout: float, activation: str, bias: bool
) -> FeedForward:
    ff = FeedForward(dim, hidden, dropout, activation)
    if not bias:  # FeedForward always has biases; swap in bias-free projections
        ff.linear1 = nn.Linear(dim, hidden, bias=False)
        ff.linear2 = nn.Linear(hidden, dim, bias=False)
    return ff


def build_gpt(
    config: GPTConfig,
    vocab_size: int | None = None,
    tgt_vocab_size: int | None = None,
    pad_id: int = 0,
    bos_id: int = 2,
    eos_id: int = 3,
) -> GPT:
    """The :class:`GPT` described by ``config`` (the builder of ``model.type: gpt``).

    The vocabulary size is ``config.vocab_size`` when set (> 0), else ``vocab_size`` — the
    tokenizer's, as :func:`dhian.models.families.build_model` passes it (``src_vocab_size``).
    ``tgt_vocab_size`` and the special ids are accepted for the registry's calling convention
    and unused (one vocabulary; no special id is treated specially).
    """
    del pad_id, bos_id, eos_id
    vocab = config.vocab_size or vocab_size or tgt_vocab_size
    if not vocab:
        raise ValueError(
            "build_gpt: model.vocab_size is 0 and no vocab_size was given; pass the "
            "tokenizer's vocab_size"
        )
    return GPT(
        vocab_size=int(vocab),
        n_layer=config.n_layer,
        n_head=config.n_head,
        n_embd=config.n_embd,
        block_size=config.block_size,
        ff_dim=config.ff_dim,
        dropout=config.dropout,
        bias=config.bias,
        positions=config.positions,
        rope_base=config.rope_base,
        activation=config.activation,
        tie_embeddings=config.tie_embeddings,
        layer_norm_eps=config.layer_norm_eps,
        init_std=config.init_std,
    )
