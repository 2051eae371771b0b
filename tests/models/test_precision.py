"""Inference precision (:mod:`dhian.models.precision`): every family in bf16 and int8 stays
close to its own fp32 outputs, with stated tolerances, on tiny random models (E = 32, V = 50).

Tolerances (measured on 3 seeds per family before fixing them: bf16 ≤ 0.014 relative error,
int8 ≤ 0.041; greedy-token agreement ≥ 0.95 everywhere):

- logits, relative error ``‖Δ‖ / ‖fp32‖`` (Frobenius): bf16 ≤ 0.02, int8 ≤ 0.06;
  max abs diff / max |fp32 logit|: bf16 ≤ 0.03, int8 ≤ 0.06;
- greedy-token agreement (the next token each model picks after the *same* fp32 greedy prefix,
  i.e. teacher-forced on fp32's greedy output; for encoders/LMs the argmax per position):
  bf16 ≥ 0.9, int8 ≥ 0.85; and end-to-end greedy / beam-4 decoding gives identical sentences
  for at least half of the batch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from dhian.decoding import beam_search, greedy_decode
from dhian.decoding.sampling import generate
from dhian.errors import ConfigError
from dhian.models.bert.config import BertConfig
from dhian.models.families import build_model
from dhian.models.gpt.config import GPTConfig
from dhian.models.keras_classifier.config import KerasClassifierConfig
from dhian.models.precision import (
    Int8MultiHeadAttention,
    apply_precision,
    check_precision,
    model_precision,
)
from dhian.models.rnn.config import RNNSeq2SeqConfig
from dhian.models.transformer.config import TransformerConfig
from dhian.nn import DecoderBlock, EncoderBlock, MultiHeadAttention
from dhian.nn.fused_decoder import FusedDecoderBlock
from dhian.nn.fused_encoder import FusedEncoderBlock
from dhian.nn.fused_linear import FusedLinear, fused_linear_available
from helpers.threads import one_thread  # noqa: F401

V = 50
IDS = {"pad_id": 0, "bos_id": 1, "eos_id": 2}
REL = {"bf16": 0.02, "int8": 0.06}
MAX = {"bf16": 0.03, "int8": 0.06}
AGREE = {"bf16": 0.9, "int8": 0.85}

SEQ2SEQ = ("rnnsearch-gru", "rnnencdec-lstm", "transformer")
FAMILIES = (*SEQ2SEQ, "bert-cls", "bert-mlm", "gpt", "keras")


def make(family: str, seed: int = 0) -> Any:
    """A tiny random model of ``family`` in eval mode (dropout 0)."""
    torch.manual_seed(seed)
    small: dict[str, Any] = {"dropout": 0.0}
    bert: dict[str, Any] = {"vocab_size": V, "embed_dim": 32, "layers": 2, "heads": 4, "ff_dim": 64}
    bert |= {"max_positions": 32, "attention_dropout": 0.0, **small}
    cfgs = {
        "rnnsearch-gru": RNNSeq2SeqConfig(
            type="rnnsearch", embed_dim=32, hidden_dim=32, attention_dim=16, **small
        ),
        "rnnencdec-lstm": RNNSeq2SeqConfig(
            type="rnnencdec", cell="lstm", embed_dim=32, hidden_dim=32, **small
        ),
        "transformer": TransformerConfig(
            embed_dim=32,
            num_heads=4,
            ff_dim=64,
            enc_layers=2,
            dec_layers=2,
            max_positions=64,
            **small,
        ),
        "bert-cls": BertConfig(task="classification", num_labels=3, **bert),
        "bert-mlm": BertConfig(task="mlm", **bert),
        "gpt": GPTConfig(vocab_size=V, n_layer=2, n_head=4, n_embd=32, block_size=32, **small),
        "keras": KerasClassifierConfig(
            vocab_size=V,
            max_len=32,
            embed_dim=32,
            heads=2,
            ff_dim=32,
            hidden_dim=16,
            num_labels=3,
            **small,
        ),
    }
    extra = IDS if family in SEQ2SEQ else {}
    return build_model(cfgs[family], V, V, **extra).eval()


def batch(seed: int = 1, b: int = 8, t: int = 12) -> tuple[Tensor, Tensor]:
    """ids (B, T) of non-special tokens and lengths (B,) (the first row full length)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, V, (b, t), generator=g)  # (B, T)
    lengths = torch.randint(4, t + 1, (b,), generator=g)  # (B,)
    lengths[0] = t
    return ids, lengths


def fp32_greedy(model: Any, src: Tensor, lengths: Tensor) -> Tensor:
    """tgt_in (B, 1 + 8) = BOS + the fp32 model's greedy tokens (8 steps, EOS blocked)."""
    with torch.no_grad():
        state = model.start(src, lengths)
        prev = torch.full((src.size(0),), 1, dtype=torch.long)  # (B,) BOS
        out = [prev]
        for _ in range(8):
            logits, state, _ = model.step(prev, state)  # (B, V)
            logits[:, 2] = -torch.inf
            prev = logits.argmax(-1)  # (B,)
            out.append(prev)
    return torch.stack(out, dim=1)  # (B, 9)


def logits_of(family: str, model: Any, ref: Any) -> Tensor:
    """Float32 logits of ``model`` on a fixed batch; seq2seq: teacher-forced on ``ref``'s
    greedy output (B, 9, V); classifiers (B, C); BERT MLM / GPT (B, T, V)."""
    ids, lengths = batch()
    with torch.no_grad():
        if family in SEQ2SEQ:
            tgt_in = fp32_greedy(ref, ids, lengths)
            out = model(ids, lengths, tgt_in)
            logits = out.logits if hasattr(out, "logits") else out
        elif family == "gpt":
            logits = model(ids).logits
        else:
            logits = model(ids, lengths).logits
    return logits.float()


@pytest.mark.parametrize("dtype", ["bf16", "int8"])
@pytest.mark.parametrize("family", FAMILIES)
def test_logits_and_greedy_tokens_close_to_fp32(family: str, dtype: str) -> None:
    model = make(family)
    ref = logits_of(family, model, model)
    low = apply_precision(copy.deepcopy(model), dtype)
    assert model_precision(low) == dtype and model_precision(model) == "fp32"
    got = logits_of(family, low, model)
    diff = got - ref
    rel = float(diff.norm() / ref.norm())
    worst = float(diff.abs().max() / ref.abs().max())
    agree = float((got.argmax(-1) == ref.argmax(-1)).float().mean())
    assert rel <= REL[dtype], f"{family} {dtype}: relative error {rel:.4f}"
    assert worst <= MAX[dtype], f"{family} {dtype}: max abs diff / max |logit| {worst:.4f}"
    assert agree >= AGREE[dtype], f"{family} {dtype}: greedy-token agreement {agree:.3f}"
    assert rel > 0  # really a different computation (not the fp32 model again)


@pytest.mark.parametrize("dtype", ["bf16", "int8"])
@pytest.mark.parametrize("family", SEQ2SEQ)
def test_greedy_and_beam_decoding_agree_with_fp32(family: str, dtype: str) -> None:
    model = make(family, seed=2)
    low: Any = apply_precision(copy.deepcopy(model), dtype)
    src, lengths = batch(seed=3, b=8)
    kw: dict[str, Any] = {"max_len": 6}
    ref_g = [h.tokens for h in greedy_decode(model, src, lengths, **kw)]
    got_g = [h.tokens for h in greedy_decode(low, src, lengths, **kw)]
    ref_b = beam_search(model, src, lengths, 4, **kw)
    got_b = beam_search(low, src, lengths, 4, **kw)
    same_g = sum(a == b for a, b in zip(ref_g, got_g, strict=True))
    same_b = sum(a[0].tokens == b[0].tokens for a, b in zip(ref_b, got_b, strict=True))
    assert same_g >= 4 and same_b >= 4, (same_g, same_b)
    for hyps in got_b:  # beam scores are float32 sums of float32 log-softmaxes
        assert all(isinstance(h.score, float) and -1e4 < h.score < 0 for h in hyps)
    for a, b in zip(ref_b, got_b, strict=True):
        if a[0].tokens == b[0].tokens:
            assert b[0].log_prob == pytest.approx(a[0].log_prob, abs=0.05 * len(b[0].tokens) + 0.1)


@pytest.mark.parametrize("dtype", ["bf16", "int8"])
def test_gpt_cached_generation_matches_fp32(dtype: str) -> None:
    model = make("gpt", seed=4)
    low = apply_precision(copy.deepcopy(model), dtype)
    prompts = [[5, 9, 13], [7], [20, 21, 22, 23]]
    ref = generate(model, prompts, max_new_tokens=8, temperature=0.0)
    for cache in (True, False):
        got = generate(low, prompts, max_new_tokens=8, temperature=0.0, use_cache=cache)
        same = sum(a.tokens == b.tokens for a, b in zip(ref, got, strict=True))
        assert same >= 2, (dtype, cache, [r.tokens for r in ref], [g.tokens for g in got])


def test_bf16_casts_every_parameter_and_buffer() -> None:
    for family in FAMILIES:
        model = apply_precision(make(family), "bf16")
        floats = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
        assert floats and all(t.dtype == torch.bfloat16 for t in floats), family
        if any(isinstance(m, FusedEncoderBlock) for m in model.modules()):  # BERT, bf16 CPU
            with pytest.raises(ConfigError, match="fused for bf16"):
                apply_precision(model, "fp32")
        else:
            assert model_precision(apply_precision(model, "fp32")) == "fp32"  # and back


def test_int8_quantizes_every_linear_recurrent_and_attention_layer() -> None:
    for family in FAMILIES:
        model = make(family)
        n_lin = sum(isinstance(m, nn.Linear) for m in model.modules())
        n_rnn = sum(isinstance(m, nn.GRU | nn.LSTM) for m in model.modules())
        n_mha = sum(isinstance(m, MultiHeadAttention) for m in model.modules())
        # BERT's and the transformer's encoder layers become fused int8 blocks (their 3 linears
        # and attention inside); the transformer's decoder layers (5 linears: out_proj x 2,
        # linear1, linear2, output is counted below; 2 attentions) and its output layer too
        fuses = family.startswith(("bert", "transformer")) and fused_linear_available("int8")
        n_fused = sum(isinstance(m, EncoderBlock) for m in model.modules()) if fuses else 0
        n_dec = sum(isinstance(m, DecoderBlock) for m in model.modules()) if fuses else 0
        out = int(fuses and family == "transformer")  # the output layer: one FusedLinear
        q = apply_precision(model, "int8")
        kinds = [type(m).__name__ for m in q.modules()]
        assert not any(isinstance(m, nn.Linear | nn.GRU | nn.LSTM) for m in q.modules()), family
        # every other float linear became one int8 linear; each attention adds 5 in-projection
        # slices
        n_int8_mha = n_mha - n_fused - 2 * n_dec
        assert kinds.count("Linear") == n_lin - 3 * n_fused - 4 * n_dec - out + 5 * n_int8_mha
        assert sum(isinstance(m, FusedDecoderBlock) for m in q.modules()) == n_dec, family
        assert sum(k in ("GRU", "LSTM") for k in kinds) == n_rnn, family
        assert sum(isinstance(m, FusedEncoderBlock) for m in q.modules()) == n_fused, family
        assert sum(isinstance(m, Int8MultiHeadAttention) for m in q.modules()) == n_int8_mha
        assert apply_precision(q, "int8") is q and not q.training


@torch.no_grad()
def test_int8_attention_slices_equal_the_fused_projection() -> None:
    """Per-row weight scales: the q / k/v slices compute exactly the fused rows, so self and
    cross attention use one consistent quantization."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(32, 4).eval()
    with torch.no_grad():
        assert mha.in_proj_bias is not None
        mha.in_proj_bias.normal_()
    q = Int8MultiHeadAttention.from_float(mha)
    x = torch.randn(2, 5, 32)  # (B, T, E)
    full = q._proj(x, slice(None))  # (B, T, 3E)
    assert torch.equal(q._proj(x, slice(0, 32)), full[..., :32])
    assert torch.equal(q._proj(x, slice(32, 96)), full[..., 32:])
    assert torch.equal(q._proj(x, slice(64, 96)), full[..., 64:])
    ref = nn.functional.linear(x, mha.in_proj_weight, mha.in_proj_bias)  # (B, T, 3E)
    assert float((full - ref).norm() / ref.norm()) < 0.02
    mem = torch.randn(2, 7, 32)  # (B, Ts, E)
    for call in (
        lambda m: m(x, need_weights=True),
        lambda m: m(x, mem, need_weights=True),
        lambda m: m(x, mem, mem * 0.5, need_weights=True),
        lambda m: m(x, causal=True, need_weights=True),
    ):
        (o_ref, w_ref), (o_q, w_q) = call(mha), call(q)
        assert float((o_q - o_ref).norm() / o_ref.norm()) < 0.05
        assert (w_q - w_ref).abs().max() < 0.02


def test_int8_attention_with_kv_cache_matches_full_pass() -> None:
    from dhian.nn import KVCache

    torch.manual_seed(1)
    q = Int8MultiHeadAttention.from_float(MultiHeadAttention(32, 4).eval())
    x = torch.randn(2, 6, 32)  # (B, T, E)
    with torch.no_grad():
        full, _ = q(x, causal=True)
        cache = KVCache.empty()
        steps = [q(x[:, t : t + 1], cache=cache, causal=True)[0] for t in range(6)]
    # activations are quantized per call (per-tensor range), so one row at a time is not
    # bit-identical to the whole sequence, only close
    step_out = torch.cat(steps, dim=1)  # (B, T, E)
    assert cache.length == 6
    assert float((step_out - full).norm() / full.norm()) < 0.03


def test_unknown_dtype_and_impossible_conversions_are_one_line_errors() -> None:
    model = make("gpt")
    for bad in ("fp16", "float32", "int5", ""):
        with pytest.raises(ConfigError, match="choose one of fp32, bf16, int8, int4") as err:
            apply_precision(model, bad)
        assert "\n" not in str(err.value) and repr(bad) in str(err.value)
    with pytest.raises(ConfigError, match="int4 is for LLaMA-family models") as err:
        apply_precision(model, "int4")  # weight-only int4 is the LLaMA family's
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="did you mean 'bf16'"):
        check_precision("bf15")
    with pytest.raises(ConfigError, match="CPU only"):
        apply_precision(make("gpt").to("meta"), "int8")
    q = apply_precision(make("gpt"), "int8")
    for other in ("fp32", "bf16"):
        with pytest.raises(ConfigError, match="already quantized to int8"):
            apply_precision(q, other)


def test_bf16_then_int8_quantizes_from_float32() -> None:
    model = make("transformer")
    ref = logits_of("transformer", model, model)
    plain = apply_precision(copy.deepcopy(model), "bf16", fused=False)  # fused: a new load
    both = apply_precision(plain, "int8")
    got = logits_of("transformer", both, model)
    assert model_precision(both) == "int8"
    assert float((got - ref).norm() / ref.norm()) <= REL["int8"]


def test_precision_changes_the_same_object() -> None:
    fns: list[Callable[[nn.Module], nn.Module]] = [
        lambda m: apply_precision(m, "fp32"),
        lambda m: apply_precision(m, "bf16"),
        lambda m: apply_precision(m, "int8"),
    ]
    for fn in fns:
        model = make("keras")
        assert fn(model) is model


@pytest.mark.skipif(not fused_linear_available("int8"), reason="no oneDNN operators")
@torch.no_grad()
def test_fused_transformer_steps_agree_with_its_teacher_forced_logits() -> None:
    """The fused int8 decoder (cross keys/values from ``start``, self-attention caches grown
    step by step) computes what its teacher-forced pass computes, up to the per-call
    activation scales; the output layer is fused too and gives float32 logits."""
    model = apply_precision(make("transformer", seed=5), "int8")
    assert isinstance(model.output, FusedLinear) and model.output.mode == "int8"
    assert all(isinstance(layer, FusedDecoderBlock) for layer in model.decoder)
    src, lengths = batch(seed=6, b=4, t=9)
    tgt = torch.randint(4, V, (4, 6), generator=torch.Generator().manual_seed(7))
    tgt[:, 0] = model.bos_id
    full = model(src, lengths, tgt).logits  # (B, Tt, V)
    state = model.start(src, lengths)
    steps = []
    for t in range(tgt.size(1)):
        logits, state, _ = model.step(tgt[:, t], state)  # (B, V)
        steps.append(logits)
    got = torch.stack(steps, dim=1)  # (B, Tt, V)
    assert got.dtype == torch.float32
    assert float((got - full).norm() / full.norm()) < 0.03
