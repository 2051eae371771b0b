"""HuggingFace MarianMT export and import for :class:`~dhian.models.transformer.TransformerSeq2Seq`.

Owns the mapping between dhian's transformer and HF's ``MarianMTModel`` directory format:
``config.json`` (MarianConfig fields), ``generation_config.json``, ``model.safetensors`` (Marian
parameter names) and the tokenizer files. Weights-only, safetensors only: pickled
``pytorch_model.bin`` files are refused, never unpickled. Needs neither ``transformers`` nor
network access; the round trip through ``MarianMTModel.from_pretrained`` is tested when
``transformers`` is installed.

A Marian model is a post-norm transformer with HF Marian's split sinusoidal positions
(sin half, then cos half), LayerNorm eps 1e-5, biases in every projection, optional √E
embedding scale, shared source/target embeddings and output projection (``tie_word_embeddings``)
and a ``final_logits_bias``. A dhian config exports when it has ``norm: post``,
``positions: sinusoidal_marian`` and ``layer_norm_eps: 1e-5``; any other is refused with the
setting to change. Activations: relu, gelu, gelu_new, silu (Marian's ``swish``).

Special ids: the decoder starts with our BOS (``decoder_start_token_id`` = bos), where genuine
Marian models start with PAD; an imported model keeps the checkpoint's ids (``bos_id`` =
its ``decoder_start_token_id``). Tokenizers: Marian ships sentencepiece models
(``source.spm``/``target.spm``) read by ``MarianTokenizer``; dhian's tokenizers are HF
``tokenizers`` models, so the export writes ``tokenizer.json`` (+ ``dhian_tokenizer.json``,
``vocab.json``, and a ``tokenizer_config.json`` naming ``PreTrainedTokenizerFast``):
``AutoTokenizer`` and :func:`dhian.text.load_tokenizer` read them, ``MarianTokenizer`` cannot.
A separate target tokenizer goes to ``target_tokenizer/``. The weights and config are the real
interop.

Notation: E model dim, V vocab, L layers. Imports: stdlib, torch, safetensors,
:mod:`dhian.models`, :mod:`dhian.errors`; :mod:`dhian.text` lazily (reading tokenizers).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from dhian.errors import ConfigError, ModelLoadError
from dhian.models.configs import TransformerConfig
from dhian.models.transformer import TransformerSeq2Seq, build_transformer

__all__ = ["MarianImport", "export_marian", "import_marian", "load_marian", "marian_config"]

WEIGHTS = "model.safetensors"
_TOP_LEVEL = ("lm_head.weight", "final_logits_bias")
TARGET_TOKENIZER = "target_tokenizer"
_ACT_TO_HF = {"relu": "relu", "gelu": "gelu", "gelu_new": "gelu_new", "silu": "swish"}
_ACT_FROM_HF = {
    "relu": "relu",
    "gelu": "gelu",
    "gelu_new": "gelu_new",
    "swish": "silu",
    "silu": "silu",
}
# dhian block parameter → Marian layer parameter (attention projections are handled apart).
_ENC_NAMES = {
    "self_attn.out_proj": "self_attn.out_proj",
    "norm1": "self_attn_layer_norm",
    "ff.linear1": "fc1",
    "ff.linear2": "fc2",
    "norm2": "final_layer_norm",
}
_DEC_NAMES = {
    "self_attn.out_proj": "self_attn.out_proj",
    "norm1": "self_attn_layer_norm",
    "cross_attn.out_proj": "encoder_attn.out_proj",
    "norm2": "encoder_attn_layer_norm",
    "ff.linear1": "fc1",
    "ff.linear2": "fc2",
    "norm3": "final_layer_norm",
}
_ATTN = {
    "encoder": {"self_attn": "self_attn"},
    "decoder": {"self_attn": "self_attn", "cross_attn": "encoder_attn"},
}


@dataclasses.dataclass
class MarianImport:
    """What :func:`load_marian` read: the ``model`` (eval mode), its dhian ``config``, the
    ``build_kwargs`` that rebuild it with :func:`dhian.models.build_model` (vocab sizes and
    special ids), and ``tokenizers`` (``{"src", "tgt"}``) when the dir holds dhian-readable ones."""

    model: TransformerSeq2Seq
    config: TransformerConfig
    build_kwargs: dict[str, int]
    tokenizers: dict[str, Any] | None


# --------------------------------------------------------------------------- export


def _check_exportable(cfg: TransformerConfig) -> None:
    problems = []
    if cfg.norm != "post":
        problems.append("model.norm: post (Marian is post-norm)")
    if cfg.positions != "sinusoidal_marian":
        problems.append("model.positions: sinusoidal_marian (Marian's split sin|cos table)")
    if abs(cfg.layer_norm_eps - 1e-5) > 1e-12:
        problems.append("model.layer_norm_eps: 1e-5 (fixed in HF Marian)")
    if cfg.activation not in _ACT_TO_HF:
        problems.append(f"model.activation: one of {', '.join(_ACT_TO_HF)}")
    if problems:
        raise ConfigError("cannot export to Marian; train with " + "; ".join(problems))


def _marian_state(model: TransformerSeq2Seq, cfg: TransformerConfig) -> dict[str, Tensor]:
    """Our state dict renamed to MarianMTModel's parameter names (every tied copy written)."""
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
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
    for side, names in (("encoder", _ENC_NAMES), ("decoder", _DEC_NAMES)):
        for i in range(len(getattr(model, side))):
            ours, theirs = f"{side}.{i}.", f"model.{side}.layers.{i}."
            for a, b in names.items():
                for p in ("weight", "bias"):
                    out[f"{theirs}{b}.{p}"] = sd[f"{ours}{a}.{p}"]
            for a, b in _ATTN[side].items():
                qw, kw, vw = sd[f"{ours}{a}.in_proj_weight"].split(e)  # 3 x (E, E)
                qb, kb, vb = sd[f"{ours}{a}.in_proj_bias"].split(e)  # 3 x (E,)
                for name, w, bb in (("q", qw, qb), ("k", kw, kb), ("v", vw, vb)):
                    out[f"{theirs}{b}.{name}_proj.weight"] = w
                    out[f"{theirs}{b}.{name}_proj.bias"] = bb
    return {k: v.contiguous().clone() for k, v in out.items()}


def _hf_config(model: TransformerSeq2Seq, cfg: TransformerConfig) -> dict[str, Any]:
    src_v = model.src_embed.num_embeddings
    tgt_v = model.tgt_embed.num_embeddings
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
        "activation_function": _ACT_TO_HF[cfg.activation],
        "dropout": cfg.dropout,
        "attention_dropout": cfg.attn_dropout,
        "activation_dropout": cfg.activation_dropout,
        "init_std": 0.02,
        "scale_embedding": cfg.scale_embedding,
        "share_encoder_decoder_embeddings": cfg.share_embeddings,
        "tie_word_embeddings": cfg.tie_embeddings,
        "is_encoder_decoder": True,
        "use_cache": True,
        "pad_token_id": model.pad_id,
        "eos_token_id": model.eos_id,
        "bos_token_id": model.bos_id,
        "decoder_start_token_id": model.bos_id,
        "forced_eos_token_id": model.eos_id,
        "dtype": "float32",
    }


def _generation_config(model: TransformerSeq2Seq) -> dict[str, Any]:
    banned = sorted({model.pad_id, model.bos_id} - {model.eos_id})  # as dhian.decoding does
    return {
        "bad_words_ids": [[i] for i in banned],
        "bos_token_id": model.bos_id,
        "decoder_start_token_id": model.bos_id,
        "eos_token_id": model.eos_id,
        "forced_eos_token_id": model.eos_id,
        "pad_token_id": model.pad_id,
        "max_length": min(512, model.max_positions),
    }


def _write_tokenizer(tok: Any, directory: Path, model: TransformerSeq2Seq) -> None:
    tok.save(directory)  # tokenizer.json + dhian_tokenizer.json
    hf = getattr(tok, "hf", None)
    vocab = hf.get_vocab() if hf is not None else {}
    ordered = dict(sorted(vocab.items(), key=lambda kv: kv[1]))
    (directory / "vocab.json").write_text(
        json.dumps(ordered, ensure_ascii=False, indent=0) + "\n", encoding="utf-8"
    )
    by_id = {i: t for t, i in vocab.items()}
    tok_cfg: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": model.max_positions,
    }
    for role, tid in (("pad", model.pad_id), ("eos", model.eos_id), ("bos", model.bos_id)):
        if tid in by_id:
            tok_cfg[f"{role}_token"] = by_id[tid]
    unk = getattr(tok, "unk_id", None)
    if isinstance(unk, int) and unk in by_id:
        tok_cfg["unk_token"] = by_id[unk]
    (directory / "tokenizer_config.json").write_text(
        json.dumps(tok_cfg, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )


def export_marian(
    model: TransformerSeq2Seq, cfg: Any, tokenizers: Any, out_dir: str | Path
) -> Path:
    """Write ``model`` as a HuggingFace MarianMT directory ``out_dir`` (created if needed).

    ``cfg``: the model's :class:`TransformerConfig` (or a RunConfig holding it). ``tokenizers``:
    one tokenizer, ``{"src": ..., "tgt": ...}`` or None (weights and config only). Afterwards
    ``transformers.MarianMTModel.from_pretrained(out_dir)`` gives the same logits as ``model``.
    """
    cfg = getattr(cfg, "model", cfg)
    if not isinstance(cfg, TransformerConfig):
        raise ConfigError(f"export_marian needs a TransformerConfig, got {type(cfg).__name__}")
    if not isinstance(model, TransformerSeq2Seq):
        raise ConfigError(f"export_marian needs a TransformerSeq2Seq, got {type(model).__name__}")
    _check_exportable(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(_marian_state(model, cfg), str(out / WEIGHTS), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(_hf_config(model, cfg), indent=2) + "\n")
    (out / "generation_config.json").write_text(
        json.dumps(_generation_config(model), indent=2) + "\n"
    )
    if tokenizers is not None:
        if isinstance(tokenizers, Mapping):
            src = tokenizers.get("src") or tokenizers.get("tgt")
            tgt = tokenizers.get("tgt") or src
        else:
            src = tgt = tokenizers
        _write_tokenizer(src, out, model)
        if tgt is not src:
            _write_tokenizer(tgt, out / TARGET_TOKENIZER, model)
    return out


# --------------------------------------------------------------------------- import


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {path} as JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} must hold a JSON object")
    return data


def _read_weights(directory: Path) -> dict[str, Tensor]:
    files = [directory / WEIGHTS]
    index = directory / "model.safetensors.index.json"
    if not files[0].is_file() and index.is_file():
        weight_map = _read_json(index).get("weight_map", {})
        files = [directory / f for f in sorted(set(weight_map.values()))]
    if not all(f.is_file() for f in files):
        pickles = [p.name for p in directory.glob("*.bin")]
        hint = (
            f" (it has pickled {', '.join(sorted(pickles))}, which dhian never unpickles; "
            "convert it to safetensors first)"
            if pickles
            else ""
        )
        raise ModelLoadError(f"{directory} has no {WEIGHTS}{hint}")
    state: dict[str, Tensor] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as fh:
                for key in fh.keys():  # noqa: SIM118 - safe_open is not a Mapping
                    state[key] = fh.get_tensor(key).float()
        except Exception as exc:  # safetensors raises several types for a corrupt file
            raise ModelLoadError(f"{f} is not a readable safetensors file: {exc}") from exc
    return state


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
    if act not in _ACT_FROM_HF:
        raise ModelLoadError(
            f"unsupported Marian activation {act!r}; supported: {', '.join(_ACT_FROM_HF)}"
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
        activation=_ACT_FROM_HF[act],
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


def _our_state(
    hf: dict[str, Tensor], model: TransformerSeq2Seq, cfg: TransformerConfig
) -> dict[str, Tensor]:
    """MarianMTModel tensors → our state dict (tied copies resolved)."""
    if not any(k.startswith("model.") for k in hf):  # saved from MarianModel (no LM head)
        hf = {k if k in _TOP_LEVEL else f"model.{k}": v for k, v in hf.items()}
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
    for side, names in (("encoder", _ENC_NAMES), ("decoder", _DEC_NAMES)):
        for i in range(len(getattr(model, side))):
            ours, theirs = f"{side}.{i}.", f"model.{side}.layers.{i}."
            for a, b in names.items():
                for p in ("weight", "bias"):
                    sd[f"{ours}{a}.{p}"] = take(f"{theirs}{b}.{p}")
            for a, b in _ATTN[side].items():
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


def load_marian(directory: str | Path) -> MarianImport:
    """Read a MarianMT directory (``config.json`` + ``model.safetensors``) into dhian."""
    d = Path(directory)
    if not (d / "config.json").is_file():
        raise ModelLoadError(f"{d} has no config.json; is it a HuggingFace Marian model dir?")
    cfg, kwargs = marian_config(_read_json(d / "config.json"))
    model = build_transformer(
        cfg,
        kwargs["src_vocab_size"],
        kwargs["tgt_vocab_size"],
        pad_id=kwargs["pad_id"],
        bos_id=kwargs["bos_id"],
        eos_id=kwargs["eos_id"],
    )
    state = _our_state(_read_weights(d), model, cfg)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(
            f"Marian weights in {d} do not fit its config.json: {str(exc).splitlines()[0]}"
        ) from exc
    model.eval()
    tokenizers = None
    if (d / "dhian_tokenizer.json").is_file():
        from dhian.text import load_tokenizer

        src = load_tokenizer(d)
        tgt = load_tokenizer(d / TARGET_TOKENIZER) if (d / TARGET_TOKENIZER).is_dir() else src
        tokenizers = {"src": src, "tgt": tgt}
    return MarianImport(model, cfg, kwargs, tokenizers)


def import_marian(directory: str | Path) -> TransformerSeq2Seq:
    """The model of a MarianMT directory (eval mode); see :func:`load_marian` for the rest."""
    return load_marian(directory).model
