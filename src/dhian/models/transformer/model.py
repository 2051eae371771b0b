"""Encoder-decoder Transformer for translation (Vaswani et al., 2017), with KV-cached decoding.

Owns :class:`TransformerSeq2Seq`, the output record :class:`TransformerOutput` and
:func:`build_transformer` (the one place that reads a
:class:`~dhian.models.transformer.config.TransformerConfig`). Blocks, attention and positions come from
:mod:`dhian.nn`; this module only wires them.

The decoder state :class:`TransformerState` lives in :mod:`dhian.models.transformer.state`
(re-exported here). Seq2seq interface (docs/design.md): ``forward(src, src_lengths, tgt_in, need_weights)`` (teacher
forcing; without ``need_weights`` every attention runs on the SDPA fast path) and
``start`` / ``step`` / ``reorder`` for :mod:`dhian.decoding`. ``start`` runs the encoder once and
projects each decoder layer's cross-attention keys/values once (static :class:`KVCache`);
``step`` feeds one token per row, appending to each layer's self-attention cache (positions
offset by the number of tokens already fed); ``reorder`` selects rows of every cache (beam
search, finished sentences leaving the batch). Both paths run the same layers and give the same
logits (tested).

Notation: B batch, N decoder rows, Ts/Tt source/target lengths, H heads, D head dim, E model
dim, V target vocab, L decoder layers.
Imports: torch, :mod:`dhian.nn`, the family config, :mod:`dhian.models.outputs`,
:mod:`dhian.errors`, :mod:`dhian.models.transformer.state`.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor, nn

from dhian.errors import ConfigError
from dhian.models.outputs import Seq2SeqOutput
from dhian.models.transformer.config import TransformerConfig
from dhian.models.transformer.state import TransformerState, reorder_state, static_kv
from dhian.nn.attention import KVCache, MultiHeadAttention, kv_caches
from dhian.nn.blocks import DecoderBlock, EncoderBlock, FeedForward
from dhian.nn.fused_decoder import FusedDecoderBlock
from dhian.nn.masks import padding_mask
from dhian.nn.positional import LearnedPositionalEmbedding, SinusoidalPositionalEncoding

__all__ = [
    "MarianSinusoidalEncoding",
    "TransformerOutput",
    "TransformerSeq2Seq",
    "TransformerState",
    "build_transformer",
]


class MarianSinusoidalEncoding(SinusoidalPositionalEncoding):
    """The paper's sinusoids in HF Marian's layout: all sin features first, then all cos.

    Row p = [sin(p·ω_0), …, sin(p·ω_{⌈E/2⌉-1}), cos(p·ω_0), …, cos(p·ω_{⌊E/2⌋-1})] with
    ω_i = 10000^(-2i/E) — the interleaved table of :class:`SinusoidalPositionalEncoding` with
    its even columns moved to the front. Same ``forward`` API.
    """

    def __init__(self, dim: int, max_len: int = 5000) -> None:
        super().__init__(dim, max_len)
        # (max_len, E) interleaved → (max_len, ⌈E/2⌉) sin | (max_len, ⌊E/2⌋) cos
        split = torch.cat([self.pe[:, 0::2], self.pe[:, 1::2]], dim=1)  # (max_len, E)
        self.register_buffer("pe", split.contiguous(), persistent=False)


@dataclasses.dataclass
class TransformerOutput(Seq2SeqOutput):
    """:class:`Seq2SeqOutput` plus the self-attention weights of both stacks.

    With ``need_weights``: ``attention`` is the cross attention, one (B, H, Tt, Ts) per decoder
    layer (the design contract); ``encoder_attention`` one (B, H, Ts, Ts) per encoder layer;
    ``decoder_attention`` one (B, H, Tt, Tt) per decoder layer. Otherwise all three are None.
    """

    encoder_attention: list[Tensor] | None = None
    decoder_attention: list[Tensor] | None = None


class TransformerSeq2Seq(nn.Module):
    """Transformer encoder-decoder; built from plain ints by :func:`build_transformer`.

    Submodules: ``src_embed`` / ``tgt_embed`` (the same module when ``share_embeddings``),
    ``src_pos`` / ``tgt_pos``, ``encoder`` / ``decoder`` (ModuleLists of
    :class:`~dhian.nn.blocks.EncoderBlock` / :class:`~dhian.nn.blocks.DecoderBlock`),
    ``enc_norm`` / ``dec_norm`` (final LayerNorms, pre-norm only, else None) and ``output``
    (Linear E → V, weight tied to ``tgt_embed`` when ``tie_embeddings``).
    """

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        *,
        embed_dim: int = 512,
        num_heads: int = 8,
        ff_dim: int = 2048,
        enc_layers: int = 6,
        dec_layers: int = 6,
        dropout: float = 0.1,
        attn_dropout: float = 0.0,
        activation_dropout: float = 0.0,
        activation: str = "relu",
        norm_first: bool = False,
        positions: str = "sinusoidal",
        max_positions: int = 1024,
        share_embeddings: bool = True,
        tie_embeddings: bool = True,
        scale_embedding: bool = True,
        output_bias: bool = False,
        layer_norm_eps: float = 1e-5,
        start_from_zero: bool = False,
        pad_id: int = 0,
        bos_id: int = 2,
        eos_id: int = 3,
    ) -> None:
        super().__init__()
        if share_embeddings and src_vocab_size != tgt_vocab_size:
            raise ConfigError(
                f"model.share_embeddings needs one joint vocabulary, but the source vocab has "
                f"{src_vocab_size} and the target vocab {tgt_vocab_size} entries; set "
                "data.joint_vocab: true or model.share_embeddings: false"
            )
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.embed_dim = embed_dim
        self.max_positions = max_positions
        self.embed_scale = math.sqrt(embed_dim) if scale_embedding else 1.0
        self.start_from_zero = start_from_zero
        self.src_embed = nn.Embedding(src_vocab_size, embed_dim, padding_idx=pad_id)
        self.tgt_embed = (
            self.src_embed
            if share_embeddings
            else nn.Embedding(tgt_vocab_size, embed_dim, padding_idx=pad_id)
        )
        self.src_pos = self._positions(positions, max_positions, embed_dim)
        self.tgt_pos = self._positions(positions, max_positions, embed_dim)
        self.dropout = nn.Dropout(dropout)

        def ff() -> FeedForward:
            return FeedForward(embed_dim, ff_dim, activation_dropout, activation)

        self.encoder = nn.ModuleList(
            EncoderBlock(
                embed_dim,
                num_heads,
                ff_dim,
                dropout,
                norm_first,
                activation,
                layer_norm_eps,
                attn_dropout,
                ff=ff(),
            )
            for _ in range(enc_layers)
        )
        self.decoder = nn.ModuleList(
            DecoderBlock(
                embed_dim,
                num_heads,
                ff_dim,
                dropout,
                norm_first,
                activation,
                layer_norm_eps,
                attn_dropout,
                ff=ff(),
            )
            for _ in range(dec_layers)
        )
        self.enc_norm = nn.LayerNorm(embed_dim, eps=layer_norm_eps) if norm_first else None
        self.dec_norm = nn.LayerNorm(embed_dim, eps=layer_norm_eps) if norm_first else None
        self.output = nn.Linear(embed_dim, tgt_vocab_size, bias=output_bias)
        self._reset_embeddings()
        if tie_embeddings:
            self.output.weight = self.tgt_embed.weight

    @staticmethod
    def _positions(kind: str, max_len: int, dim: int) -> nn.Module:
        if kind == "sinusoidal":
            return SinusoidalPositionalEncoding(dim, max_len)
        if kind == "sinusoidal_marian":
            return MarianSinusoidalEncoding(dim, max_len)
        if kind == "learned":
            return LearnedPositionalEmbedding(max_len, dim)
        raise ConfigError(
            f"model.positions must be sinusoidal, learned or sinusoidal_marian, got {kind!r}"
        )

    def _reset_embeddings(self) -> None:
        """N(0, E^-1/2) embeddings with a zero PAD row; zero output bias."""
        for emb in {id(m): m for m in (self.src_embed, self.tgt_embed)}.values():
            nn.init.normal_(emb.weight, std=self.embed_dim**-0.5)
            if emb.padding_idx is not None:
                with torch.no_grad():
                    emb.weight[emb.padding_idx].zero_()
        if self.output.bias is not None:
            nn.init.zeros_(self.output.bias)

    # ---- encoder / decoder ---------------------------------------------------------------
    def _embed(self, emb: nn.Module, pos: nn.Module, ids: Tensor, offset: int = 0) -> Tensor:
        """ids (B, T) → dropout(emb · scale + positions offset..offset+T-1) (B, T, E)."""
        x = emb(ids) * self.embed_scale  # (B, T, E)
        return self.dropout(x + pos(ids.size(1), offset))  # (T, E) broadcast over B

    def _embed_target(self, ids: Tensor, offset: int = 0) -> Tensor:
        """:meth:`_embed` of decoder inputs; with ``start_from_zero`` position 0 gets no token
        embedding (only its position), as in Marian and CTranslate2."""
        if not (self.start_from_zero and offset == 0):
            return self._embed(self.tgt_embed, self.tgt_pos, ids, offset)
        x = self.tgt_embed(ids) * self.embed_scale  # (B, T, E)
        keep = (torch.arange(ids.size(1), device=ids.device) > 0).to(x.dtype)  # (T,)
        return self.dropout(x * keep[:, None] + self.tgt_pos(ids.size(1), 0))

    def encode(
        self, src: Tensor, src_lengths: Tensor, need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None, list[Tensor] | None]:
        """Run the encoder on ``src`` (B, Ts) with true lengths (B,).

        Returns memory (B, Ts', E), the key mask (B, 1, 1, Ts') (True = real token; None when no
        sentence is padded: the unmasked SDPA path) and, when ``need_weights``, the
        self-attention weights per layer (B, H, Ts', Ts'). Ts' = max(Ts, 1): an all-empty batch
        gets one PAD column (masked), so empty sources never crash.
        """
        if src.dim() != 2 or src_lengths.shape != src.shape[:1]:
            raise ValueError(
                f"expected src (B, Ts) and src_lengths (B,), received {tuple(src.shape)} and "
                f"{tuple(src_lengths.shape)}"
            )
        if src.size(1) == 0:
            src = src.new_full((src.size(0), 1), self.pad_id)  # (B, 1)
        lengths = src_lengths.to(src.device)
        ts = src.size(1)
        mask = None if bool((lengths == ts).all()) else padding_mask(lengths, max_len=ts)
        x = self._embed(self.src_embed, self.src_pos, src)  # (B, Ts, E)
        weights: list[Tensor] = []
        for layer in self.encoder:
            x, w = layer(x, mask=mask, need_weights=need_weights)
            if w is not None:
                weights.append(w)
        if self.enc_norm is not None:
            x = self.enc_norm(x)
        return x, mask, (weights if need_weights else None)

    def decode(
        self,
        tgt_in: Tensor,
        memory: Tensor,
        memory_mask: Tensor | None,
        need_weights: bool = False,
    ) -> tuple[Tensor, list[Tensor] | None, list[Tensor] | None]:
        """Teacher-forced decoder over ``tgt_in`` (B, Tt) = BOS y1..y_{Tt-1}.

        ``memory`` (B, Ts, E) and ``memory_mask`` (B, 1, 1, Ts) | None from :meth:`encode`.
        Returns logits (B, Tt, V) and, when ``need_weights``, the decoder self-attention
        weights (B, H, Tt, Tt) and cross-attention weights (B, H, Tt, Ts) per layer. Target
        padding needs no mask: it only follows real tokens, which the causal mask hides it from.
        """
        x = self._embed_target(tgt_in)  # (B, Tt, E)
        self_w: list[Tensor] = []
        cross_w: list[Tensor] = []
        for layer in self.decoder:
            x, sw, cw = layer(x, memory, memory_mask=memory_mask, need_weights=need_weights)
            if sw is not None and cw is not None:
                self_w.append(sw)
                cross_w.append(cw)
        if self.dec_norm is not None:
            x = self.dec_norm(x)
        logits = self.output(x)  # (B, Tt, V)
        return logits, (self_w if need_weights else None), (cross_w if need_weights else None)

    def forward(
        self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, need_weights: bool = False
    ) -> TransformerOutput:
        """src (B, Ts), src_lengths (B,), tgt_in (B, Tt) → logits (B, Tt, V) (+ weights)."""
        memory, mask, enc_w = self.encode(src, src_lengths, need_weights)
        logits, dec_w, cross_w = self.decode(tgt_in, memory, mask, need_weights)
        return TransformerOutput(
            logits, attention=cross_w, encoder_attention=enc_w, decoder_attention=dec_w
        )

    # ---- incremental decoding (dhian.decoding step interface) ----------------------------
    def start(self, src: Tensor, src_lengths: Tensor) -> TransformerState:
        """Encode once and fill every layer's static cross-attention cache; B rows, t = 0."""
        memory, mask, _ = self.encode(src, src_lengths)
        cross: list[KVCache] = []
        for layer in self.decoder:
            if isinstance(layer, FusedDecoderBlock):  # --dtype int8 / bf16 (precision.py)
                cross.append(layer.static_kv(memory))
                continue
            attn = layer.cross_attn
            assert isinstance(attn, MultiHeadAttention)  # decoder blocks have cross attention
            cross.append(static_kv(attn, memory))
        lengths = src_lengths.to(src.device)
        sources = torch.arange(lengths.size(0), device=lengths.device)  # (B,)
        return TransformerState(kv_caches(len(self.decoder)), cross, mask, lengths, 0, sources)

    def step(
        self, prev: Tensor, state: TransformerState, need_weights: bool = False
    ) -> tuple[Tensor, TransformerState, Tensor | None]:
        """Feed ``prev`` (N,) at position ``state.length``; the caches grow by one (in place).

        Returns logits (N, V), the state, and with ``need_weights`` the last decoder layer's
        cross attention averaged over heads (N, Ts), else None.
        """
        if prev.dim() != 1 or prev.size(0) != state.src_lengths.size(0):
            raise ValueError(
                f"step: expected prev (N,) with N = {state.src_lengths.size(0)} rows, "
                f"received {tuple(prev.shape)}"
            )
        x = self._embed_target(prev[:, None], state.length)  # (N, 1, E)
        cross_w: Tensor | None = None
        for layer, self_cache, cross_cache in zip(
            self.decoder, state.self_caches, state.cross_caches, strict=True
        ):
            x, _, cross_w = layer(
                x,
                None,
                memory_mask=state.memory_mask,
                need_weights=need_weights,
                self_cache=self_cache,
                cross_cache=cross_cache,
            )
        if self.dec_norm is not None:
            x = self.dec_norm(x)
        logits = self.output(x[:, 0])  # (N, E) -> (N, V)
        state.length += 1
        attn = (
            cross_w.mean(dim=1)[:, 0] if cross_w is not None else None
        )  # (N, H, 1, Ts) -> (N, Ts)
        return logits, state, attn

    def reorder(self, state: TransformerState, index: Tensor) -> TransformerState:
        """Keep rows ``index`` (N',): see :func:`~dhian.models.transformer.state.reorder_state`."""
        return reorder_state(state, index)


def build_transformer(
    cfg: TransformerConfig,
    src_vocab_size: int,
    tgt_vocab_size: int | None = None,
    *,
    pad_id: int = 0,
    bos_id: int = 2,
    eos_id: int = 3,
) -> TransformerSeq2Seq:
    """Build a :class:`TransformerSeq2Seq` from its config and the tokenizers' sizes and ids."""
    if not isinstance(cfg, TransformerConfig):
        raise ConfigError(f"build_transformer needs a TransformerConfig, got {type(cfg).__name__}")
    return TransformerSeq2Seq(
        src_vocab_size,
        src_vocab_size if tgt_vocab_size is None else tgt_vocab_size,
        embed_dim=cfg.embed_dim,
        num_heads=cfg.num_heads,
        ff_dim=cfg.ff_dim,
        enc_layers=cfg.enc_layers,
        dec_layers=cfg.dec_layers,
        dropout=cfg.dropout,
        attn_dropout=cfg.attn_dropout,
        activation_dropout=cfg.activation_dropout,
        activation=cfg.activation,
        norm_first=cfg.norm == "pre",
        positions=cfg.positions,
        max_positions=cfg.max_positions,
        share_embeddings=cfg.share_embeddings,
        tie_embeddings=cfg.tie_embeddings,
        scale_embedding=cfg.scale_embedding,
        output_bias=cfg.output_bias,
        layer_norm_eps=cfg.layer_norm_eps,
        start_from_zero=cfg.start_from_zero,
        pad_id=pad_id,
        bos_id=bos_id,
        eos_id=eos_id,
    )
