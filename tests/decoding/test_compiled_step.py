"""The compiled LLaMA decoding step (:mod:`dhian.decoding.compiled_step`) on a tiny random
LLaMA: the compiled step gives the eager step's logits and greedy tokens, a second decoder
(after ``torch._dynamo.reset()``, as a new process would) loads Inductor's cached code instead
of compiling, the weights stay inputs (another model of the same architecture reuses the code
and gets its own logits), and the ``auto`` rule compiles only where its records say it pays."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from dhian.decoding.compiled_step import (
    MIN_BUCKET,
    WARM_FRACTION,
    CompiledDecoder,
    cache_bucket,
    inductor_cache_dir,
    model_signature,
    precision_label,
)
from dhian.decoding.llm_generate import llm_generate
from dhian.models.llama.config import LlamaConfig
from dhian.models.llama.model import LlamaModel
from dhian.models.llama.quantize import quantize_llama
from dhian.nn.bf16_linear import Bf16Head

CFG = LlamaConfig(
    vocab_size=96, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=512
)
PROMPTS = [[5, 17, 42, 8, 3], [60, 2, 9]]


def tiny(seed: int = 0, cfg: LlamaConfig = CFG) -> LlamaModel:
    torch.manual_seed(seed)
    return LlamaModel(cfg).eval()


@pytest.fixture
def caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh dhian cache and Inductor cache under tmp_path; Dynamo's compiled code forgotten
    before and after."""
    import torch._dynamo

    monkeypatch.setenv("DHIAN_CACHE", str(tmp_path / "dhian"))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch._dynamo.reset()
    yield tmp_path
    torch._dynamo.reset()


def test_cache_bucket_rounds_up_to_powers_of_two_within_the_context() -> None:
    assert cache_bucket(1, 8192) == MIN_BUCKET
    assert cache_bucket(MIN_BUCKET, 8192) == MIN_BUCKET
    assert cache_bucket(MIN_BUCKET + 1, 8192) == 2 * MIN_BUCKET
    assert cache_bucket(700, 1000) == 1000  # capped at the context
    assert cache_bucket(1000, 1000) == 1000
    with pytest.raises(ValueError, match="length must be >= 1"):
        cache_bucket(0, 1000)


def test_signature_ignores_weights_but_not_architecture_or_precision() -> None:
    a, b = tiny(0), tiny(1)
    assert model_signature(a) == model_signature(b)
    other = tiny(0, LlamaConfig(**{**CFG.to_dict(), "n_layers": 3}))
    assert model_signature(other) != model_signature(a)
    q = quantize_llama(tiny(0), "int4")
    assert precision_label(a) == "fp32" and precision_label(q) == "int4"
    assert model_signature(q) != model_signature(a)
    half = quantize_llama(tiny(0), "bf16")  # bf16 weights, float32 math
    assert precision_label(half) == "bf16" and model_signature(half) != model_signature(a)


def test_bad_compile_value_and_models_without_a_static_step_are_refused() -> None:
    with pytest.raises(ValueError, match="compile must be one of auto, on, off, got 'yes'"):
        CompiledDecoder(tiny(), "yes")
    with pytest.raises(ValueError, match="no static-shape decode_step"):
        CompiledDecoder(torch.nn.Linear(2, 2), "on")


def test_off_and_auto_without_records_decode_eagerly(caches: Path) -> None:
    model = tiny()
    for mode in ("off", "auto"):
        decoder = CompiledDecoder(model, mode)
        assert decoder.plan(1, 40, 1000) == (None, 40)
        assert decoder.compiles == decoder.loads == 0
    assert not (caches / "dhian" / "compiled").exists()


def _record(decoder: CompiledDecoder, batch: int, slots: int, **fields: float | None) -> None:
    where = inductor_cache_dir()
    where.mkdir(parents=True, exist_ok=True)
    path = decoder.record_path(batch, slots)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"key": decoder.key(batch, slots), "inductor_dir": str(where), **fields})
    )


def test_auto_pays_from_the_records(caches: Path) -> None:
    decoder = CompiledDecoder(tiny(), "auto")
    # 31.25 ms saved per step, a warm start of 2 s: pays from 64 new tokens
    _record(
        decoder, 1, 256, compile_s=30.0, load_s=2.0, eager_step_s=0.0625, compiled_step_s=0.03125
    )
    assert decoder.pays(1, 256, 64) and not decoder.pays(1, 256, 63)
    # never compiled for batch 2: a cold compile (30 s) at the same saving: 960 tokens
    assert decoder.pays(2, 256, 960) and not decoder.pays(2, 256, 959)
    # no warm start timed yet: WARM_FRACTION of the cold compile
    _record(
        decoder, 1, 512, compile_s=30.0, load_s=None, eager_step_s=0.0625, compiled_step_s=0.03125
    )
    cold = decoder.record(1, 512)
    assert cold is not None and cold.start_s == pytest.approx(30.0 * WARM_FRACTION)
    # a compiled step that is slower than eager never pays
    _record(decoder, 4, 256, compile_s=1.0, load_s=0.5, eager_step_s=0.01, compiled_step_s=0.02)
    assert not decoder.pays(4, 256, 10**6)
    # a record of another Inductor cache dir does not count
    path = decoder.record_path(1, 256)
    path.write_text(path.read_text().replace(str(caches / "inductor"), "/elsewhere"))
    assert decoder.record(1, 256) is None


@pytest.mark.slow
def test_compiled_step_equals_eager_and_is_cached_across_processes(caches: Path) -> None:
    from torch._dynamo.utils import counters

    model = tiny()
    lines: list[str] = []
    decoder = CompiledDecoder(model, "on", notice=lines.append)
    step, slots = decoder.plan(2, 5 + 12, 12)
    assert step is not None and slots == MIN_BUCKET
    assert decoder.compiles == 1 and decoder.loads == 0
    assert lines[0].startswith("compiling the decode step for batch 2, 256 cache slots (fp32)")
    assert str(caches / "inductor") in lines[0]
    record = decoder.record(2, slots)
    assert record is not None and record.load_s is None and record.compile_s > 0
    # one step: compiled logits = eager logits
    token = torch.tensor([[7], [11]])
    positions = torch.tensor([[5], [3]])
    slot = torch.tensor([5])
    mask = torch.zeros(2, slots, dtype=torch.bool)
    mask[0, :6] = True
    mask[1, 2:6] = True
    with torch.no_grad():
        ref = model.decode_step(token, positions, slot, mask, model.new_cache(2, slots))
        got = step(token, positions, slot, mask, model.new_cache(2, slots))
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    # whole generations: the same greedy tokens, and Dynamo traces no new graph (the
    # stand-in inputs of prepare() pass the guards of llm_generate's real ones)
    graphs = counters["stats"]["unique_graphs"]
    eager = llm_generate(model, PROMPTS, max_new_tokens=12)
    compiled = llm_generate(model, PROMPTS, max_new_tokens=12, compiled=decoder)
    assert [r.tokens for r in compiled] == [r.tokens for r in eager]
    for a, b in zip(compiled, eager, strict=True):
        assert a.log_probs == pytest.approx(b.log_probs, abs=1e-4)
    assert decoder.compiles == 1 and counters["stats"]["unique_graphs"] == graphs
    # a new process: Dynamo forgets its code, Inductor's cache on disk has it
    torch._dynamo.reset()
    again = CompiledDecoder(model, "on", notice=lines.append)
    again.prepare(2, slots)
    assert again.compiles == 0 and again.loads == 1
    assert lines[-2].startswith("loading the compiled decode step for batch 2")
    warm = again.record(2, slots)
    assert warm is not None and warm.load_s is not None and warm.compile_s == record.compile_s
    # another model of the same architecture (a new process): the cached code, its own weights
    torch._dynamo.reset()
    other = tiny(seed=3)
    third = CompiledDecoder(other, "on")
    third.prepare(2, slots)
    assert third.compiles == 0 and third.loads == 1
    mine = llm_generate(other, PROMPTS, max_new_tokens=12, compiled=third)
    assert [r.tokens for r in mine] == [r.tokens for r in llm_generate(other, PROMPTS, 12)]
    with torch.no_grad():
        theirs = third.plan(2, 17, 12)[0](token, positions, slot, mask, other.new_cache(2, slots))
        own = other.decode_step(token, positions, slot, mask, other.new_cache(2, slots))
    torch.testing.assert_close(theirs, own, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(theirs, ref, atol=1e-3)  # not the first model's logits


@pytest.mark.slow
def test_int4_step_compiles_and_matches_eager(caches: Path) -> None:
    model = quantize_llama(tiny(), "int4")
    decoder = CompiledDecoder(model, "on")
    eager = llm_generate(model, PROMPTS, max_new_tokens=8)
    compiled = llm_generate(model, PROMPTS, max_new_tokens=8, compiled=decoder)
    assert decoder.compiles == 1
    assert [r.tokens for r in compiled] == [r.tokens for r in eager]
    for a, b in zip(compiled, eager, strict=True):
        assert a.log_probs == pytest.approx(b.log_probs, abs=1e-2)


def test_int4_fp32_step_compiles_and_equals_the_fp32_model(caches: Path) -> None:
    from dhian.nn.block_quant import BlockQ4Linear, BlockQ8Head

    ref = tiny().fuse_projections()
    model = quantize_llama(tiny(), "int4-fp32")
    assert precision_label(model) == "int4-fp32"
    with torch.no_grad():  # the fp32 model on int4-fp32's exact weights
        for name, mod in model.named_modules():
            if isinstance(mod, BlockQ4Linear):
                ref.get_submodule(name).weight.copy_(mod.dequantized_weight())
        ref.embed_tokens.weight.copy_(model.embed_tokens.dequantized_weight())
        assert isinstance(model.lm_head, BlockQ8Head)
        ref.lm_head.weight.copy_(model.lm_head.table.dequantized_weight())
    decoder = CompiledDecoder(model, "on")
    compiled = llm_generate(model, PROMPTS, max_new_tokens=8, compiled=decoder)
    want = llm_generate(ref, PROMPTS, max_new_tokens=8)
    assert decoder.compiles >= 1
    assert [r.tokens for r in compiled] == [r.tokens for r in want]
    for a, b in zip(compiled, want, strict=True):
        assert a.log_probs == pytest.approx(b.log_probs, abs=1e-4)


@pytest.mark.slow
def test_column_major_fp32_step_compiles_and_matches_eager(caches: Path) -> None:
    model = quantize_llama(tiny(), "fp32")  # weights stored column-major
    assert model.lm_head.weight.stride() == (1, CFG.vocab_size)
    decoder = CompiledDecoder(model, "on")
    eager = llm_generate(model, PROMPTS, max_new_tokens=8)
    compiled = llm_generate(model, PROMPTS, max_new_tokens=8, compiled=decoder)
    assert decoder.compiles == 1
    assert [r.tokens for r in compiled] == [r.tokens for r in eager]
    for a, b in zip(compiled, eager, strict=True):
        assert a.log_probs == pytest.approx(b.log_probs, abs=1e-4)


@pytest.mark.slow
def test_bf16_step_compiles_matches_eager_and_is_cached(caches: Path) -> None:
    model = quantize_llama(tiny(), "bf16")
    assert isinstance(model.lm_head, Bf16Head)
    decoder = CompiledDecoder(model, "on")
    eager = llm_generate(model, PROMPTS, max_new_tokens=8)
    compiled = llm_generate(model, PROMPTS, max_new_tokens=8, compiled=decoder)
    assert decoder.compiles == 1
    assert [r.tokens for r in compiled] == [r.tokens for r in eager]
    # a new process with another model of the same shapes: the cached code, its own weights
    torch._dynamo.reset()
    other = quantize_llama(tiny(seed=3), "bf16")
    again = CompiledDecoder(other, "on")
    mine = llm_generate(other, PROMPTS, max_new_tokens=8, compiled=again)
    assert again.compiles == 0 and again.loads == 1
    assert [r.tokens for r in mine] == [r.tokens for r in llm_generate(other, PROMPTS, 8)]


@pytest.mark.slow
def test_cpp_wrapper_step_matches_eager_and_reloads(caches: Path) -> None:
    model = quantize_llama(tiny(), "fp32")
    decoder = CompiledDecoder(model, "on", cpp_wrapper=True)
    assert decoder.key(2, 256).startswith("fp32-cpp-b2-t256-")
    eager = llm_generate(model, PROMPTS, max_new_tokens=8)
    compiled = llm_generate(model, PROMPTS, max_new_tokens=8, compiled=decoder)
    assert decoder.compiles == 1
    assert [r.tokens for r in compiled] == [r.tokens for r in eager]
    torch._dynamo.reset()  # a new process loads the C++-wrapped code from the cache
    again = CompiledDecoder(model, "on", cpp_wrapper=True)
    again.prepare(2, 256)
    assert again.compiles == 0 and again.loads == 1


@pytest.mark.slow
def test_long_lived_decoder_compiles_in_the_background(caches: Path) -> None:
    from torch._dynamo.utils import counters

    model = tiny()
    decoder = CompiledDecoder(model, "auto", long_lived=True)
    first = llm_generate(model, PROMPTS[:1], max_new_tokens=6, compiled=decoder)  # eager
    decoder.wait(timeout=600)
    assert decoder.ready(1, MIN_BUCKET) and decoder.compiles == 1
    step, slots = decoder.plan(1, 11, 6)
    assert step is not None and slots == MIN_BUCKET
    graphs = counters["stats"]["unique_graphs"]
    again = llm_generate(model, PROMPTS[:1], max_new_tokens=6, compiled=decoder)
    assert again[0].tokens == first[0].tokens
    # batch 1: the token column a step reads has the compiled (1, 1) strides, no re-trace
    assert counters["stats"]["unique_graphs"] == graphs
