"""GPT generation scenario ``gpt-generate-b8``: dhian's :class:`GPT` against HF
``GPT2LMHeadModel`` of the same shape and the very same (random) weights.

A GPT-2-small-shaped model (12 layers, E 768, 12 heads, ff 3072, vocab 50,257, 1,024 learned
positions, tanh-GELU, tied embeddings) is built in dhian; :func:`to_hf_gpt2` copies its weights
into ``transformers.GPT2LMHeadModel`` (SDPA attention; Conv1D weights are the transposed
Linear weights), so both compute the same function. Each contender continues ``batch`` random
prompts of ``prompt`` tokens by exactly ``new`` greedy tokens (no EOS: neither side stops
early), with and without the KV cache, at batch 1 and 8; throughput = generated tokens / s.
The headline pair ``dhian-fp32`` / ``hf-fp32`` is batch 8 with the cache; the other modes are
suffixed ``-b1``, ``-b8-nocache``, ``-b1-nocache``.

FLOPs (the same analytic count for both, the algorithm's minimum): every forward's projections
``L (4 E^2 + 2 E F)`` per fed token, the attention products ``2 c E`` per layer for a token
seeing ``c`` keys (causal), and the output layer ``E V`` for the one position per row whose
logits are used, x 2. With the cache the prompt is fed once, then one token per step; without
it every step re-feeds the whole context. (dhian computes the logits of every fed position, HF
only the last one: that extra work is dhian's cost, not credited.)
``--quick`` uses a tiny shape (a correctness smoke run for the tests).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from bench.harness import Contender, Scenario, Setup, register
from dhian.decoding.sampling import generate
from dhian.models.gpt.config import GPTConfig
from dhian.models.gpt.model import GPT, build_gpt


@dataclasses.dataclass(frozen=True)
class Shape:
    """``layers``, model dim ``d``, ``heads``, ``vocab``, ``block`` positions; prompts of
    ``prompt`` tokens continued by ``new`` tokens."""

    layers: int
    d: int
    heads: int
    vocab: int
    block: int
    prompt: int
    new: int


FULL = Shape(layers=12, d=768, heads=12, vocab=50257, block=1024, prompt=16, new=32)
QUICK = Shape(layers=2, d=32, heads=4, vocab=97, block=64, prompt=5, new=6)
#: (contender suffix, batch, use the KV cache)
MODES = (("", 8, True), ("-b1", 1, True), ("-b8-nocache", 8, False), ("-b1-nocache", 1, False))


def gpt_config(s: Shape) -> GPTConfig:
    """dhian's config of a GPT-2-like model of shape ``s`` (dropout off, tanh-GELU)."""
    return GPTConfig(
        vocab_size=s.vocab,
        n_layer=s.layers,
        n_head=s.heads,
        n_embd=s.d,
        block_size=s.block,
        dropout=0.0,
        activation="gelu_new",
        tie_embeddings=True,
        layer_norm_eps=1e-5,
    )


def to_hf_gpt2(model: GPT, cfg: GPTConfig) -> Any:
    """``transformers.GPT2LMHeadModel`` (SDPA, eval) holding ``model``'s weights."""
    import transformers

    hf_cfg: Any = transformers.GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.block_size,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        activation_function="gelu_new",
        layer_norm_epsilon=cfg.layer_norm_eps,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=None,
        eos_token_id=None,
        tie_word_embeddings=True,
        attn_implementation="sdpa",  # type: ignore[call-arg]  # a PretrainedConfig kwarg
    )
    hf = transformers.GPT2LMHeadModel(hf_cfg)
    src = model.state_dict()
    assert model.pos_emb is not None  # learned positions
    sd = {
        "transformer.wte.weight": src["tok_emb.weight"],
        "transformer.wpe.weight": src["pos_emb.weight"],
    }
    names = {"norm1": "ln_1", "norm2": "ln_2", "self_attn.out_proj": "attn.c_proj"}
    names |= {"ff.linear1": "mlp.c_fc", "ff.linear2": "mlp.c_proj"}
    for i in range(cfg.n_layer):
        a, b = f"blocks.{i}.", f"transformer.h.{i}."
        sd[b + "attn.c_attn.weight"] = src[a + "self_attn.in_proj_weight"].t()  # (E, 3E)
        sd[b + "attn.c_attn.bias"] = src[a + "self_attn.in_proj_bias"]
        for ours, theirs in names.items():
            w = src[f"{a}{ours}.weight"]
            sd[f"{b}{theirs}.weight"] = w.t() if w.dim() == 2 else w  # Conv1D: (in, out)
            sd[f"{b}{theirs}.bias"] = src[f"{a}{ours}.bias"]
    sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"] = (
        src["norm_f.weight"],
        src["norm_f.bias"],
    )
    missing, unexpected = hf.load_state_dict(
        {k: v.contiguous() for k, v in sd.items()}, strict=False
    )
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise RuntimeError(f"GPT-2 weight copy: missing {missing}, unexpected {unexpected}")
    hf.tie_weights()
    return hf.eval()


def build_pair(s: Shape, seed: int = 0) -> tuple[GPT, Any]:
    """A random dhian GPT of shape ``s`` and HF GPT2LMHeadModel with its weights (both eval)."""
    import transformers

    transformers.logging.set_verbosity_error()
    cfg = gpt_config(s)
    torch.manual_seed(seed)
    model = build_gpt(cfg).eval()
    return model, to_hf_gpt2(model, cfg)


def prompts(s: Shape, batch: int, seed: int = 1) -> Tensor:
    """(batch, prompt) random token ids (row i the same for every batch size)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, s.vocab, (8, s.prompt), generator=g)[:batch]


def dhian_generate(model: GPT, s: Shape, batch: int, cache: bool) -> list[list[int]]:
    """dhian greedy continuation: exactly ``s.new`` tokens per prompt."""
    with torch.inference_mode():
        res = generate(model, prompts(s, batch).tolist(), s.new, temperature=0.0, use_cache=cache)
    return [r.tokens for r in res]


def hf_generate(hf: Any, s: Shape, batch: int, cache: bool) -> list[list[int]]:
    """HF greedy ``generate``: exactly ``s.new`` tokens per prompt (no EOS configured)."""
    ids = prompts(s, batch)
    with torch.inference_mode():
        out = hf.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=s.new,
            min_new_tokens=s.new,
            do_sample=False,
            use_cache=cache,
            pad_token_id=0,
        )  # (B, prompt + new)
    return [row[s.prompt :] for row in out.tolist()]


def gpt_flops(s: Shape, batch: int, cache: bool) -> float:
    """Analytic matmul FLOPs of one generation run (see the module docstring)."""
    e, f = s.d, 4 * s.d
    per_token = s.layers * (4 * e * e + 2 * e * f)
    attn = 2 * e * s.layers  # per (query, key) pair

    def forward(fed: int, past: int) -> float:  # feed ``fed`` tokens after ``past`` cached
        keys = sum(past + i + 1 for i in range(fed))
        return fed * per_token + keys * attn + e * s.vocab  # one logits row

    if cache:
        total = forward(s.prompt, 0) + sum(forward(1, s.prompt + t - 1) for t in range(1, s.new))
    else:
        total = sum(forward(s.prompt + t, 0) for t in range(s.new))
    return 2.0 * batch * total


def _same(a: list[list[int]], b: list[list[int]]) -> str:
    rows = sum(x == y for x, y in zip(a, b, strict=True))
    toks = sum(p == q for x, y in zip(a, b, strict=True) for p, q in zip(x, y, strict=True))
    return f"{rows}/{len(a)} prompts, {toks}/{sum(len(x) for x in a)} tokens"


def build(quick: bool) -> Setup:
    """dhian and HF, batch 1 and 8, with and without the KV cache."""
    s = QUICK if quick else FULL
    model, hf = build_pair(s)
    contenders: list[Contender] = []
    ratios: list[tuple[str, str]] = []
    notes: list[str] = []
    for suffix, batch, cache in MODES:
        flops = gpt_flops(s, batch, cache)
        same = _same(dhian_generate(model, s, batch, cache), hf_generate(hf, s, batch, cache))
        notes.append(f"batch {batch}, cache {'on' if cache else 'off'}: identical for {same}")
        for who, m, fn in (("dhian", model, dhian_generate), ("hf", hf, hf_generate)):
            name = f"{who}-fp32{suffix}"

            def run(m: Any = m, fn: Any = fn, batch: int = batch, cache: bool = cache) -> int:
                out = fn(m, s, batch, cache)
                if len(out) != batch or any(len(t) != s.new for t in out):
                    raise RuntimeError(f"did not generate {s.new} tokens per prompt")
                return batch * s.new

            contenders.append(Contender(name, run, flops, "fp32"))
        ratios.append((f"dhian-fp32{suffix}", f"hf-fp32{suffix}"))
    notes.append(
        "Same prompts, same number of generated tokens (no early stop), FLOPs the same "
        "analytic count for both; dhian-fp32/hf-fp32 is batch 8 with the KV cache."
    )
    return Setup(
        contenders,
        ratios,
        f"greedy generation of {s.new} tokens after {s.prompt}-token prompts, batch 1 and 8, "
        f"with and without the KV cache; GPT-2-shaped model {s.layers} layers, E {s.d}, "
        f"{s.heads} heads, vocab {s.vocab:,}, random weights shared by dhian and HF "
        "GPT2LMHeadModel (sdpa).",
        notes,
    )


register(Scenario("gpt-generate-b8", "tok/s", build))
