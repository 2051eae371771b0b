"""BERT encoder scenario ``bert-base-32x128``: dhian's :class:`BertBackbone` against HF
``BertModel`` (SDPA attention) on the very same weights, and ONNX Runtime fp32 / dynamic int8.

A BERT-base-shaped backbone (12 layers, E 768, 12 heads, ff 3072, vocab 30,522, with pooler)
with random weights is built in dhian and written as an HF directory by
:func:`dhian.interop.hf_bert.export_hf_bert`; ``transformers.BertModel`` loads it (fp32, and bf16
with ``dtype=torch.bfloat16``), and :mod:`bench.ort` exports that HF model to ONNX (optimized,
and dynamically quantized to int8). dhian runs fp32, bf16 and int8
(:func:`dhian.models.precision.apply_precision`: int8 = fused oneDNN int8 encoder layers; bf16 =
fused prepacked bf16 layers where the CPU has bf16 instructions), and for comparison the generic
paths they replace (``dhian-int8-dynamic``: dynamic quantization of each linear;
``dhian-bf16-plain``: the model cast to bf16; ``fused=False``). Every contender encodes the same 32 sentences
of 128 tokens (no padding; dhian gets the lengths, the others an all-ones attention mask) into
the last hidden states and the pooled output; throughput = sentences / s.

FLOPs (both contenders credited the same analytic count): per layer and sentence the
projections ``T (4 E^2 + 2 E F)`` and the attention products ``2 T^2 E`` multiply-adds, plus
the pooler ``E^2``, x 2. Embedding sums, norms and softmax are not counted.
``--quick`` uses a tiny shape (a correctness smoke run for the tests).
"""

from __future__ import annotations

import atexit
import copy
import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bench import ort
from bench.harness import Contender, Scenario, Setup, bf16_native, register
from dhian.interop.hf_bert import export_hf_bert
from dhian.models.bert.config import BertConfig
from dhian.models.bert.heads import build_bert
from dhian.models.bert.model import BertBackbone
from dhian.models.precision import apply_precision


@dataclasses.dataclass(frozen=True)
class Shape:
    """``layers``, model dim ``d``, ``heads``, ``ff``, ``vocab``; ``batch`` x ``length``."""

    layers: int
    d: int
    heads: int
    ff: int
    vocab: int
    batch: int
    length: int


FULL = Shape(layers=12, d=768, heads=12, ff=3072, vocab=30522, batch=32, length=128)
QUICK = Shape(layers=2, d=32, heads=4, ff=64, vocab=120, batch=4, length=16)


def bert_config(s: Shape) -> BertConfig:
    """dhian's config of a BERT backbone of shape ``s`` (with pooler, dropout off)."""
    return BertConfig(
        task="backbone",
        vocab_size=s.vocab,
        embed_dim=s.d,
        layers=s.layers,
        heads=s.heads,
        ff_dim=s.ff,
        max_positions=max(512, s.length),
        dropout=0.0,
        attention_dropout=0.0,
        pooler=True,
    )


def build_pair(s: Shape, seed: int = 0) -> tuple[BertBackbone, Any, Path]:
    """A random dhian backbone of shape ``s`` (eval) and HF's BertModel (SDPA) loaded from its
    export, and the export dir (deleted at exit)."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    cfg = bert_config(s)
    torch.manual_seed(seed)
    model = build_bert(cfg, s.vocab).eval()
    assert isinstance(model, BertBackbone)
    folder = Path(tempfile.mkdtemp(prefix="dhian-bench-bert-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    export_hf_bert(model, cfg, None, folder / "hf")
    hf = transformers.BertModel.from_pretrained(folder / "hf", attn_implementation="sdpa")
    return model, hf.eval(), folder


def inputs(s: Shape, seed: int = 1) -> tuple[Tensor, Tensor, Tensor]:
    """ids (B, T) random non-special tokens, lengths (B,) all T, HF attention mask (B, T)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, s.vocab, (s.batch, s.length), generator=g)
    return ids, torch.full((s.batch,), s.length, dtype=torch.long), torch.ones_like(ids)


def dhian_encode(model: Any, s: Shape) -> tuple[Tensor, Tensor]:
    """dhian: last hidden (B, T, E) and pooled (B, E), float32."""
    ids, lengths, _ = inputs(s)
    with torch.inference_mode():
        out = model(ids, lengths)
    return out.last_hidden.float(), out.pooled.float()


def hf_encode(hf: Any, s: Shape) -> tuple[Tensor, Tensor]:
    """HF BertModel: last hidden (B, T, E) and pooled (B, E), float32."""
    ids, _, mask = inputs(s)
    with torch.inference_mode():
        out = hf(input_ids=ids, attention_mask=mask)
    return out.last_hidden_state.float(), out.pooler_output.float()


def ort_encode(session: ort.OrtBert, s: Shape) -> tuple[Tensor, Tensor]:
    """ONNX Runtime: last hidden (B, T, E) and pooled (B, E)."""
    ids, _, mask = inputs(s)
    return session.run(ids, mask)


def bert_flops(s: Shape) -> float:
    """Matmul FLOPs of encoding ``s.batch`` sentences (see the module docstring)."""
    e, f, t = s.d, s.ff, s.length
    per_sentence = s.layers * (t * (4 * e * e + 2 * e * f) + 2 * t * t * e) + e * e
    return 2.0 * s.batch * per_sentence


def rel_error(got: Tensor, ref: Tensor) -> float:
    """‖got − ref‖ / ‖ref‖ (Frobenius)."""
    return float((got - ref).norm() / ref.norm())


def _ort_peer(folder: Path, s: Shape, notes: list[str]) -> tuple[dict[str, Any], str | None]:
    """ONNX Runtime sessions {"fp32", "int8"} (or {} and why)."""
    why = ort.unavailable()
    if why is not None:
        return {}, why
    try:
        files = ort.export(folder / "hf", folder / "onnx", s.heads, s.d)
    except RuntimeError as exc:
        return {}, str(exc)
    threads = torch.get_num_threads()
    notes.append(
        f"ORT graphs: fp32 {ort.fused_ops(files['fp32'])}; int8 {ort.fused_ops(files['int8'])}"
    )
    return {tag: ort.OrtBert(path, threads) for tag, path in files.items()}, None


def build(quick: bool) -> Setup:
    """dhian fp32/bf16/int8, HF fp32/bf16, ORT fp32/int8 on one BERT encoder workload."""
    s = QUICK if quick else FULL
    model, hf, folder = build_pair(s)
    import transformers

    model16 = apply_precision(copy.deepcopy(model), "bf16")
    model16_plain = apply_precision(copy.deepcopy(model), "bf16", fused=False)
    model8 = apply_precision(copy.deepcopy(model), "int8")
    model8_dynamic = apply_precision(copy.deepcopy(model), "int8", fused=False)
    hf16 = transformers.BertModel.from_pretrained(
        folder / "hf", attn_implementation="sdpa", dtype=torch.bfloat16
    ).eval()
    notes: list[str] = []
    sessions, why = _ort_peer(folder, s, notes)
    ref_h, ref_p = dhian_encode(model, s)
    runs: list[tuple[str, Any, Any, str]] = [
        ("dhian-fp32", model, dhian_encode, "fp32"),
        ("hf-fp32", hf, hf_encode, "fp32"),
        ("dhian-bf16", model16, dhian_encode, "bf16"),
        ("dhian-bf16-plain", model16_plain, dhian_encode, "bf16"),
        ("hf-bf16", hf16, hf_encode, "bf16"),
        ("dhian-int8", model8, dhian_encode, "fp32"),
        ("dhian-int8-dynamic", model8_dynamic, dhian_encode, "fp32"),
    ]
    runs += [(f"ort-{tag}", sess, ort_encode, "fp32") for tag, sess in sessions.items()]
    for name, m, fn, _ in runs[1:]:
        h, p = fn(m, s)
        notes.append(
            f"{name} vs dhian-fp32: last hidden max abs diff {float((h - ref_h).abs().max()):.2e}"
            f", relative error {rel_error(h, ref_h):.2e}; pooled relative error "
            f"{rel_error(p, ref_p):.2e}"
        )
    flops = bert_flops(s)
    notes.append(
        "Same inputs and outputs for all (last hidden states and pooled [CLS]); FLOPs are the "
        "same analytic count for all; int8 contenders are compared with the fp32 matmul peak. "
        "dhian int8: fused oneDNN encoder layers (per-row int8 weights, dynamic per-tensor uint8 "
        "activations, GELU and residual adds fused into the GEMMs); dhian-int8-dynamic: "
        "torch.ao dynamic quantization of every linear incl. the fused QKV; ORT int8: "
        "per-tensor int8 weights (quantize_dynamic defaults), QAttention. With 2+ threads every "
        "dhian contender splits the batch across single-threaded workers "
        "(dhian.nn.batch_parallel, as the CLI does); HF and ORT use their intra-op threads."
    )
    if not bf16_native():
        notes.append(
            "bf16 not native here (no avx512_bf16/amx_bf16): bf16 GEMMs are emulated and "
            "dhian-bf16 keeps the plain bf16 model; the bf16 goal applies to CPUs with bf16."
        )

    def contender(name: str, m: Any, fn: Any, dtype: str) -> Contender:
        def run() -> int:
            fn(m, s)
            return s.batch

        return Contender(name, run, flops, dtype)

    return Setup(
        [contender(*r) for r in runs],
        [
            ("dhian-fp32", "hf-fp32"),
            ("dhian-bf16", "hf-bf16"),
            ("dhian-int8", "ort-int8"),
            ("dhian-fp32", "ort-fp32"),
            ("dhian-int8", "dhian-int8-dynamic"),
            ("dhian-bf16", "dhian-bf16-plain"),
        ],
        f"BERT encoder, {s.batch} sentences x {s.length} tokens -> last hidden states + pooled "
        f"output; {s.layers} layers, E {s.d}, {s.heads} heads, ff {s.ff}, vocab {s.vocab:,}, "
        "random weights shared by dhian, HF BertModel (sdpa; export_hf_bert) and ONNX Runtime "
        f"(torch.onnx.export of that HF model); {flops / 1e9:.1f} GFLOP per run.",
        notes,
        unavailable={} if why is None else {"ort-fp32": why, "ort-int8": why},
    )


register(Scenario("bert-base-32x128", "sent/s", build))
