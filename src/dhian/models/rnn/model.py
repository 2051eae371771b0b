"""RNN encoder-decoder translation models: RNNencdec (Cho et al., 2014) and RNNsearch
(Bahdanau et al., 2015; Luong et al., 2015), built from :class:`RNNSeq2SeqConfig`.

Owns :class:`RNNSeq2Seq`, its decoder state :class:`RNNState` and :func:`build_rnn_seq2seq`.
The model implements the seq2seq interface of docs/design.md: ``forward`` (teacher forcing) and
``start`` / ``step`` / ``reorder`` (decoding, see :mod:`dhian.decoding`); both paths run the same
equations, so they give the same logits.

Encoder: embedding → (bi)GRU/LSTM over packed sequences (padding never reaches the states).
The summary of a sentence is the top layer's final states ``[h→_Ts; h←_1]`` (B, C).
Decoder schemes (``scheme``):

- ``encdec`` (``type: rnnencdec``): fixed context ``c = tanh(W_c summary)`` (B, H); the initial
  state is ``tanh(W_s c)`` and ``c`` is fed at every step (RNN input and output layer).
- ``bahdanau`` (``attention: additive``): query = previous top state s_{t-1}; the context c_t
  enters the RNN input together with y_{t-1}; initial state ``tanh(W_s summary)``.
- ``luong`` (``attention: dot | general``): query = current top state s_t; the attentional
  vector is ``tanh(W_o [s_t; c_t])``. For ``dot`` with ``C != H`` the encoder states are
  projected to H once per source (keys only; values stay the encoder states).

Output vector: ``o_t = tanh(W_o [s_t; ctx_t; emb(y_{t-1})])`` (deep output; ``luong`` drops the
embedding), size E when embeddings are tied to the output projection, else H.
``input_feeding`` feeds o_{t-1} into the RNN input (Luong). Attention keys are projected once
per source in ``start`` (``precompute_keys``). Attention weights are returned, never stored.

Notation: B batch, N decoder rows, Ts/Tt source/target lengths, E embedding size, H hidden size,
C = H × directions encoder state size, O output vector size, L decoder layers, V vocab.
Imports: torch, :mod:`dhian.nn`, the family config, :mod:`dhian.models.outputs`,
:mod:`dhian.errors`.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from dhian.errors import ConfigError
from dhian.models.outputs import Seq2SeqOutput
from dhian.models.rnn.config import RNNSeq2SeqConfig
from dhian.nn.attention import AdditiveAttention, DotAttention, GeneralAttention

__all__ = ["RNNSeq2Seq", "RNNState", "build_rnn_seq2seq"]

_ATTENTION = {"additive": "bahdanau", "dot": "luong", "general": "luong"}


@dataclasses.dataclass(frozen=True)
class RNNState:
    """Decoder state of N rows (one per sentence or per beam).

    ``hidden`` (L, N, H) and ``cell`` (L, N, H) | None (LSTM); ``memory`` (N, Ts, C) encoder
    states (attention values) and ``proj_keys`` (N, Ts, K) precomputed attention keys, both None
    for ``encdec``; ``mask`` (N, Ts) bool, True = real source token; ``context`` (N, H) the fixed
    context of ``encdec`` else None; ``feed`` (N, O) previous output vector (input feeding) or None.
    """

    hidden: Tensor
    cell: Tensor | None
    memory: Tensor | None
    proj_keys: Tensor | None
    mask: Tensor
    context: Tensor | None
    feed: Tensor | None

    def index_select(self, index: Tensor) -> RNNState:
        """Rows ``index`` (N',) long of every tensor."""

        def pick(x: Tensor | None, dim: int = 0) -> Tensor | None:
            return None if x is None else x.index_select(dim, index)

        hidden = self.hidden.index_select(1, index)  # (L, N', H)
        return RNNState(
            hidden=hidden,
            cell=pick(self.cell, 1),
            memory=pick(self.memory),
            proj_keys=pick(self.proj_keys),
            mask=self.mask.index_select(0, index),
            context=pick(self.context),
            feed=pick(self.feed),
        )


class RNNSeq2Seq(nn.Module):
    """RNNencdec / RNNsearch translation model (see the module docstring for the equations).

    ``forward(src (B, Ts), src_lengths (B,), tgt_in (B, Tt)) -> Seq2SeqOutput(logits (B, Tt, V),
    attention (B, Tt, Ts) | None)``; ``start``/``step``/``reorder`` for decoding. ``pad_id``,
    ``bos_id``, ``eos_id`` are the target special ids used by the decoders.
    """

    def __init__(
        self,
        cfg: RNNSeq2SeqConfig,
        src_vocab_size: int,
        tgt_vocab_size: int,
        *,
        pad_id: int = 0,
        bos_id: int = 2,
        eos_id: int = 3,
    ) -> None:
        super().__init__()
        _validate(cfg)
        self.pad_id, self.bos_id, self.eos_id = int(pad_id), int(bos_id), int(eos_id)
        self.src_vocab_size, self.tgt_vocab_size = int(src_vocab_size), int(tgt_vocab_size)
        self.scheme = "encdec" if cfg.type == "rnnencdec" else _ATTENTION[cfg.attention]
        self.is_lstm = cfg.cell == "lstm"
        self.input_feeding = cfg.input_feeding
        self.hidden_dim, self.dec_layers = cfg.hidden_dim, cfg.dec_layers
        emb, hid = cfg.embed_dim, cfg.hidden_dim
        mem = hid * (2 if cfg.bidirectional else 1)  # C
        rnn = nn.LSTM if self.is_lstm else nn.GRU

        self.src_embed = nn.Embedding(src_vocab_size, emb, padding_idx=pad_id)
        self.tgt_embed = nn.Embedding(tgt_vocab_size, emb, padding_idx=pad_id)
        self.dropout = nn.Dropout(cfg.dropout)
        self.encoder = rnn(
            emb,
            hid,
            num_layers=cfg.enc_layers,
            batch_first=True,
            bidirectional=cfg.bidirectional,
            dropout=cfg.dropout if cfg.enc_layers > 1 else 0.0,
        )
        self.context_proj: nn.Linear | None = None
        self.key_proj: nn.Linear | None = None
        self.attention: AdditiveAttention | DotAttention | GeneralAttention | None = None
        if self.scheme == "encdec":
            self.context_proj = nn.Linear(mem, hid)
            init_in, ctx = hid, hid
        else:
            init_in, ctx = mem, mem
            if cfg.attention == "additive":
                self.attention = AdditiveAttention(hid, mem, cfg.attention_dim or hid)
            elif cfg.attention == "general":
                self.attention = GeneralAttention(hid, mem)
            else:
                self.attention = DotAttention()
                if mem != hid:
                    self.key_proj = nn.Linear(mem, hid, bias=False)
        self.init_hidden = nn.Linear(init_in, cfg.dec_layers * hid)
        self.init_cell = nn.Linear(init_in, cfg.dec_layers * hid) if self.is_lstm else None
        self.out_dim = emb if cfg.tie_embeddings else hid  # O
        luong = self.scheme == "luong"
        rnn_in = emb + (0 if luong else ctx) + (self.out_dim if cfg.input_feeding else 0)
        self.decoder = rnn(
            rnn_in,
            hid,
            num_layers=cfg.dec_layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.dec_layers > 1 else 0.0,
        )
        self.out_proj = nn.Linear(hid + ctx + (0 if luong else emb), self.out_dim)
        self.generator = nn.Linear(self.out_dim, tgt_vocab_size)
        if cfg.tie_embeddings:
            self.generator.weight = self.tgt_embed.weight

    # ---------------------------------------------------------------- encoder
    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Run the encoder: ``memory`` (B, Ts, C) (zeros at padding), ``summary`` (B, C) =
        top-layer ``[h→_last; h←_first]`` and the same for LSTM cells (B, C) or None."""
        lengths = src_lengths.detach().to("cpu", torch.long)  # (B,)
        if src.dim() != 2 or lengths.shape != (src.size(0),):
            raise ValueError(
                f"expected src (B, Ts) and src_lengths (B,), got {tuple(src.shape)} and "
                f"{tuple(src_lengths.shape)}"
            )
        if lengths.numel() and (int(lengths.min()) < 1 or int(lengths.max()) > src.size(1)):
            raise ValueError(
                f"src_lengths must lie in [1, Ts={src.size(1)}], got {lengths.tolist()}"
            )
        embedded = self.dropout(self.src_embed(src))  # (B, Ts, E)
        packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        out, final = self.encoder(packed)
        memory, _ = pad_packed_sequence(out, batch_first=True, total_length=src.size(1))
        h_n, c_n = final if self.is_lstm else (final, None)  # (layers*dirs, B, H)
        return self.dropout(memory), self._top(h_n), None if c_n is None else self._top(c_n)

    def _top(self, states: Tensor) -> Tensor:
        """(layers × dirs, B, H) final states → top layer's directions concatenated (B, C)."""
        if self.encoder.bidirectional:
            return torch.cat([states[-2], states[-1]], dim=-1)  # (B, 2H)
        return states[-1]  # (B, H)

    def _init_state(
        self, source: Tensor, cell_source: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """Initial decoder states (L, B, H) from (B, ·) summaries."""
        b = source.size(0)

        def layers(linear: nn.Linear, x: Tensor) -> Tensor:
            y = torch.tanh(linear(x))  # (B, L*H)
            return y.view(b, self.dec_layers, self.hidden_dim).transpose(0, 1).contiguous()

        hidden = layers(self.init_hidden, source)  # (L, B, H)
        cell = None
        if self.init_cell is not None:
            cell = layers(self.init_cell, source if cell_source is None else cell_source)
        return hidden, cell

    def start(self, src: Tensor, src_lengths: Tensor) -> RNNState:
        """Encode ``src`` (B, Ts) once; return the initial decoder :class:`RNNState` of B rows."""
        memory, summary, summary_c = self.encode(src, src_lengths)
        ts = src.size(1)
        lengths = src_lengths.to(src.device).long()  # (B,)
        mask = torch.arange(ts, device=src.device).unsqueeze(0) < lengths.unsqueeze(1)  # (B, Ts)
        feed = memory.new_zeros(src.size(0), self.out_dim) if self.input_feeding else None
        if self.scheme == "encdec":
            assert self.context_proj is not None
            context = torch.tanh(self.context_proj(summary))  # (B, H)
            hidden, cell = self._init_state(context, None)
            return RNNState(hidden, cell, None, None, mask, context, feed)
        assert self.attention is not None
        keys = memory if self.key_proj is None else self.key_proj(memory)  # (B, Ts, K)
        proj_keys = self.attention.precompute_keys(keys)  # (B, Ts, K)
        hidden, cell = self._init_state(summary, summary_c)
        return RNNState(hidden, cell, memory, proj_keys, mask, None, feed)

    # ---------------------------------------------------------------- decoder
    def _attend(self, query: Tensor, state: RNNState) -> tuple[Tensor, Tensor]:
        """query (N, H) → context (N, C), weights (N, Ts)."""
        assert self.attention is not None and state.memory is not None
        assert state.proj_keys is not None
        keys = state.proj_keys  # only its shape is read when proj_keys is given
        context, weights = self.attention(
            query, keys, state.memory, state.mask, proj_keys=state.proj_keys
        )
        return context, weights

    def _output(self, s: Tensor, ctx: Tensor, emb: Tensor) -> Tensor:
        """Output vector o (…, O) from decoder state s (…, H), context (…, C), embedding (…, E)."""
        feats = [s, ctx] if self.scheme == "luong" else [s, ctx, emb]
        return torch.tanh(self.out_proj(torch.cat(feats, dim=-1)))

    def _step(self, emb: Tensor, state: RNNState) -> tuple[Tensor, RNNState, Tensor | None]:
        """One decoder step from embedded inputs (N, E): output vector (N, O), state, attn."""
        parts, weights = [emb], None
        if self.scheme == "encdec":
            assert state.context is not None
            ctx = state.context  # (N, H)
            parts.append(ctx)
        elif self.scheme == "bahdanau":
            ctx, weights = self._attend(state.hidden[-1], state)  # query s_{t-1}: (N, H)
            parts.append(ctx)
        if state.feed is not None:
            parts.append(state.feed)
        x = torch.cat(parts, dim=-1).unsqueeze(1)  # (N, 1, In)
        if self.is_lstm:
            out, (hidden, cell) = self.decoder(x, (state.hidden, state.cell))
        else:
            out, hidden = self.decoder(x, state.hidden)
            cell = None
        s = out[:, 0]  # (N, 1, H) -> (N, H)
        if self.scheme == "luong":
            ctx, weights = self._attend(s, state)  # query s_t
        o = self._output(s, ctx, emb)  # (N, O)
        new = dataclasses.replace(
            state, hidden=hidden, cell=cell, feed=o if self.input_feeding else None
        )
        return o, new, weights

    def step(
        self, prev: Tensor, state: RNNState, need_weights: bool = False
    ) -> tuple[Tensor, RNNState, Tensor | None]:
        """Feed ``prev`` (N,) long; return logits (N, V), the next state and attention (N, Ts)
        when ``need_weights`` (None for ``rnnencdec``)."""
        emb = self.dropout(self.tgt_embed(prev))  # (N, E)
        o, state, weights = self._step(emb, state)
        logits = self.generator(self.dropout(o))  # (N, V)
        return logits, state, weights if need_weights else None

    def reorder(self, state: RNNState, index: Tensor) -> RNNState:
        """Select rows ``index`` (N',) long of ``state`` (beam search, finished sentences)."""
        return state.index_select(index)

    def forward(
        self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, need_weights: bool = False
    ) -> Seq2SeqOutput:
        """Teacher forcing: src (B, Ts), src_lengths (B,), tgt_in (B, Tt) = BOS y1..yn →
        logits (B, Tt, V) and, when ``need_weights``, attention (B, Tt, Ts)."""
        state = self.start(src, src_lengths)
        emb = self.dropout(self.tgt_embed(tgt_in))  # (B, Tt, E)
        tt = tgt_in.size(1)
        weights: Tensor | None = None
        if self.scheme != "bahdanau" and not self.input_feeding:
            # The RNN inputs are known in advance: one (cuDNN) call over the whole target.
            x = emb
            if self.scheme == "encdec":
                assert state.context is not None
                ctx = state.context.unsqueeze(1).expand(-1, tt, -1)  # (B, H) -> (B, Tt, H)
                x = torch.cat([emb, ctx], dim=-1)  # (B, Tt, E + H)
            hx = (state.hidden, state.cell) if self.is_lstm else state.hidden
            s, _ = self.decoder(x, hx)  # (B, Tt, H)
            if self.scheme == "luong":
                steps = [self._attend(s[:, t], state) for t in range(tt)]
                ctx = torch.stack([c for c, _ in steps], dim=1)  # (B, Tt, C)
                weights = torch.stack([w for _, w in steps], dim=1)  # (B, Tt, Ts)
            o = self._output(s, ctx, emb)  # (B, Tt, O)
        else:
            outs, attn = [], []
            for t in range(tt):
                o_t, state, w_t = self._step(emb[:, t], state)  # (B, O), ..., (B, Ts)
                outs.append(o_t)
                if w_t is not None:
                    attn.append(w_t)
            o = torch.stack(outs, dim=1)  # (B, Tt, O)
            weights = torch.stack(attn, dim=1) if attn else None  # (B, Tt, Ts)
        logits = self.generator(self.dropout(o))  # (B, Tt, V)
        return Seq2SeqOutput(logits, weights if need_weights else None)


def _validate(cfg: RNNSeq2SeqConfig) -> None:
    if cfg.type not in ("rnnencdec", "rnnsearch"):
        raise ConfigError(f"model.type must be rnnencdec or rnnsearch, got {cfg.type!r}")
    if cfg.cell not in ("gru", "lstm"):
        raise ConfigError(f"model.cell must be gru or lstm, got {cfg.cell!r}")
    if cfg.type == "rnnsearch" and cfg.attention not in _ATTENTION:
        raise ConfigError(
            f"model.attention must be one of {', '.join(_ATTENTION)}, got {cfg.attention!r}"
        )
    for name in ("embed_dim", "hidden_dim", "enc_layers", "dec_layers"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"model.{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.attention_dim < 0:
        raise ConfigError(f"model.attention_dim must be >= 0, got {cfg.attention_dim}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"model.dropout must be in [0, 1), got {cfg.dropout}")


def build_rnn_seq2seq(
    cfg: RNNSeq2SeqConfig,
    src_vocab_size: int,
    tgt_vocab_size: int | None = None,
    *,
    pad_id: int = 0,
    bos_id: int = 2,
    eos_id: int = 3,
) -> RNNSeq2Seq:
    """Build an :class:`RNNSeq2Seq` (``tgt_vocab_size`` defaults to ``src_vocab_size``)."""
    return RNNSeq2Seq(
        cfg,
        src_vocab_size,
        src_vocab_size if tgt_vocab_size is None else tgt_vocab_size,
        pad_id=pad_id,
        bos_id=bos_id,
        eos_id=eos_id,
    )
