"""BERT backbone (Devlin et al., 2019): embeddings, post-norm encoder stack, pooler.

Owns :class:`BertEmbeddings` (token + learned position + segment, LayerNorm, dropout),
:class:`BertBackbone` (embeddings → ``layers`` post-norm :class:`~dhian.nn.EncoderBlock` with
gelu → optional pooler dense+tanh on [CLS]), :class:`BertOutput`, the input-length policy
(:func:`check_length`) and :func:`backbone_kwargs` — with :func:`dhian.models.bert.heads.build_bert`
the one place :class:`BertConfig` is read.
Task heads (masked LM, sequence classification) live in :mod:`dhian.models.bert.heads`;
tokenisation lives in :mod:`dhian.text.bert_inputs`.

Parameter names (HF importers map onto them, see :mod:`dhian.interop.hf_bert`):
``embeddings.word`` / ``embeddings.position`` / ``embeddings.segment`` / ``embeddings.norm``,
``layers.{i}.self_attn.in_proj_weight`` (3E, E) = [W_q; W_k; W_v], ``layers.{i}.self_attn.out_proj``,
``layers.{i}.norm1``, ``layers.{i}.ff.linear1``/``linear2``, ``layers.{i}.norm2``,
``pooler.dense``.

Notation: B batch, T length, H heads, E model dim, V vocab.
Imports: torch, :mod:`dhian.nn`, the family config, :mod:`dhian.errors`.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from dhian.errors import DataError
from dhian.models.bert.config import BertConfig
from dhian.nn import EncoderBlock, LearnedPositionalEmbedding, MultiHeadAttention, as_key_mask
from dhian.nn import padding_mask as _padding_mask
from dhian.nn.batch_parallel import batch_parts, run_parts

__all__ = [
    "BertBackbone",
    "BertEmbeddings",
    "BertOutput",
    "backbone_kwargs",
    "check_length",
    "init_bert_weights",
    "key_mask",
]


@dataclasses.dataclass
class BertOutput:
    """Backbone output.

    ``last_hidden`` (B, T, E); ``pooled`` (B, E) = tanh(dense(h[CLS])) or ``None`` without a
    pooler; ``attentions``: per layer (B, H, T, T) when asked, else ``None``; ``hidden_states``:
    embeddings output then every layer's output, L+1 tensors (B, T, E), when asked, else ``None``.
    """

    last_hidden: Tensor
    pooled: Tensor | None = None
    attentions: list[Tensor] | None = None
    hidden_states: list[Tensor] | None = None


def check_length(t: int, max_positions: int, too_long: str, what: str = "input") -> int:
    """The length to keep of a T-token ``what``: T itself, or ``max_positions`` with a warning
    (``too_long="truncate"``); ``too_long="error"`` raises :class:`DataError` instead."""
    if t <= max_positions:
        return t
    if too_long == "error":
        raise DataError(
            f"{what} has {t} tokens but the model takes at most {max_positions} "
            "(shorten it, or set model.too_long=truncate)"
        )
    warnings.warn(
        f"{what} has {t} tokens; truncated to the model's {max_positions} positions",
        stacklevel=3,
    )
    return max_positions


def key_mask(
    input_ids: Tensor, lengths: Tensor | None, attention_mask: Tensor | None
) -> Tensor | None:
    """Key-padding mask (B, 1, 1, T), True = real token, from ``lengths`` (B,) or an HF-style
    ``attention_mask`` (B, T) (1/True = token); ``None`` (attend everywhere) if neither."""
    b, t = input_ids.shape
    if lengths is not None and attention_mask is not None:
        raise ValueError("give lengths or attention_mask, not both")
    if lengths is not None:
        if lengths.dim() != 1 or lengths.size(0) != b:
            raise ValueError(
                f"lengths must be (B,) = ({b},), received {tuple(lengths.shape)} "
                "(pass an HF-style (B, T) mask as attention_mask=)"
            )
        return _padding_mask(lengths.to(input_ids.device), max_len=t)  # (B, 1, 1, T)
    if attention_mask is not None:
        if attention_mask.shape != (b, t):
            raise ValueError(
                f"attention_mask must be (B, T) = {(b, t)}, received {tuple(attention_mask.shape)}"
            )
        return as_key_mask(attention_mask.bool())  # (B, 1, 1, T)
    return None


def init_bert_weights(module: nn.Module, std: float = 0.02) -> None:
    """BERT initialisation: N(0, std²) for linear/embedding weights (and the fused in-projection),
    zero biases, LayerNorm weight 1 and bias 0. Use as ``model.apply(partial(init, std=...))``."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding | LearnedPositionalEmbedding):
        nn.init.normal_(module.weight, std=std)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, MultiHeadAttention):
        nn.init.normal_(module.in_proj_weight, std=std)
        if module.in_proj_bias is not None:
            nn.init.zeros_(module.in_proj_bias)


class BertEmbeddings(nn.Module):
    """word (V, E) + position (max_positions, E) + segment (type_vocab_size, E) → LayerNorm →
    dropout."""

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        max_positions: int,
        type_vocab_size: int,
        dropout: float,
        layer_norm_eps: float,
    ) -> None:
        super().__init__()
        self.word = nn.Embedding(vocab_size, embed_dim)
        self.position = LearnedPositionalEmbedding(max_positions, embed_dim)
        self.segment = nn.Embedding(type_vocab_size, embed_dim)
        self.norm = nn.LayerNorm(embed_dim, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        """input_ids (B, T), token_type_ids (B, T) or None (all segment 0) → (B, T, E)."""
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        elif token_type_ids.shape != input_ids.shape:
            raise ValueError(
                f"token_type_ids {tuple(token_type_ids.shape)} must match input_ids "
                f"{tuple(input_ids.shape)}"
            )
        x = self.word(input_ids) + self.segment(token_type_ids)  # (B, T, E)
        x = x + self.position(input_ids.size(1))  # (T, E) broadcast over B
        return self.dropout(self.norm(x))


class BertPooler(nn.Module):
    """tanh(dense(h[:, 0])): (B, T, E) → (B, E)."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(embed_dim, embed_dim)

    def forward(self, hidden: Tensor) -> Tensor:
        """hidden (B, T, E) → pooled (B, E)."""
        return torch.tanh(self.dense(hidden[:, 0]))


class BertBackbone(nn.Module):
    """BERT encoder without a task head.

    Built from plain numbers (see :func:`build_bert` for the config → arguments mapping).
    ``too_long``: what :meth:`forward` does with T > ``max_positions`` — ``truncate`` (warn and
    keep the first ``max_positions`` tokens) or ``error`` (:class:`~dhian.errors.DataError`).
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int = 768,
        layers: int = 12,
        heads: int = 12,
        ff_dim: int = 3072,
        max_positions: int = 512,
        type_vocab_size: int = 2,
        dropout: float = 0.1,
        attention_dropout: float = 0.1,
        activation: str = "gelu",
        layer_norm_eps: float = 1e-12,
        pooler: bool = True,
        too_long: str = "truncate",
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = heads
        self.max_positions = max_positions
        self.too_long = too_long
        self.embeddings = BertEmbeddings(
            vocab_size, embed_dim, max_positions, type_vocab_size, dropout, layer_norm_eps
        )
        self.layers = nn.ModuleList(
            EncoderBlock(
                embed_dim,
                heads,
                ff_dim,
                dropout=dropout,
                norm_first=False,
                activation=activation,
                layer_norm_eps=layer_norm_eps,
                attn_dropout=attention_dropout,
            )
            for _ in range(layers)
        )
        self.pooler = BertPooler(embed_dim) if pooler else None
        #: inference without autograd on the CPU splits the batch across single-threaded
        #: workers (:mod:`dhian.nn.batch_parallel`); False runs it as one batch
        self.batch_parallel = True
        self.apply(lambda m: init_bert_weights(m, init_std))

    @property
    def word_embeddings(self) -> nn.Embedding:
        """The token embedding (V, E); the MLM decoder is tied to it."""
        return self.embeddings.word

    def forward(
        self,
        input_ids: Tensor,
        lengths: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        need_weights: bool = False,
        need_hidden: bool = False,
    ) -> BertOutput:
        """input_ids (B, T) long; ``lengths`` (B,) real lengths or ``attention_mask`` (B, T)
        (1 = token) or neither (attend everywhere); ``token_type_ids`` (B, T) segments (None = 0).
        Returns :class:`BertOutput` (attention per layer (B, H, T, T) when ``need_weights``)."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (B, T), received {tuple(input_ids.shape)}")
        t = input_ids.size(1)
        keep = check_length(t, self.max_positions, self.too_long, "input_ids")
        if keep < t:
            input_ids = input_ids[:, :keep]  # (B, T') with T' = max_positions
            if token_type_ids is not None:
                token_type_ids = token_type_ids[:, :keep]
            if attention_mask is not None:
                attention_mask = attention_mask[:, :keep]
            if lengths is not None:
                lengths = lengths.clamp(max=keep)
        mask = key_mask(input_ids, lengths, attention_mask)  # (B, 1, 1, T) | None
        if mask is not None and mask.device.type == "cpu" and bool(mask.all()):
            mask = None  # no padding: SDPA without a mask (on the CPU the check is free)
        b, t = input_ids.shape
        parts = 1
        if not (need_weights or need_hidden or self.training):
            parts = batch_parts(b, t, input_ids.device, self.batch_parallel)
        if parts > 1:

            def encode_rows(rows: slice) -> BertOutput:
                segments = None if token_type_ids is None else token_type_ids[rows]
                part_mask = None if mask is None else mask[rows]  # (B', 1, 1, T)
                return self._encode(input_ids[rows], segments, part_mask, False, False)

            outs = run_parts(encode_rows, b, parts)
            pooled = [o.pooled for o in outs if o.pooled is not None]
            return BertOutput(
                torch.cat([o.last_hidden for o in outs]),  # (B, T, E)
                torch.cat(pooled) if pooled else None,  # (B, E)
            )
        return self._encode(input_ids, token_type_ids, mask, need_weights, need_hidden)

    def _encode(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None,
        mask: Tensor | None,
        need_weights: bool,
        need_hidden: bool,
    ) -> BertOutput:
        """The forward of checked ids (B, T) with the key mask (B, 1, 1, T) | None."""
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, E)
        hidden: list[Tensor] | None = [x] if need_hidden else None
        attentions: list[Tensor] | None = [] if need_weights else None
        for layer in self.layers:
            x, w = layer(x, mask=mask, need_weights=need_weights)  # (B, T, E), (B, H, T, T)
            if attentions is not None and w is not None:
                attentions.append(w)
            if hidden is not None:
                hidden.append(x)
        pooled = self.pooler(x) if self.pooler is not None else None
        return BertOutput(x, pooled, attentions, hidden)


def backbone_kwargs(cfg: BertConfig, vocab_size: int | None = None) -> dict[str, Any]:
    """Keyword arguments of :class:`BertBackbone` read off ``cfg`` (vocab from the tokenizer
    when given, else ``cfg.vocab_size``)."""
    return {
        "vocab_size": int(vocab_size or cfg.vocab_size),
        "embed_dim": cfg.embed_dim,
        "layers": cfg.layers,
        "heads": cfg.heads,
        "ff_dim": cfg.ff_dim,
        "max_positions": cfg.max_positions,
        "type_vocab_size": cfg.type_vocab_size,
        "dropout": cfg.dropout,
        "attention_dropout": cfg.attention_dropout,
        "activation": cfg.activation,
        "layer_norm_eps": cfg.layer_norm_eps,
        "pooler": cfg.has_pooler,
        "too_long": cfg.too_long,
        "init_std": cfg.init_std,
    }
