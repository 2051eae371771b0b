"""Names and configs of HuggingFace MarianMT checkpoints ↔ dhian's transformer (no file I/O).

Owns the parameter-name tables (dhian ``encoder.{i}.norm1`` ↔ Marian
``model.encoder.layers.{i}.self_attn_layer_norm`` ..., fused ``in_proj`` (3E, E) ↔ separate
q/k/v projections), the activation names, the export checks, ``config.json`` /
``generation_config.json`` ↔ :class:`~dhian.models.transformer.config.TransformerConfig`, and the state-dict
conversion in both directions. Used by :mod:`dhian.interop.hf_marian`, which reads and writes the
directory.

The export's id order (:func:`export_order`): Marian vocabularies end with ``<pad>`` and
CTranslate2's Marian converter relies on it — it drops the last vocabulary token only when it
is ``<pad>`` but always drops the last embedding and output row. dhian's trained tokenizers
have ``<pad>`` at id 0, so the export moves PAD to the last id (every other id shifts down by
one) in the embeddings, output projection, bias and special ids; :mod:`dhian.interop.hf_marian`
renumbers the tokenizer the same way. Models whose decoder starts from a zero vector
(``start_from_zero``) get ``decoder_start_token_id`` = PAD with a zero PAD row, which is how
HF Marian expresses that start; others keep BOS.

Notation: E model dim, V vocab.
Imports: stdlib, torch, :mod:`dhian.models`, :mod:`dhian.errors`,
:func:`dhian.text.pad_last_order`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from dhian.errors import ConfigError, ModelLoadError
from dhian.models.transformer.config import TransformerConfig
from dhian.models.transformer.model import TransformerSeq2Seq
from dhian.text import pad_last_order

__all__ = [
    "ACT_FROM_HF",
    "ACT_TO_HF",
    "ATTN",
    "DEC_NAMES",
    "ENC_NAMES",
    "TOP_LEVEL",
    "check_exportable",
    "export_ids",
    "export_order",
    "generation_config",
    "hf_config",
    "marian_config",
    "marian_state",
    "our_state",
]

TOP_LEVEL = ("lm_head.weight", "final_logits_bias")
ACT_TO_HF = {"relu": "relu", "gelu": "gelu", "gelu_new": "gelu_new", "silu": "swish"}
ACT_FROM_HF = {
    "relu": "relu",
    "gelu": "gelu",
    "gelu_new": "gelu_new",
    "swish": "silu",
    "silu": "silu",
}
# dhian block parameter → Marian layer parameter (attention projections are handled apart).
ENC_NAMES = {
    "self_attn.out_proj": "self_attn.out_proj",
    "norm1": "self_attn_layer_norm",
    "ff.linear1": "fc1",
    "ff.linear2": "fc2",
    "norm2": "final_layer_norm",
}
DEC_NAMES = {
    "self_attn.out_proj": "self_attn.out_proj",
    "norm1": "self_attn_layer_norm",
    "cross_attn.out_proj": "encoder_attn.out_proj",
    "norm2": "encoder_attn_layer_norm",
    "ff.linear1": "fc1",
    "ff.linear2": "fc2",
    "norm3": "final_layer_norm",
}
ATTN = {
    "encoder": {"self_attn": "self_attn"},
    "decoder": {"self_attn": "self_attn", "cross_attn": "encoder_attn"},
}


# --------------------------------------------------------------------------- dhian -> Marian


def check_exportable(cfg: TransformerConfig) -> None:
    """Raise :class:`~dhian.errors.ConfigError` naming every setting Marian cannot express."""
    problems = []
    if cfg.norm != "post":
        problems.append("model.norm: post (Marian is post-norm)")
    if cfg.positions != "sinusoidal_marian":
        problems.append("model.positions: sinusoidal_marian (Marian's split sin|cos table)")
    if abs(cfg.layer_norm_eps - 1e-5) > 1e-12:
        problems.append("model.layer_norm_eps: 1e-5 (fixed in HF Marian)")
    if cfg.activation not in ACT_TO_HF:
        problems.append(f"model.activation: one of {', '.join(ACT_TO_HF)}")
    if problems:
        raise ConfigError("cannot export to Marian; train with " + "; ".join(problems))


def export_order(model: TransformerSeq2Seq) -> list[int] | None:
    """The exported id order (new id → dhian id) with PAD last, or None (ids kept) when source
    and target vocabularies differ in size — HF Marian has one ``pad_token_id`` for both, and
    CTranslate2 converts joint vocabularies only."""
    v = model.src_embed.num_embeddings
    if v != model.tgt_embed.num_embeddings:
        return None
    return pad_last_order(v, model.pad_id)


def export_ids(model: TransformerSeq2Seq) -> dict[str, int]:
    """The exported special ids: ``pad``, ``bos``, ``eos`` renumbered by :func:`export_order`
    and ``start`` (``decoder_start_token_id``: PAD for a zero start, else BOS)."""
    order = export_order(model)
    new = {old: n for n, old in enumerate(order)} if order is not None else {}
    dhian_ids = {"pad": model.pad_id, "bos": model.bos_id, "eos": model.eos_id}
    ids = {role: new.get(i, i) for role, i in dhian_ids.items()}
    ids["start"] = ids["pad"] if model.start_from_zero else ids["bos"]
    return ids


def marian_state(model: TransformerSeq2Seq, cfg: TransformerConfig) -> dict[str, Tensor]:
    """Our state dict renamed to MarianMTModel's parameter names (every tied copy written), in
    the id order of :func:`export_order`; the PAD row zero when the decoder starts from it."""
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    order = export_order(model)
    if order is not None:
        index = torch.tensor(order)
        for key in ("src_embed.weight", "tgt_embed.weight", "output.weight", "output.bias"):
            if key in sd:
                sd[key] = sd[key].index_select(0, index)  # (V, ...) rows in the new order
    if model.start_from_zero:
        pad = export_ids(model)["pad"]
        keys = ["tgt_embed.weight"]
        keys += ["src_embed.weight"] if cfg.share_embeddings else []
        keys += ["output.weight"] if cfg.tie_embeddings else []
        for key in keys:
            sd[key] = sd[key].clone()
            sd[key][pad] = 0.0  # HF Marian's decoder starts from this row: a zero vector
    e = model.embed_dim
    out: dict[str, Tensor] = {}
    src, tgt = sd["src_embed.weight"], sd["tgt_embed.weight"]
    if cfg.share_embeddings:
        out["model.shared.weight"] = src
    out["model.encoder.embed_tokens.weight"] = src
    out["model.decoder.embed_tokens.weight"] = tgt
    out["lm_head.weight"] = sd["output.weight"]
    bias = sd.get("output.bias")
    out["final_logits_bias"] = (
        bias[None] if bias is not None else torch.zeros(1, tgt.size(0))
    )  # (V,) -> (1, V)
    for side, names in (("encoder", ENC_NAMES), ("decoder", DEC_NAMES)):
        for i in range(len(getattr(model, side))):
            ours, theirs = f"{side}.{i}.", f"model.{side}.layers.{i}."
            for a, b in names.items():
                for p in ("weight", "bias"):
                    out[f"{theirs}{b}.{p}"] = sd[f"{ours}{a}.{p}"]
            for a, b in ATTN[side].items():
                qw, kw, vw = sd[f"{ours}{a}.in_proj_weight"].split(e)  # 3 x (E, E)
                qb, kb, vb = sd[f"{ours}{a}.in_proj_bias"].split(e)  # 3 x (E,)
                for name, w, bb in (("q", qw, qb), ("k", kw, kb), ("v", vw, vb)):
                    out[f"{theirs}{b}.{name}_proj.weight"] = w
                    out[f"{theirs}{b}.{name}_proj.bias"] = bb
    return {k: v.contiguous().clone() for k, v in out.items()}


def hf_config(model: TransformerSeq2Seq, cfg: TransformerConfig) -> dict[str, Any]:
    """The MarianConfig fields (``config.json``) of ``model`` built from ``cfg``."""
    src_v = model.src_embed.num_embeddings
    tgt_v = model.tgt_embed.num_embeddings
    ids = export_ids(model)
    return {
        "architectures": ["MarianMTModel"],
        "model_type": "marian",
        "vocab_size": src_v,
        "decoder_vocab_size": tgt_v,
        "max_position_embeddings": model.max_positions,
        "d_model": model.embed_dim,
        "encoder_layers": len(model.encoder),
        "decoder_layers": len(model.decoder),
        "encoder_attention_heads": cfg.num_heads,
        "decoder_attention_heads": cfg.num_heads,
        "encoder_ffn_dim": cfg.ff_dim,
        "decoder_ffn_dim": cfg.ff_dim,
        "encoder_layerdrop": 0.0,
        "decoder_layerdrop": 0.0,
        "activation_function": ACT_TO_HF[cfg.activation],
        "dropout": cfg.dropout,
        "attention_dropout": cfg.attn_dropout,
        "activation_dropout": cfg.activation_dropout,
        "init_std": 0.02,
        "scale_embedding": cfg.scale_embedding,
        "share_encoder_decoder_embeddings": cfg.share_embeddings,
        "tie_word_embeddings": cfg.tie_embeddings,
        "is_encoder_decoder": True,
        "use_cache": True,
        "pad_token_id": ids["pad"],
        "eos_token_id": ids["eos"],
        "bos_token_id": ids["bos"],
        "decoder_start_token_id": ids["start"],
        "forced_eos_token_id": ids["eos"],
        "dtype": "float32",
    }


def generation_config(model: TransformerSeq2Seq) -> dict[str, Any]:
    """``generation_config.json``: the exported special ids and the tokens decoding never emits."""
    ids = export_ids(model)
    banned = sorted({ids["pad"], ids["bos"]} - {ids["eos"]})  # as dhian.decoding does
    return {
        "bad_words_ids": [[i] for i in banned],
        "bos_token_id": ids["bos"],
        "decoder_start_token_id": ids["start"],
        "eos_token_id": ids["eos"],
        "forced_eos_token_id": ids["eos"],
        "pad_token_id": ids["pad"],
        "max_length": min(512, model.max_positions),
    }


# --------------------------------------------------------------------------- Marian -> dhian


def marian_config(hf: Mapping[str, Any]) -> tuple[TransformerConfig, dict[str, int]]:
    """A MarianConfig dict (``config.json``) → (dhian config, build kwargs: vocab sizes + ids)."""
    if hf.get("model_type", "marian") != "marian":
        raise ModelLoadError(f"config.json describes a {hf.get('model_type')!r} model, not marian")
    d = dict(hf)
    for a, b in (
        ("encoder_attention_heads", "decoder_attention_heads"),
        ("encoder_ffn_dim", "decoder_ffn_dim"),
    ):
        if d.get(a, 16) != d.get(b, d.get(a, 16)):
            raise ModelLoadError(
                f"dhian's transformer needs {a} == {b}, got {d.get(a)} and {d.get(b)}"
            )
    act = str(d.get("activation_function", "gelu"))
    if act not in ACT_FROM_HF:
        raise ModelLoadError(
            f"unsupported Marian activation {act!r}; supported: {', '.join(ACT_FROM_HF)}"
        )
    cfg = TransformerConfig(
        embed_dim=int(d.get("d_model", 1024)),
        num_heads=int(d.get("encoder_attention_heads", 16)),
        ff_dim=int(d.get("encoder_ffn_dim", 4096)),
        enc_layers=int(d.get("encoder_layers", 12)),
        dec_layers=int(d.get("decoder_layers", 12)),
        dropout=float(d.get("dropout", 0.1)),
        attn_dropout=float(d.get("attention_dropout", 0.0)),
        activation_dropout=float(d.get("activation_dropout", 0.0)),
        activation=ACT_FROM_HF[act],
        norm="post",
        positions="sinusoidal_marian",
        max_positions=int(d.get("max_position_embeddings", 1024)),
        share_embeddings=bool(d.get("share_encoder_decoder_embeddings", True)),
        tie_embeddings=bool(d.get("tie_word_embeddings", True)),
        scale_embedding=bool(d.get("scale_embedding", False)),
        output_bias=True,
    )
    vocab = int(d.get("vocab_size", 58101))
    eos = d.get("eos_token_id", 0)
    pad = int(d.get("pad_token_id", 58100) if d.get("pad_token_id") is not None else 58100)
    start = d.get("decoder_start_token_id")
    kwargs = {
        "src_vocab_size": vocab,
        "tgt_vocab_size": vocab
        if cfg.share_embeddings
        else int(d.get("decoder_vocab_size") or vocab),
        "pad_id": pad,
        "bos_id": int(start) if start is not None else pad,
        "eos_id": int(eos[0] if isinstance(eos, list) else eos),
    }
    return cfg, kwargs


def our_state(
    hf: dict[str, Tensor], model: TransformerSeq2Seq, cfg: TransformerConfig
) -> dict[str, Tensor]:
    """MarianMTModel tensors → our state dict (tied copies resolved)."""
    if not any(k.startswith("model.") for k in hf):  # saved from MarianModel (no LM head)
        hf = {k if k in TOP_LEVEL else f"model.{k}": v for k, v in hf.items()}
    used: set[str] = set()

    def take(*names: str) -> Tensor:
        for n in names:
            if n in hf:
                used.add(n)
                return hf[n]
        raise ModelLoadError(f"Marian checkpoint has none of {', '.join(names)}")

    sd: dict[str, Tensor] = {}
    shared = ("model.shared.weight",) if cfg.share_embeddings else ()
    sd["src_embed.weight"] = take("model.encoder.embed_tokens.weight", *shared)
    sd["tgt_embed.weight"] = (
        sd["src_embed.weight"]
        if cfg.share_embeddings
        else take("model.decoder.embed_tokens.weight", "lm_head.weight")
    )
    if cfg.tie_embeddings:
        sd["output.weight"] = sd["tgt_embed.weight"]
    else:
        sd["output.weight"] = take("lm_head.weight")
    vt = sd["output.weight"].size(0)
    sd["output.bias"] = (
        hf["final_logits_bias"].reshape(vt) if "final_logits_bias" in hf else torch.zeros(vt)
    )  # (1, V) -> (V,)
    e = model.embed_dim
    for side, names in (("encoder", ENC_NAMES), ("decoder", DEC_NAMES)):
        for i in range(len(getattr(model, side))):
            ours, theirs = f"{side}.{i}.", f"model.{side}.layers.{i}."
            for a, b in names.items():
                for p in ("weight", "bias"):
                    sd[f"{ours}{a}.{p}"] = take(f"{theirs}{b}.{p}")
            for a, b in ATTN[side].items():
                w = [take(f"{theirs}{b}.{n}_proj.weight") for n in "qkv"]
                bs = [take(f"{theirs}{b}.{n}_proj.bias") for n in "qkv"]
                sd[f"{ours}{a}.in_proj_weight"] = torch.cat(w, 0)  # 3 x (E, E) -> (3E, E)
                sd[f"{ours}{a}.in_proj_bias"] = torch.cat(bs, 0)  # 3 x (E,) -> (3E,)
                assert sd[f"{ours}{a}.in_proj_weight"].shape == (3 * e, e)
    ignorable = {
        "final_logits_bias",
        "model.shared.weight",
        "model.encoder.embed_tokens.weight",
        "model.decoder.embed_tokens.weight",
        "lm_head.weight",
    }
    left = sorted(
        k for k in hf if k not in used and k not in ignorable and "embed_positions" not in k
    )
    if left:
        raise ModelLoadError(
            f"Marian checkpoint has parameters dhian cannot map: {', '.join(left[:5])}"
        )
    return sd
