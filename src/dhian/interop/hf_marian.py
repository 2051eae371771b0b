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

Special ids: PAD moves to the last id (every id above it shifts down by one) in the weights,
the config and the tokenizer files, as in genuine Marian vocabularies — CTranslate2's
``ct2-transformers-converter`` drops the last id as ``<pad>`` (see
:mod:`dhian.interop.hf_marian_names`). The decoder starts from PAD with a zero PAD row when
the model was trained with ``start_from_zero`` (as genuine Marian models and CTranslate2 do:
then CTranslate2 translates exactly as dhian), else from our BOS. An imported model keeps the
checkpoint's ids (``bos_id`` = its ``decoder_start_token_id``). Tokenizers: Marian ships sentencepiece models
(``source.spm``/``target.spm``) read by ``MarianTokenizer``; dhian's tokenizers are HF
``tokenizers`` models, so the export writes ``tokenizer.json`` (+ ``dhian_tokenizer.json``,
``vocab.json``, and a ``tokenizer_config.json`` naming ``PreTrainedTokenizerFast``):
``AutoTokenizer`` and :func:`dhian.text.load_tokenizer` read them, ``MarianTokenizer`` cannot.
A separate target tokenizer goes to ``target_tokenizer/``. The weights and config are the real
interop.

This module reads and writes the directory; the name tables, config conversion and state-dict
mapping live in :mod:`dhian.interop.hf_marian_names` (:func:`marian_config` is re-exported here).

Notation: E model dim, V vocab, L layers. Imports: stdlib, torch, safetensors,
:mod:`dhian.models`, :mod:`dhian.errors`, :mod:`dhian.interop.hf_marian_names`,
:func:`dhian.interop.hf_bert_names.read_json`; :mod:`dhian.text` (reading and renumbering
tokenizers).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from dhian.config import RunConfig
from dhian.errors import ConfigError, ModelLoadError
from dhian.interop.hf_bert_names import read_json
from dhian.interop.hf_config import check_hf_config
from dhian.interop.hf_marian_names import (
    check_exportable,
    export_ids,
    export_order,
    generation_config,
    hf_config,
    marian_config,
    marian_state,
    our_state,
)
from dhian.models.model_dir import LoadedModel
from dhian.models.transformer.config import TransformerConfig
from dhian.models.transformer.model import TransformerSeq2Seq, build_transformer
from dhian.text import load_tokenizer, reorder_vocab

__all__ = [
    "MarianImport",
    "export_loaded_marian",
    "export_marian",
    "import_marian",
    "load_marian",
    "load_marian_dir",
    "marian_config",
]

WEIGHTS = "model.safetensors"
TARGET_TOKENIZER = "target_tokenizer"


@dataclasses.dataclass
class MarianImport:
    """What :func:`load_marian` read: the ``model`` (eval mode), its dhian ``config``, the
    ``build_kwargs`` that rebuild it with :func:`dhian.models.families.build_model` (vocab sizes and
    special ids), and ``tokenizers`` (``{"src", "tgt"}``) when the dir holds dhian-readable ones."""

    model: TransformerSeq2Seq
    config: TransformerConfig
    build_kwargs: dict[str, int]
    tokenizers: dict[str, Any] | None


# --------------------------------------------------------------------------- export


def _write_tokenizer(tok: Any, directory: Path, model: TransformerSeq2Seq) -> None:
    """Write ``tok`` renumbered to the export's id order (PAD last, see
    :func:`~dhian.interop.hf_marian_names.export_order`) with ``vocab.json`` and a
    ``tokenizer_config.json`` naming its special tokens."""
    order = export_order(model)
    if order is not None and order != list(range(len(order))):
        if tok.vocab_size != len(order):
            raise ConfigError(
                f"the tokenizer has {tok.vocab_size} ids but the model's vocabulary "
                f"{len(order)}; export the tokenizer the model was trained with"
            )
        tok = reorder_vocab(tok, order)
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
    for role, tid in export_ids(model).items():
        if role != "start" and tid in by_id:
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
    check_exportable(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(marian_state(model, cfg), str(out / WEIGHTS), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(hf_config(model, cfg), indent=2) + "\n")
    (out / "generation_config.json").write_text(
        json.dumps(generation_config(model), indent=2) + "\n"
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


def _read_weights(directory: Path) -> dict[str, Tensor]:
    files = [directory / WEIGHTS]
    index = directory / "model.safetensors.index.json"
    if not files[0].is_file() and index.is_file():
        weight_map = read_json(index).get("weight_map", {})
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


def load_marian(directory: str | Path) -> MarianImport:
    """Read a MarianMT directory (``config.json`` + ``model.safetensors``) into dhian."""
    d = Path(directory)
    if not (d / "config.json").is_file():
        raise ModelLoadError(f"{d} has no config.json; is it a HuggingFace Marian model dir?")
    cfg, kwargs = marian_config(check_hf_config(read_json(d / "config.json"), d / "config.json"))
    model = build_transformer(
        cfg,
        kwargs["src_vocab_size"],
        kwargs["tgt_vocab_size"],
        pad_id=kwargs["pad_id"],
        bos_id=kwargs["bos_id"],
        eos_id=kwargs["eos_id"],
    )
    state = our_state(_read_weights(d), model, cfg)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(
            f"Marian weights in {d} do not fit its config.json: {str(exc).splitlines()[0]}"
        ) from exc
    model.eval()
    tokenizers = None
    if (d / "dhian_tokenizer.json").is_file():
        src = load_tokenizer(d)
        tgt = load_tokenizer(d / TARGET_TOKENIZER) if (d / TARGET_TOKENIZER).is_dir() else src
        tokenizers = {"src": src, "tgt": tgt}
    return MarianImport(model, cfg, kwargs, tokenizers)


def import_marian(directory: str | Path) -> TransformerSeq2Seq:
    """The model of a MarianMT directory (eval mode); see :func:`load_marian` for the rest."""
    return load_marian(directory).model


# --------------------------------------------------------------------------- family record hooks


def load_marian_dir(path: str | Path, **_: Any) -> LoadedModel:
    """:func:`load_marian` as a :class:`~dhian.models.model_dir.LoadedModel` (the ``hf_import``
    of the transformer family; a Marian model is always for translation)."""
    imp = load_marian(path)
    return LoadedModel(
        imp.model,
        RunConfig(model=imp.config),
        imp.tokenizers or {},
        "translation",
        dict(imp.build_kwargs),
    )


def export_loaded_marian(loaded: LoadedModel, out_dir: str | Path) -> Path:
    """:func:`export_marian` of a loaded model (the ``hf_export`` of the transformer family)."""
    model: Any = loaded.model
    return export_marian(model, loaded.config, loaded.tokenizers or None, Path(out_dir))
