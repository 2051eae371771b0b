"""Training-step scenario: one optimizer update of a 6+6-layer d512 transformer.

``train-6x6-d512``: the transformer-base shape (6+6 post-norm layers, d_model 512, 8 heads,
ff 2048, swish, shared + tied embeddings, vocab 32,000) with random weights, trained on a fixed
batch of 16 sentence pairs of 48 source and 48 target tokens (768 target tokens) exactly as the
engine does it (:meth:`dhian.train.trainer.Trainer._train_step`): forward, label-smoothed
(0.1) summed cross entropy divided by the token count, backward, gradient clipping at 1.0, fused
AdamW (:func:`dhian.train.optim.build_optimizer`), in fp32 and under bf16 autocast — the
engine's own code path (:func:`dhian.train.tasks.token_loss`, whose chunked cross entropy and the
float32 SDPA of bf16 training are what the trainer runs). On a CPU without bf16 instructions
(:func:`bench.harness.bf16_native`) dhian-bf16 is not run: the report says "bf16 not native here"
instead of a dhian-bf16/dhian-fp32 ratio. The peer is
HF ``MarianMTModel`` loaded from the export of the very same weights
(:func:`dhian.interop.hf_marian.export_marian`), doing the same update with the same loss,
clipping and fused AdamW. Throughput: target tokens per second.

FLOPs: the training step is credited 3x the forward matmul FLOPs (forward, then the gradients
with respect to activations and to weights), the forward counted as in :mod:`bench.decode`
(linear layers + attention products; norms, softmaxes, the loss and the optimizer update are
not counted). ``mfu-fp32`` = dhian-fp32's achieved GFLOP/s / the fp32 matmul peak measured
in the same run (model FLOPs utilisation; reported with the ratios). ``--quick``: a tiny shape.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from bench.decode import Shape, build_pair
from bench.harness import Contender, Scenario, Setup, bf16_native, register
from dhian.config import TrainConfig
from dhian.train.optim import autocast, build_optimizer
from dhian.train.tasks import token_loss


@dataclasses.dataclass(frozen=True)
class TrainShape:
    """``model`` (its ``src_len``/``out_len`` are the pair lengths) and the label smoothing."""

    model: Shape
    smoothing: float = 0.1


FULL = TrainShape(
    Shape(layers=6, d=512, heads=8, ff=2048, vocab=32000, batch=16, src_len=48, out_len=48)
)
QUICK = TrainShape(Shape(layers=2, d=32, heads=4, ff=64, vocab=101, batch=4, src_len=7, out_len=8))


#: what the report says instead of a bf16/fp32 ratio on a CPU without bf16 instructions
BF16_NOT_NATIVE = "bf16 not native here"


def batch(s: Shape, seed: int = 2) -> dict[str, Tensor]:
    """A fixed batch: ``src`` (B, Ts), ``lengths`` (B,), ``tgt_in``/``tgt_out`` (B, Tt) random
    non-special ids (7 .. V - 2; PAD = V - 1 as in Marian), ``mask`` (B, Ts) for HF."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(7, s.vocab - 1, (s.batch, s.src_len), generator=g)
    tgt = torch.randint(7, s.vocab - 1, (s.batch, s.out_len + 1), generator=g)
    return {
        "src": src,
        "lengths": torch.full((s.batch,), s.src_len, dtype=torch.long),
        "mask": torch.ones_like(src),
        "tgt_in": tgt[:, :-1],  # (B, Tt)
        "tgt_out": tgt[:, 1:],  # (B, Tt)
    }


def train_flops(s: Shape) -> float:
    """3 x the forward matmul FLOPs of one batch (see the module docstring)."""
    e, f, v, n = s.d, s.ff, s.vocab, s.layers
    b, ts, tt = s.batch, s.src_len, s.out_len
    linear = b * ts * n * (4 * e * e + 2 * e * f)  # encoder
    linear += b * ts * n * 2 * e * e  # cross-attention keys/values
    linear += b * tt * (n * (6 * e * e + 2 * e * f) + e * v)  # decoder + output layer
    attn = b * n * 2 * ts * ts * e  # encoder self-attention (q.k and weights.v)
    attn += b * n * (2 * tt * tt * e + 2 * tt * ts * e)  # decoder self + cross
    return 3 * 2.0 * (linear + attn)


def _optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    cfg = TrainConfig(lr=1e-5, betas=(0.9, 0.98), eps=1e-9, weight_decay=1e-4)
    return build_optimizer(model, cfg)


def make_step(
    model: torch.nn.Module,
    logits_fn: Callable[[torch.nn.Module, dict[str, Tensor]], Tensor],
    data: dict[str, Tensor],
    smoothing: float,
    bf16: bool = False,
) -> Callable[[], float]:
    """One engine-style update of ``model`` on ``data``; returns the mean loss."""
    model.train()
    opt = _optimizer(model)
    params = [p for p in model.parameters() if p.requires_grad]
    count = int(data["tgt_out"].numel())
    device = torch.device("cpu")

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with autocast(device, bf16):
            logits = logits_fn(model, data)  # (B, Tt, V)
            terms = token_loss(logits, data["tgt_out"], -100, smoothing)
        (terms.loss.float() / count).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return float(terms.loss.detach()) / count

    return step


def dhian_logits(model: torch.nn.Module, d: dict[str, Tensor]) -> Tensor:
    return model(d["src"], d["lengths"], d["tgt_in"]).logits  # (B, Tt, V)


def hf_logits(model: torch.nn.Module, d: dict[str, Tensor]) -> Tensor:
    out: Any = model(input_ids=d["src"], attention_mask=d["mask"], decoder_input_ids=d["tgt_in"])
    return out.logits  # (B, Tt, V)


def build(quick: bool) -> Setup:
    """dhian fp32 / bf16 autocast and HF Marian fp32 training steps on the same weights."""
    ts = QUICK if quick else FULL
    s = ts.model
    model, hf, _ = build_pair(s)
    model.eval()  # dropout is 0 in this config; eval() only for the first loss comparison
    data = batch(s)
    with torch.no_grad():
        ours = token_loss(dhian_logits(model, data), data["tgt_out"], -100, ts.smoothing)
        theirs = token_loss(hf_logits(hf.eval(), data), data["tgt_out"], -100, ts.smoothing)
    first = (float(ours.loss), float(theirs.loss))
    count = int(data["tgt_out"].numel())
    notes = [
        f"same weights, first loss: dhian {first[0] / count:.6f}, HF {first[1] / count:.6f} "
        f"(per token, label smoothing {ts.smoothing})",
        "each timed run is one full update (forward, backward, clip, fused AdamW); the "
        "weights keep training from run to run, identically for every contender",
        "mfu-fp32 = dhian-fp32 GFLOP/s / the fp32 matmul peak of this run (3 x forward FLOPs)",
    ]
    if not math.isclose(first[0], first[1], rel_tol=1e-4):
        notes.append("WARNING: the first losses differ: the weights are not the same")
    steps = {
        "dhian-fp32": make_step(model, dhian_logits, data, ts.smoothing),
        "hf-fp32": make_step(hf, hf_logits, data, ts.smoothing),
    }
    unavailable: dict[str, str] = {}
    if bf16_native():
        steps["dhian-bf16"] = make_step(
            copy.deepcopy(model), dhian_logits, data, ts.smoothing, True
        )
    else:
        unavailable["dhian-bf16"] = (
            f"{BF16_NOT_NATIVE} (no avx512_bf16/amx_bf16): bf16 autocast would be emulated, "
            "so there is no bf16/fp32 speed ratio to report"
        )
    flops = train_flops(s)

    def contender(name: str, dtype: str) -> Contender:
        fn = steps[name]

        def run() -> int:
            loss = fn()
            if not math.isfinite(loss):
                raise RuntimeError(f"{name}: non-finite loss {loss}")
            return count

        return Contender(name, run, flops, dtype)

    return Setup(
        [contender(name, "bf16" if name.endswith("bf16") else "fp32") for name in steps],
        [("dhian-fp32", "hf-fp32"), ("dhian-bf16", "dhian-fp32")],
        f"one training update (fp32 and bf16 autocast), {s.batch} pairs x {s.src_len} source / "
        f"{s.out_len} target tokens; transformer {s.layers}+{s.layers} layers, d_model {s.d}, "
        f"{s.heads} heads, ff {s.ff}, vocab {s.vocab:,}, random weights shared by dhian and HF "
        f"MarianMTModel (export_marian); {flops / 1e9:.1f} GFLOP per update.",
        notes,
        unavailable=unavailable,
        fractions={"mfu-fp32": "dhian-fp32"},
    )


register(Scenario("train-6x6-d512", "tok/s", build))
