"""Decoding scenarios: dhian's KV-cached transformer against HF ``MarianMTModel``, same weights.

``decode-greedy-16x30`` and ``decode-beam4-16x30``: a Marian-shaped model (6+6 post-norm
layers, d_model 512, 8 heads, ff 2048, swish, vocab 58,101 like opus-mt-de-en, shared + tied
embeddings, final logits bias) with random weights is built in dhian, exported with
:func:`dhian.interop.hf_marian.export_marian` and loaded by ``transformers`` from that directory,
so both run the very same weights. 16 source sentences of 30 tokens (no padding) are
translated into exactly 30 output tokens each (29 + a forced EOS) by both: dhian forbids EOS
before the last step (:class:`MinLength`) and its ``max_len`` forces EOS at the end; HF gets
``min_new_tokens=29, max_new_tokens=30`` and its ``forced_eos_token_id``. fp32 and bf16
(``dtype=torch.bfloat16`` for HF) are timed, dhian also in int8
(:func:`dhian.models.precision.apply_precision`: fused oneDNN layers for int8 and, on a CPU
with bf16 instructions, bf16; ``dhian-int8-dynamic`` / ``dhian-bf16-plain`` are the unfused
paths, ``fused=False``: dynamic quantization and a plain bf16 cast), and CTranslate2 int8 on the same weights
(:mod:`bench.ct2`, optional; ``dhian-best`` = the fastest of dhian's three); throughput =
output tokens / s of the best hypotheses (B x 30 per run). As in real Marian checkpoints, PAD
is the last id (V - 1, never generated, never in a source) and the decoder starts from a zero
embedding (Marian starts from PAD; here the BOS embedding row is zero). FLOPs: the algorithm's matmul multiply-adds x 2
(encoder, cross-attention keys/values once per sentence, per-step decoder and output layer);
norms and softmaxes are not counted, and both contenders are credited the same count.
``--quick`` uses a tiny shape (a correctness smoke run for the tests).
"""

from __future__ import annotations

import atexit
import copy
import dataclasses
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bench import ct2
from bench.harness import Contender, Scenario, Setup, register
from dhian.decoding import beam_search, greedy_decode
from dhian.interop.hf_marian import export_marian
from dhian.models.precision import apply_precision
from dhian.models.transformer.config import TransformerConfig
from dhian.models.transformer.model import TransformerSeq2Seq, build_transformer


@dataclasses.dataclass(frozen=True)
class Shape:
    """Model and workload size: ``layers`` per stack, ``d`` model dim, ``heads``, ``ff``,
    ``vocab``; ``batch`` sentences of ``src_len`` tokens decoded into ``out_len`` tokens."""

    layers: int
    d: int
    heads: int
    ff: int
    vocab: int
    batch: int
    src_len: int
    out_len: int


FULL = Shape(layers=6, d=512, heads=8, ff=2048, vocab=58101, batch=16, src_len=30, out_len=30)
QUICK = Shape(layers=2, d=32, heads=4, ff=64, vocab=101, batch=4, src_len=7, out_len=8)


class MinLength:
    """A step-model wrapper that forbids EOS before ``min_len`` tokens (like HF's
    ``min_new_tokens``); everything else is the wrapped model's. ``zero_eos`` scores EOS as HF
    does: at step ``min_len`` only EOS is possible, with log-probability 0 (dhian's own length
    limit keeps the model's log p(EOS) instead), and before it the banned EOS keeps its share
    of the softmax normalizer (HF bans it after ``log_softmax``; its mass is moved to PAD, which
    the search masks after ``log_softmax`` too), instead of renormalizing without it."""

    def __init__(self, model: TransformerSeq2Seq, min_len: int, zero_eos: bool = False) -> None:
        self.model = model
        self.min_len = min_len
        self.zero_eos = zero_eos
        self.pad_id, self.bos_id, self.eos_id = model.pad_id, model.bos_id, model.eos_id

    def start(self, src: Tensor, src_lengths: Tensor) -> tuple[Any, int]:
        return self.model.start(src, src_lengths), 0

    def step(
        self, prev: Tensor, state: tuple[Any, int], need_weights: bool = False
    ) -> tuple[Tensor, tuple[Any, int], Tensor | None]:
        inner, t = state
        logits, inner, attn = self.model.step(prev, inner, need_weights)  # (N, V)
        if t < self.min_len:
            if self.zero_eos:
                pad, eos = logits[:, self.pad_id], logits[:, self.eos_id]
                logits[:, self.pad_id] = torch.logaddexp(pad, eos)
            logits[:, self.eos_id] = -math.inf
        elif self.zero_eos and t == self.min_len:
            logits = torch.full_like(logits, -math.inf)  # (N, V)
            logits[:, self.eos_id] = 0.0
        return logits, (inner, t + 1), attn

    def reorder(self, state: tuple[Any, int], index: Tensor) -> tuple[Any, int]:
        inner, t = state
        return self.model.reorder(inner, index), t


def marian_config(s: Shape) -> TransformerConfig:
    """dhian's config of a Marian-compatible transformer of shape ``s``."""
    return TransformerConfig(
        embed_dim=s.d,
        num_heads=s.heads,
        ff_dim=s.ff,
        enc_layers=s.layers,
        dec_layers=s.layers,
        dropout=0.0,
        activation="silu",
        norm="post",
        positions="sinusoidal_marian",
        max_positions=512,
        share_embeddings=True,
        tie_embeddings=True,
        scale_embedding=True,
        output_bias=True,
    )


def build_pair(s: Shape, seed: int = 0) -> tuple[TransformerSeq2Seq, Any, Path]:
    """A random dhian model of shape ``s`` (BOS embedding row zero, as Marian's decoder start)
    and HF's MarianMTModel loaded from its export (both fp32, eval mode), and the export dir
    (deleted at exit)."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    cfg = marian_config(s)
    torch.manual_seed(seed)
    model = build_transformer(cfg, s.vocab, pad_id=s.vocab - 1).eval()  # Marian: PAD last
    with torch.no_grad():
        assert model.output.bias is not None
        model.output.bias.normal_(0.0, 0.1)  # exercise final_logits_bias too
        model.tgt_embed.weight[model.bos_id].zero_()  # decoding starts from a zero embedding
    folder = Path(tempfile.mkdtemp(prefix="dhian-bench-marian-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    export_marian(model, cfg, None, folder)
    hf = transformers.MarianMTModel.from_pretrained(folder).eval()
    return model, hf, folder


def inputs(s: Shape, seed: int = 1) -> tuple[Tensor, Tensor, Tensor]:
    """``src`` (B, Ts) random non-special ids (not the ids below 7 nor PAD = V - 1),
    ``lengths`` (B,) all Ts, HF ``mask`` (B, Ts)."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(7, s.vocab - 1, (s.batch, s.src_len), generator=g)
    lengths = torch.full((s.batch,), s.src_len, dtype=torch.long)
    return src, lengths, torch.ones_like(src)


def dhian_decode(
    model: TransformerSeq2Seq, s: Shape, beam: int, zero_eos: bool = False
) -> list[list[int]]:
    """Best hypothesis per sentence: exactly ``s.out_len - 1`` tokens (EOS follows).
    ``zero_eos``: score the forced EOS as HF does (see :class:`MinLength`)."""
    src, lengths, _ = inputs(s)
    wrapped: Any = MinLength(model, s.out_len - 1, zero_eos)
    with torch.inference_mode():
        if beam > 1:
            best = [h[0] for h in beam_search(wrapped, src, lengths, beam, max_len=s.out_len - 1)]
        else:
            best = greedy_decode(wrapped, src, lengths, max_len=s.out_len - 1)
    return [h.tokens for h in best]


def dhian_decode_free(model: TransformerSeq2Seq, s: Shape, beam: int) -> list[list[int]]:
    """How CTranslate2 decodes here (:mod:`bench.ct2`): ``s.out_len`` ordinary tokens (EOS
    banned HF-style, see :class:`MinLength`), the best hypothesis's first ``s.out_len - 1``."""
    src, lengths, _ = inputs(s)
    wrapped: Any = MinLength(model, s.out_len, zero_eos=True)
    with torch.inference_mode():
        if beam > 1:
            best = [h[0] for h in beam_search(wrapped, src, lengths, beam, max_len=s.out_len)]
        else:
            best = greedy_decode(wrapped, src, lengths, max_len=s.out_len)
    return [h.tokens[: s.out_len - 1] for h in best]


def hf_decode(hf: Any, s: Shape, beam: int) -> list[list[int]]:
    """HF ``generate``: ``s.out_len - 1`` tokens then the forced EOS; the decoder start and EOS
    are cut off, so the rows compare with :func:`dhian_decode`."""
    src, _, mask = inputs(s)
    with torch.inference_mode():
        out = hf.generate(
            input_ids=src,
            attention_mask=mask,
            num_beams=beam,
            do_sample=False,
            max_new_tokens=s.out_len,
            min_new_tokens=s.out_len - 1,
            length_penalty=1.0,
        )  # (B, 1 + out_len)
    return [row[1:-1] for row in out.tolist()]


def decode_flops_parts(s: Shape, rows: int) -> tuple[float, float]:
    """Matmul FLOPs of encoding ``s.batch`` sentences and decoding ``s.out_len`` steps for
    ``rows`` decoder rows (batch x beam), split into (linear layers, attention products).

    Linear: encoder projections + FFN per source token, cross-attention keys/values once per
    source token, per step and row the decoder projections + FFN and the output layer.
    Attention: q·k and weights·v, Ts x Ts per encoder layer, (t + 1) + Ts keys at step t.
    """
    e, f, v, n_layers = s.d, s.ff, s.vocab, s.layers
    b, ts, t_out = s.batch, s.src_len, s.out_len
    linear = b * ts * n_layers * (4 * e * e + 2 * e * f + 2 * e * e)  # enc + cross k/v
    linear += rows * t_out * (n_layers * (6 * e * e + 2 * e * f) + e * v)
    attn = b * n_layers * 2 * ts * ts * e
    attn += rows * n_layers * sum(2 * (t + 1) * e + 2 * ts * e for t in range(t_out))
    return 2.0 * linear, 2.0 * attn


def decode_flops(s: Shape, rows: int) -> float:
    """Total matmul FLOPs of one decoding run (see :func:`decode_flops_parts`)."""
    return sum(decode_flops_parts(s, rows))


def _units(tokens: list[list[int]], s: Shape, who: str) -> int:
    bad = [len(t) for t in tokens if len(t) != s.out_len - 1]
    if len(tokens) != s.batch or bad:
        raise RuntimeError(f"{who} did not produce {s.out_len} tokens per sentence: {bad[:3]}")
    return s.batch * s.out_len  # tokens + EOS


def _same(a: list[list[int]], b: list[list[int]]) -> str:
    rows = sum(x == y for x, y in zip(a, b, strict=True))
    toks = sum(p == q for x, y in zip(a, b, strict=True) for p, q in zip(x, y, strict=True))
    return f"{rows}/{len(a)} sentences, {toks}/{sum(len(x) for x in a)} tokens"


def ct2_decode(decoder: Any, s: Shape, beam: int) -> list[list[int]]:
    """CTranslate2's first ``s.out_len - 1`` of ``s.out_len`` tokens per sentence."""
    return decoder.decode(inputs(s)[0], s.out_len, beam)


def _ct2_peer(
    folder: Path, model: TransformerSeq2Seq, s: Shape, beam: int, notes: list[str]
) -> tuple[Any, str | None]:
    """The timed CTranslate2 int8 decoder (or None and why), checking the float32 conversion
    against dhian fp32 decoding the same way (:func:`dhian_decode_free`) in ``notes``. Each
    decoder lives in its own process (:mod:`bench.peer_process`); the float32 one is closed
    after the check."""
    why = ct2.unavailable()
    if why is not None:
        return None, why
    try:
        decoders, _ = ct2.setup(folder, model, s.vocab)
    except RuntimeError as exc:
        return None, f"conversion failed: {exc}"
    ours = dhian_decode_free(model, s, beam)
    for tag, dec in decoders.items():
        same = _same(ours, ct2_decode(dec, s, beam))
        notes.append(f"ct2 {tag} vs dhian fp32 (both {s.out_len} free steps): identical for {same}")
    decoders["fp32"].close()
    notes.append(
        "CTranslate2 runs in its own process (bench/peer_process.py): in this one its OpenMP "
        "threads would join torch's libgomp and throttle every torch thread's spin-wait."
    )
    return decoders["int8"], None


def build(quick: bool, beam: int) -> Setup:
    """The contenders (dhian/hf x fp32/bf16, dhian-int8, ct2-int8) of one decoding scenario."""
    s = QUICK if quick else FULL
    model, hf, folder = build_pair(s)
    import transformers

    model16 = apply_precision(copy.deepcopy(model), "bf16")  # fused oneDNN layers (AMX)
    model16p = apply_precision(copy.deepcopy(model), "bf16", fused=False)  # the plain cast
    hf16 = transformers.MarianMTModel.from_pretrained(folder, dtype=torch.bfloat16).eval()
    model8 = apply_precision(copy.deepcopy(model), "int8")  # fused oneDNN int8 layers
    model8d = apply_precision(copy.deepcopy(model), "int8", fused=False)  # dynamic quantization
    flops = decode_flops(s, s.batch * beam)
    mode = "greedy" if beam == 1 else f"beam {beam}"
    notes = []
    for tag, ours, theirs in (("fp32", model, hf), ("bf16", model16, hf16)):
        same = _same(dhian_decode(ours, s, beam), hf_decode(theirs, s, beam))
        notes.append(f"{tag} {mode}: dhian and HF outputs identical for {same}")
    reference = dhian_decode(model, s, beam)
    for tag, low in (
        ("bf16", model16),
        ("bf16-plain", model16p),
        ("int8", model8),
        ("int8-dynamic", model8d),
    ):
        same = _same(reference, dhian_decode(low, s, beam))
        notes.append(f"dhian {tag} vs dhian fp32: identical for {same}")
    decoder, why = _ct2_peer(folder, model, s, beam, notes)
    notes.append(
        "All produce exactly the same number of tokens (EOS blocked until the last step, "
        "then forced; CTranslate2 runs the same number of steps), so the work is the same; "
        "FLOPs are the same analytic count for all; int8 contenders are compared with the "
        "fp32 matmul peak."
    )
    if beam > 1:
        notes.append(
            "Beam outputs can differ in the final choice among the beams: HF's forced EOS adds "
            "0 to a hypothesis' score, dhian adds the model's log p(EOS). With that one "
            "difference removed (MinLength(zero_eos=True)) the outputs are identical (tested "
            "in tests/bench on the quick shape)."
        )

    def contender(name: str, m: Any, fn: Any, dtype: str) -> Contender:
        return Contender(name, lambda: _units(fn(m, s, beam), s, name), flops, dtype)

    contenders = [
        contender("dhian-fp32", model, dhian_decode, "fp32"),
        contender("hf-fp32", hf, hf_decode, "fp32"),
        contender("dhian-bf16", model16, dhian_decode, "bf16"),
        contender("hf-bf16", hf16, hf_decode, "bf16"),
        contender("dhian-int8", model8, dhian_decode, "fp32"),
        contender("dhian-bf16-plain", model16p, dhian_decode, "bf16"),
        contender("dhian-int8-dynamic", model8d, dhian_decode, "fp32"),
    ]
    if decoder is not None:
        contenders.append(contender("ct2-int8", decoder, ct2_decode, "fp32"))
    return Setup(
        contenders,
        [
            ("dhian-fp32", "hf-fp32"),
            ("dhian-bf16", "hf-bf16"),
            ("dhian-int8", "ct2-int8"),
            ("dhian-best", "ct2-int8"),
            ("dhian-int8", "dhian-int8-dynamic"),
            ("dhian-bf16", "dhian-bf16-plain"),
        ],
        f"{mode} decoding, {s.batch} sentences x {s.src_len} source tokens -> exactly "
        f"{s.out_len} output tokens each; Marian-shaped transformer {s.layers}+{s.layers} "
        f"layers, d_model {s.d}, {s.heads} heads, ff {s.ff}, vocab {s.vocab:,}, random weights "
        f"shared by dhian, HF MarianMTModel (export_marian) and CTranslate2 "
        f"(ct2-transformers-converter); {flops / 1e9:.1f} GFLOP per run.",
        notes,
        best={"dhian-best": ["dhian-fp32", "dhian-bf16", "dhian-int8"]},
        unavailable={} if why is None else {"ct2-int8": why},
    )


register(Scenario("decode-greedy-16x30", "tok/s", lambda quick: build(quick, 1)))
register(Scenario("decode-beam4-16x30", "tok/s", lambda quick: build(quick, 4)))
