"""LLM generation scenario ``llm-generate-smollm2``: dhian's LLaMA family on the built-in
SmolLM2-135M-Instruct (Q4_1 GGUF) against HF transformers loading the same GGUF and llama.cpp.

Three workloads, every contender on the same token ids and the same weights (the file):

- ``-b1``: greedy decoding of exactly ``new`` tokens after a ``prompt``-token prompt, batch 1;
- ``-b8``: the same for 8 prompts at once (dhian and HF; throughput = 8 x ``new`` / s);
- ``-prefill512``: one forward over a ``long``-token prompt producing the next token's logits
  (throughput = prompt tokens / s).

Contenders: dhian ``fp32`` / ``bf16`` / ``int8`` / ``int4`` (``--dtype`` of ``dhian generate``;
int4 takes the file's own Q4_1 blocks), the same modes with the decoding step compiled
(``dhian-<mode>c-b1`` / ``-b8``: ``--compile on``, :mod:`dhian.decoding.compiled_step`; the
compile runs before the timed runs and is reported in the notes: the first compile in this
process, then a reload from Inductor's cache after ``torch._dynamo.reset()``, which is what a
second process pays; ``--quick`` compiles int4 at batch 1 only), HF ``fp32`` / ``bf16`` (``AutoModelForCausalLM`` with
``gguf_file=``, which dequantises every tensor), and llama.cpp through ``llama-cpp-python``
(the Q4_1 file as it is; optional: listed under ``"unavailable"`` when not installed).
No contender stops early (EOS is suppressed for HF by ``min_new_tokens``; dhian and llama.cpp
are asked for exactly ``new`` tokens). ``dhian-best-*`` is the fastest dhian mode *among those
that pass the quality bound* of docs/speed.md (news ppl/char within 1% of fp32 and greedy
outputs equal to fp32 on >= 15 of 20 prompts; a compiled mode has its eager mode's quality,
and its greedy tokens are checked against it in the notes); the JSON's ``"best"`` names it.
FLOPs: 2 x parameters touched per token (projections and the output layer) + the attention
products, the same analytic count for every contender. ``--quick`` shortens every workload
(a smoke run for the tests; it still needs the model wheel).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from bench import llamacpp
from bench.harness import Contender, Scenario, Setup, register
from bench.peer_process import PeerProcess


@dataclasses.dataclass(frozen=True)
class Work:
    """``prompt`` tokens then ``new`` greedy tokens; ``long`` tokens for the prefill run."""

    prompt: int
    new: int
    long: int


FULL = Work(prompt=16, new=128, long=512)
QUICK = Work(prompt=8, new=4, long=32)
TEXT = (
    "In the beginning of the nineteenth century the town was a small market on the river, "
    "where farmers from the valleys brought grain, wool and cattle to sell. The railway came in "
)
DHIAN_MODES = ("fp32", "bf16", "int8", "int4", "int4-fp32")
#: Modes that passed the quality bound on the machine of docs/speed.md (set by the quality run).
QUALITY_OK = ("fp32", "bf16", "int4-fp32")  # int8/int4: ppl within 0.1% but greedy = fp32
# on 7/9 of 20; int4-fp32 (the file's 4-bit blocks, float32 math): ppl +0.00%, greedy 20/20;
# bf16 (bf16 weights, float32 math since 2026-12-06): ppl +0.00%, greedy 19/20

#: modes whose decoding step is also timed compiled (``--quick``: int4 at batch 1 only)
COMPILED_MODES = DHIAN_MODES

LONG_TEXT = TEXT * 40  # tokenised and cut to ``long`` tokens


def _math_dtype(mode: str) -> str:
    """The dtype a mode's products run in (for the FLOP-rate column)."""
    return (
        "fp32" if mode in ("fp32", "bf16", "int4-fp32") else "bf16"
    )  # bf16: bf16 weights, float32 math


def flops_per_token(cfg: Any, keys: float) -> float:
    """2 x weights touched per token (projections, MLP, LM head) + q·k and weights·v over
    ``keys`` key slots on average."""
    e, h, hkv, d, f, v = (
        cfg.dim,
        cfg.n_heads,
        cfg.n_kv_heads,
        cfg.head_dim,
        cfg.ffn_dim,
        cfg.vocab_size,
    )
    per_layer = e * (h + 2 * hkv) * d + h * d * e + 3 * e * f + 2 * h * d * keys
    return 2.0 * (cfg.n_layers * per_layer + e * v)


def build(quick: bool) -> Setup:
    """The contenders of ``llm-generate-smollm2`` (see the module docstring)."""
    import torch._dynamo as dynamo

    from dhian.data.builtin_corpora import fetch_pretrained
    from dhian.decoding.compiled_step import CompiledDecoder, cache_bucket
    from dhian.decoding.llm_generate import llm_generate, prefill
    from dhian.inference.load import load_model

    w = QUICK if quick else FULL
    path = str(fetch_pretrained("smollm2", quiet=True))
    models = {m: load_model("smollm2", "cpu", m, quiet=True) for m in DHIAN_MODES}
    tok = models["fp32"].tokenizers["src"]
    cfg = models["fp32"].model.cfg
    all_ids = tok.encode(LONG_TEXT)
    long_ids = all_ids[: w.long]
    prompt = long_ids[: w.prompt]
    batch = [all_ids[i * w.prompt : (i + 1) * w.prompt] for i in range(8)]
    assert len(long_ids) == w.long and all(len(p) == w.prompt for p in batch)

    def dhian_decode(
        model: Any, prompts: list[list[int]], compiled: CompiledDecoder | None = None
    ) -> list[list[int]]:
        with torch.inference_mode():
            out = llm_generate(model, prompts, max_new_tokens=w.new, compiled=compiled)
        return [r.tokens for r in out]

    def dhian_prefill(model: Any) -> int:
        with torch.inference_mode():
            cache = model.new_cache(1, w.long)
            prefill(model, torch.tensor([long_ids]), None, cache)
        return w.long

    def units(rows: list[list[int]], who: str) -> int:
        if any(len(r) != w.new for r in rows):
            raise RuntimeError(f"{who} did not produce exactly {w.new} tokens per row")
        return w.new * len(rows)

    contenders: list[Contender] = []
    flops_dec = w.new * flops_per_token(cfg, w.prompt + w.new / 2)
    flops_pre = w.long * flops_per_token(cfg, w.long / 2)
    for m in DHIAN_MODES:
        model = models[m].model
        dt = _math_dtype(m)
        contenders += [
            Contender(f"dhian-{m}-b1", lambda mo=model, n=m: units(dhian_decode(mo, [prompt]), n), flops_dec, dt),
            Contender(f"dhian-{m}-b8", lambda mo=model, n=m: units(dhian_decode(mo, batch), n), 8 * flops_dec, dt),
            Contender(f"dhian-{m}-prefill512", lambda mo=model: dhian_prefill(mo), flops_pre, dt),
        ]  # fmt: skip
    notes: list[str] = []
    compiled_modes = ("int4",) if quick else COMPILED_MODES
    batches = (1,) if quick else (1, 8)
    slots = cache_bucket(w.prompt + w.new, int(cfg.max_seq_len))
    first: dict[str, tuple[float, bool]] = {}
    for m in compiled_modes:  # the first compile in this process (an Inductor cache miss or hit)
        decoder = CompiledDecoder(models[m].model, "on")
        for b in batches:
            before = decoder.compiles
            with torch.inference_mode():
                seconds = decoder.prepare(b, slots)
            first[f"dhian-{m}c-b{b}"] = (seconds, decoder.compiles > before)
    dynamo.reset()  # forget the compiled code: reloading it is a second process's start
    decoders: dict[str, CompiledDecoder] = {}
    for m in compiled_modes:
        decoders[m] = CompiledDecoder(models[m].model, "on")
        for b in batches:
            name = f"dhian-{m}c-b{b}"
            with torch.inference_mode():
                t = time.perf_counter()
                decoders[m].prepare(b, slots)
                again = time.perf_counter() - t
            seconds, missed = first[name]
            notes.append(
                f"{name} compile (not timed): {seconds:.1f} s in this process (Inductor cache "
                f"{'miss' if missed else 'hit'}), {again:.1f} s reloading it from the cache after "
                f"torch._dynamo.reset(); cache length {slots} slots"
            )
        model = models[m].model
        dec = decoders[m]
        for b, rows in ((1, [prompt]), (8, batch)):
            if b in batches:
                contenders.append(Contender(
                    f"dhian-{m}c-b{b}",
                    lambda mo=model, d=dec, r=rows, n=m: units(dhian_decode(mo, r, d), n),
                    b * flops_dec,
                    _math_dtype(m),
                ))  # fmt: skip
        same = sum(
            a == c
            for a, c in zip(
                dhian_decode(model, [prompt], dec)[0], dhian_decode(model, [prompt])[0], strict=True
            )
        )
        notes.append(f"dhian {m} compiled vs eager, b1 greedy: {same}/{w.new} tokens equal")
    reference = dhian_decode(models["fp32"].model, [prompt])[0]
    for m in DHIAN_MODES[1:]:
        same = sum(
            a == b
            for a, b in zip(dhian_decode(models[m].model, [prompt])[0], reference, strict=True)
        )
        notes.append(f"dhian {m} vs dhian fp32, b1 greedy: {same}/{w.new} tokens equal")  # fmt: skip
    unavailable: dict[str, str] = {}
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        p = Path(path)
        for tag, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            hf = transformers.AutoModelForCausalLM.from_pretrained(
                str(p.parent), gguf_file=p.name, dtype=dtype
            ).eval()

            def hf_decode(hf: Any = hf, prompts: list[list[int]] = [prompt]) -> list[list[int]]:  # noqa: B006
                with torch.inference_mode():
                    out = hf.generate(
                        torch.tensor(prompts), attention_mask=torch.ones(len(prompts), w.prompt, dtype=torch.long),
                        do_sample=False, max_new_tokens=w.new, min_new_tokens=w.new,
                        pad_token_id=tok.pad_id,
                    )  # fmt: skip
                return [r[w.prompt :] for r in out.tolist()]

            if tag == "fp32":
                same = sum(a == b for a, b in zip(hf_decode()[0], reference, strict=True))
                notes.append(f"HF fp32 vs dhian fp32, b1 greedy: {same}/{w.new} tokens equal")
            contenders.append(
                Contender(f"hf-{tag}-b1", lambda f=hf_decode: units(f(), "hf"), flops_dec, tag)
            )
    except (ImportError, OSError, ValueError) as exc:
        unavailable["hf-fp32-b1"] = unavailable["hf-bf16-b1"] = f"transformers GGUF load: {exc}"
    why = llamacpp.unavailable()
    if why is not None:
        unavailable["llamacpp-b1"] = unavailable["llamacpp-prefill512"] = why
    else:
        cpp: Any = PeerProcess(
            llamacpp.LlamaCpp, path, torch.get_num_threads(), prompt, long_ids, w.new
        )
        same = sum(a == b for a, b in zip(cpp.decode()[0], reference, strict=True))
        notes += [
            f"llama.cpp Q4_1 vs dhian fp32, b1 greedy: {same}/{w.new} tokens equal",
            "llama.cpp runs in its own process (bench/peer_process.py): in this one its OpenMP "
            "threads would join torch's libgomp and throttle every torch thread's spin-wait.",
        ]
        contenders += [
            Contender("llamacpp-b1", lambda: units(cpp.decode(), "llama.cpp"), flops_dec, "fp32"),
            Contender("llamacpp-prefill512", cpp.prefill, flops_pre, "fp32"),
        ]
    notes += [
        "llama-cpp-python 0.3.36 here is built without AMX (its AMX build segfaults in this "
        "sandbox); it uses AVX-512/VNNI/BF16.",
        f"dhian-best-* pick among the modes that pass the quality bound: {', '.join(QUALITY_OK)} "
        "(bench/llm_quality.py, docs/speed.md).",
        "Units: b1 = new tokens/s, b8 = 8 x new tokens/s (aggregate), prefill512 = prompt "
        "tokens/s; every run produces exactly that many tokens (no early stop).",
    ]
    best = {
        f"dhian-best-{k}": [f"dhian-{m}-{k}" for m in QUALITY_OK]
        + [f"dhian-{m}c-{k}" for m in QUALITY_OK if f"dhian-{m}c-{k}" in first]
        for k in ("b1", "b8", "prefill512")
    }
    return Setup(
        contenders,
        [
            ("dhian-best-b1", "llamacpp-b1"),
            ("dhian-best-b8", "llamacpp-b1"),
            ("dhian-best-prefill512", "llamacpp-prefill512"),
            ("dhian-bf16-b1", "hf-bf16-b1"),
            ("dhian-fp32-b1", "hf-fp32-b1"),
        ],
        f"SmolLM2-135M-Instruct (Q4_1 GGUF): greedy {w.new} tokens after a {w.prompt}-token "
        f"prompt at batch 1 and 8, and the prefill of a {w.long}-token prompt.",
        notes,
        best=best,
        unavailable=unavailable,
    )


register(Scenario("llm-generate-smollm2", "tok/s", build))
