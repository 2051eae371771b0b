"""HF ``LlamaForCausalLM`` directories ↔ :class:`dhian.models.llama.LlamaModel`.

Owns :func:`import_hf_llama` (``config.json`` + ``model.safetensors`` [+ ``tokenizer.json``,
``tokenizer_config.json``'s chat template] → config, model, tokenizer, chat template) and
:func:`export_hf_llama` (the reverse, a directory that HF ``AutoModelForCausalLM`` and
``AutoTokenizer`` load), plus the config mapping :func:`llama_config_from_hf` /
:func:`hf_config_from_llama`. Parameter names are HF's without the ``model.`` prefix, so the
state dict maps one to one; tied embeddings have no ``lm_head.weight`` on disk. Rope theta
is read from ``rope_theta`` or transformers 5's ``rope_parameters``; rope scaling, biases and
activations other than SiLU are refused with the value named.
Imports: stdlib, torch, safetensors, tokenizers, :mod:`dhian.models.llama`,
:mod:`dhian.text.tokenizer`, :mod:`dhian.errors`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dhian.config import DataConfig, RunConfig
from dhian.errors import ModelLoadError
from dhian.interop.hf_config import check_hf_config
from dhian.models.llama.config import LlamaConfig
from dhian.models.llama.model import LlamaModel, build_llama
from dhian.models.model_dir import LoadedModel
from dhian.text.tokenizer import Tokenizer

__all__ = [
    "export_hf_llama",
    "export_loaded_llama",
    "hf_config_from_llama",
    "import_hf_llama",
    "llama_config_from_hf",
    "llama_loaded",
    "load_hf_llama",
]

_PREFIX = "model."


def _first_id(value: Any) -> int | None:
    if isinstance(value, list):
        value = value[0] if value else None
    return None if value is None else int(value)


def llama_config_from_hf(hf: dict[str, Any]) -> LlamaConfig:
    """A :class:`LlamaConfig` from an HF Llama ``config.json`` dict."""
    if hf.get("model_type", "llama") != "llama":
        raise ModelLoadError(f"config.json: model_type {hf.get('model_type')!r} is not 'llama'")
    if hf.get("hidden_act", "silu") != "silu":
        raise ModelLoadError(f"config.json: hidden_act {hf['hidden_act']!r} unsupported (silu)")
    for key in ("attention_bias", "mlp_bias"):
        if hf.get(key):
            raise ModelLoadError(f"config.json: {key}=true is not supported (LLaMA has none)")
    rope = dict(hf.get("rope_parameters") or {})
    scaling = hf.get("rope_scaling") or (
        rope if rope.get("rope_type", "default") != "default" else None
    )
    if scaling:
        raise ModelLoadError(f"config.json: rope scaling {scaling} is not supported yet")
    theta = hf.get("rope_theta") or rope.get("rope_theta") or 10000.0
    n_heads = int(hf["num_attention_heads"])
    return LlamaConfig(
        vocab_size=int(hf["vocab_size"]),
        dim=int(hf["hidden_size"]),
        n_layers=int(hf["num_hidden_layers"]),
        n_heads=n_heads,
        n_kv_heads=int(hf.get("num_key_value_heads") or n_heads),
        ffn_dim=int(hf["intermediate_size"]),
        head_dim=int(hf.get("head_dim") or 0),
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        rope_theta=float(theta),
        max_seq_len=int(hf.get("max_position_embeddings", 2048)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        bos_id=_first_id(hf.get("bos_token_id")),
        eos_id=_first_id(hf.get("eos_token_id")),
        pad_id=_first_id(hf.get("pad_token_id")),
    )


def hf_config_from_llama(cfg: LlamaConfig) -> dict[str, Any]:
    """The HF ``config.json`` dict of ``cfg``."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "intermediate_size": cfg.ffn_dim,
        "hidden_act": "silu",
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_theta": cfg.rope_theta, "rope_type": "default"},
        "max_position_embeddings": cfg.max_seq_len,
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": cfg.bos_id,
        "eos_token_id": cfg.eos_id,
        "pad_token_id": cfg.pad_id,
        "torch_dtype": "float32",
    }


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {str(path)!r} as JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{str(path)!r} must hold a JSON object")
    return data


def _tokenizer(d: Path, cfg: LlamaConfig) -> Tokenizer | None:
    if not (d / "tokenizer.json").is_file():
        return None
    from tokenizers import Tokenizer as HFTokenizer

    hf = HFTokenizer.from_file(str(d / "tokenizer.json"))
    roles: dict[str, str] = {}
    for role, tid in (("bos", cfg.bos_id), ("eos", cfg.eos_id), ("pad", cfg.pad_id)):
        token = None if tid is None else hf.id_to_token(tid)
        if token is not None:
            roles[role] = token
    return Tokenizer(hf, "bytebpe", roles)


def import_hf_llama(
    directory: str | Path,
) -> tuple[LlamaConfig, LlamaModel, Tokenizer | None, str | None]:
    """``(config, model, tokenizer | None, chat_template | None)`` of an HF Llama directory
    (``config.json`` + ``model.safetensors``; the tokenizer from ``tokenizer.json`` and the
    chat template from ``tokenizer_config.json`` when present). The model is in eval mode."""
    d = Path(directory)
    if not (d / "config.json").is_file() or not (d / "model.safetensors").is_file():
        raise ModelLoadError(
            f"{str(d)!r} is not an HF Llama directory (needs config.json and model.safetensors)"
        )
    cfg = llama_config_from_hf(
        dict(check_hf_config(_read_json(d / "config.json"), d / "config.json"))
    )
    try:
        raw = load_file(str(d / "model.safetensors"))
    except (SafetensorError, OSError) as exc:
        raise ModelLoadError(f"cannot read {str(d / 'model.safetensors')!r} ({exc})") from exc
    state = {k.removeprefix(_PREFIX): v.float() for k, v in raw.items()}
    if cfg.tie_embeddings:
        state.pop("lm_head.weight", None)
        state["lm_head.weight"] = state.get("embed_tokens.weight", torch.empty(0))
    model = build_llama(cfg)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelLoadError(
            f"{str(d)!r}: weights missing {sorted(missing)} / unexpected {sorted(unexpected)}"
        )
    model.eval()
    template = None
    if (d / "tokenizer_config.json").is_file():
        t = _read_json(d / "tokenizer_config.json").get("chat_template")
        template = t if isinstance(t, str) else None
    if template is None and (d / "chat_template.jinja").is_file():
        template = (d / "chat_template.jinja").read_text(encoding="utf-8")
    tokenizer = _tokenizer(d, cfg)
    if tokenizer is not None:
        tokenizer.chat_template = template
    return cfg, model, tokenizer, template


def llama_loaded(
    cfg: LlamaConfig, model: LlamaModel, tokenizer: Tokenizer | None, name: str
) -> LoadedModel:
    """A loaded LLaMA model as a :class:`~dhian.models.model_dir.LoadedModel` (task ``lm``;
    the tokenizer carries the chat template). ``name`` names the source in errors."""
    if tokenizer is None:
        raise ModelLoadError(
            f"{name} has no tokenizer.json; dhian needs the model's byte-level BPE tokenizer"
        )
    data = DataConfig(corpus="news", tokenizer="bytebpe", vocab_size=cfg.vocab_size)
    build_kwargs = {"src_vocab_size": cfg.vocab_size, "tgt_vocab_size": cfg.vocab_size}
    return LoadedModel(
        model, RunConfig(model=cfg, data=data), {"src": tokenizer, "tgt": tokenizer}, "lm",
        build_kwargs,
    )  # fmt: skip


def load_hf_llama(directory: str | Path, **_options: Any) -> LoadedModel:
    """:func:`import_hf_llama` as a :class:`~dhian.models.model_dir.LoadedModel` (the family
    record's ``hf_import``)."""
    cfg, model, tokenizer, _template = import_hf_llama(directory)
    return llama_loaded(cfg, model, tokenizer, str(directory))


def export_loaded_llama(loaded: LoadedModel, out_dir: str | Path) -> Path:
    """:func:`export_hf_llama` of a loaded model (the family record's ``hf_export``)."""
    tok = loaded.tokenizers.get("src")
    template = getattr(tok, "chat_template", None)
    model: Any = loaded.model
    return export_hf_llama(model, loaded.config.model, tok, out_dir, template)


def export_hf_llama(
    model: LlamaModel,
    cfg: LlamaConfig,
    tokenizer: Tokenizer | None,
    directory: str | Path,
    chat_template: str | None = None,
) -> Path:
    """Write ``model`` as an HF ``LlamaForCausalLM`` directory: ``config.json``,
    ``model.safetensors`` (float32; no ``lm_head.weight`` when tied), and with a tokenizer
    ``tokenizer.json`` + ``tokenizer_config.json`` (special tokens, chat template)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(hf_config_from_llama(cfg), indent=2) + "\n")
    state = {
        _PREFIX + k if k != "lm_head.weight" else k: v.detach().float().contiguous().clone()
        for k, v in model.unfused_state_dict().items()
    }
    if cfg.tie_embeddings:
        state.pop("lm_head.weight")
    save_file(state, str(d / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.hf.save(str(d / "tokenizer.json"))
        tc: dict[str, Any] = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "clean_up_tokenization_spaces": False,
        }
        for role in ("bos", "eos", "pad", "unk"):
            if role in tokenizer.roles:
                tc[f"{role}_token"] = tokenizer.roles[role]
        if chat_template is not None:
            tc["chat_template"] = chat_template
        (d / "tokenizer_config.json").write_text(
            json.dumps(tc, indent=2, ensure_ascii=False) + "\n"
        )
    return d
