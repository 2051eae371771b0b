"""HuggingFace BERT import and export for :mod:`dhian.models.bert.model`.

Owns the mapping between an HF BERT directory (``config.json``, ``model.safetensors`` — or
``pytorch_model.bin`` read with ``torch.load(weights_only=True)`` — and ``vocab.txt`` /
``tokenizer.json``) and dhian's :class:`~dhian.models.bert.config.BertConfig`, parameter names and
WordPiece tokenizer. HF's separate query/key/value projections are concatenated into the fused
``in_proj`` (3E, E) = [W_q; W_k; W_v] on import and split back on export.

The task (head) comes from ``architectures`` in ``config.json``; an architecture dhian has no head
for is an error naming it. Import reports every weight that does not fit: a missing task head
(MLM, classifier, token classifier, QA outputs, and the pooler of a classifier built on a
checkpoint without one) is freshly initialised with a log line when a head is to be trained, and
an error naming it when a verb needs it (``require_head``); a head of another task (only when the
task was asked for explicitly, else an error), the NSP head, the pooler under a per-token head,
the tied MLM decoder and position-id buffers are dropped with a log line; anything else missing or unexpected is a
:class:`~dhian.errors.ModelLoadError` listing the names (unless ``allow_missing`` /
``allow_unexpected``). Checkpoints with or without the ``bert.`` prefix load alike
(sentence-transformers saves a bare ``BertModel``); old ``LayerNorm.gamma``/``beta`` names too.

Notation: E model dim, V vocab, L layers.
Name and config tables live in :mod:`dhian.interop.hf_bert_names`.
Imports: stdlib, torch, safetensors, :mod:`dhian.models`, :mod:`dhian.text` (lazily),
:mod:`dhian.config`, :mod:`dhian.errors`, :mod:`dhian.interop.hf_bert_names`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from dhian.config import DataConfig, RunConfig
from dhian.errors import ModelLoadError
from dhian.interop.hf_bert_names import (
    ARCHITECTURES,
    DROPPED,
    HEAD_PAIRS,
    TOKEN_TASKS,
    backbone_pairs,
    bert_config_from_hf,
    bert_config_to_hf,
    hf_architectures,
    hf_task,
    is_hf_bert_dir,
    qkv_names,
    read_json,
    task_of,
)
from dhian.interop.hf_config import check_hf_config
from dhian.models.bert.config import BertConfig
from dhian.models.bert.heads import build_bert
from dhian.models.bert.model import BertBackbone
from dhian.models.model_dir import LoadedModel, unpickle_refusal
from dhian.text import load_tokenizer

__all__ = [
    "bert_config_from_hf",
    "bert_config_to_hf",
    "export_hf_bert",
    "export_loaded_bert",
    "import_hf_bert",
    "is_hf_bert_dir",
    "load_hf_bert",
]

logger = logging.getLogger(__name__)
Log = Callable[[str], None]


# --------------------------------------------------------------------------- weights


def _read_weights(d: Path) -> dict[str, Tensor]:
    """All tensors of an HF dir: safetensors (single or sharded) first, else a weights-only
    ``pytorch_model.bin``."""
    files: list[Path] = []
    index = d / "model.safetensors.index.json"
    if (d / "model.safetensors").is_file():
        files = [d / "model.safetensors"]
    elif index.is_file():
        files = sorted({d / f for f in read_json(index).get("weight_map", {}).values()})
    if files:
        state: dict[str, Tensor] = {}
        for f in files:
            try:
                with safe_open(str(f), framework="pt") as fh:
                    for k in fh.keys():  # noqa: SIM118 - safe_open is not a Mapping
                        state[k] = fh.get_tensor(k)
            except (SafetensorError, OSError) as exc:
                raise ModelLoadError(f"{f} is corrupt or unreadable: {exc}") from exc
        return state
    pt = d / "pytorch_model.bin"
    if pt.is_file():
        try:
            raw = torch.load(str(pt), map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ...
            raise ModelLoadError(unpickle_refusal(pt, exc)) from exc
        if not isinstance(raw, Mapping):
            raise ModelLoadError(f"{pt} does not hold a state dict")
        return {str(k): v for k, v in raw.items() if isinstance(v, Tensor)}
    raise ModelLoadError(f"{d} has no model.safetensors or pytorch_model.bin")


def _normalise_names(raw: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Strip the ``bert.`` prefix and rename old ``LayerNorm.gamma``/``beta``."""
    out: dict[str, Tensor] = {}
    for k, v in raw.items():
        k = k.removeprefix("bert.")
        if k.endswith("LayerNorm.gamma"):
            k = k[: -len("gamma")] + "weight"
        elif k.endswith("LayerNorm.beta"):
            k = k[: -len("beta")] + "bias"
        out[k] = v
    return out


def _dropped_reason(name: str, task: str) -> str | None:
    for prefix, why in DROPPED.items():
        if name.startswith(prefix):
            return why
    if name.startswith("pooler.") and task in TOKEN_TASKS:
        return f"pooler, not used by task {task}"
    for other, pairs in HEAD_PAIRS.items():
        if (
            other != task
            and any(name == h for h, _ in pairs)
            and name not in dict(HEAD_PAIRS[task])
        ):
            return f"{other} head, not used by task {task}"
    if name == "cls.predictions.decoder.bias" and task != "mlm":
        return f"mlm head, not used by task {task}"
    return None


def _convert(
    hf: Mapping[str, Tensor], model: nn.Module, cfg: BertConfig, task: str
) -> tuple[dict[str, Tensor], list[str], list[str], list[str]]:
    """dhian state from normalised HF names → (state, missing, unexpected, dropped)."""
    prefix = "" if task == "backbone" else "backbone."
    pooler = getattr(model, "backbone", model).pooler is not None
    used: set[str] = set()
    state: dict[str, Tensor] = {}
    pairs = [(h, prefix + d) for h, d in backbone_pairs(cfg.layers, pooler)]
    for h, d in pairs + HEAD_PAIRS[task]:
        if h in hf:
            state[d] = hf[h]
            used.add(h)
    if task == "mlm" and "cls.predictions.decoder.bias" in hf:  # tied to cls.predictions.bias
        state.setdefault("mlm.bias", hf["cls.predictions.decoder.bias"])
        used.add("cls.predictions.decoder.bias")
    for i in range(cfg.layers):
        for wb in ("weight", "bias"):
            names, fused = qkv_names(i, wb)
            if all(n in hf for n in names):
                state[prefix + fused] = torch.cat([hf[n] for n in names], dim=0)  # (3E, E)|(3E,)
            used.update(n for n in names if n in hf)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    dropped = [k for k in hf if k not in used and _dropped_reason(k, task)]
    unexpected = [k for k in hf if k not in used and k not in dropped]
    for k, v in state.items():
        if k in own and tuple(v.shape) != tuple(own[k].shape):
            raise ModelLoadError(
                f"weight {k} has shape {tuple(v.shape)} in the checkpoint but "
                f"{tuple(own[k].shape)} in a model built from its config.json"
            )
    return state, missing, unexpected, dropped


def _is_new_head(name: str, task: str, hf_has_pooler: bool) -> bool:
    if task == "mlm":
        return name.startswith("mlm.")
    if task == "classification":
        return name.startswith("classifier.") or (
            name.startswith("backbone.pooler.") and not hf_has_pooler
        )
    if task == "token_classification":
        return name.startswith("classifier.")
    if task == "question_answering":
        return name.startswith("qa_outputs.")
    return False


def _head_refusal(d: Path, hf_cfg: Mapping[str, Any], task: str, names: Sequence[str]) -> str:
    """The one-line error of a checkpoint that lacks the head ``task`` needs."""
    archs = ", ".join(hf_architectures(hf_cfg)) or "BertModel (no architectures listed)"
    hf_names = {ours: theirs for theirs, ours in HEAD_PAIRS[task]}
    shown = ", ".join(hf_names.get(n, n) for n in names)
    return (
        f"{d} is a {archs} checkpoint without the {task} head ({shown}); "
        f"a {ARCHITECTURES[task]} checkpoint has it (or fine-tune one with dhian train, "
        f"model.task={task})"
    )


def import_hf_bert(
    directory: str | Path,
    task: str | None = None,
    num_labels: int | None = None,
    labels: Sequence[str] | None = None,
    *,
    allow_missing: bool = False,
    allow_unexpected: bool = False,
    require_head: bool = False,
    log: Log | None = None,
) -> tuple[nn.Module, BertConfig, Any]:
    """Read an HF BERT directory → (model in eval mode, :class:`BertConfig`, tokenizer).

    ``task``: ``backbone`` | ``mlm`` | ``classification`` | ``token_classification`` |
    ``question_answering``; default from ``architectures`` in ``config.json`` (an architecture
    dhian has no head for is an error naming it). ``num_labels``/``labels`` size a classifier
    (default: the checkpoint's ``id2label``). A head the checkpoint lacks is initialised
    randomly (to fine-tune it), or with ``require_head`` (a verb that uses the head) is an
    error naming the missing head and the checkpoint kind that has it. Weights of another
    head are dropped with a log line only when ``task`` is given; by default they are an
    error (never a silent loss). ``log`` receives one line per head initialised or weight
    dropped (default: this module's logger at INFO). The tokenizer is ``None`` when the dir has neither
    ``tokenizer.json`` nor ``vocab.txt`` (logged).
    """
    d = Path(directory)
    say: Log = log or logger.info
    if not (d / "config.json").is_file():
        raise ModelLoadError(f"{d} has no config.json; is it a HuggingFace BERT model dir?")
    hf_cfg = dict(check_hf_config(read_json(d / "config.json"), d / "config.json"))
    explicit = task is not None
    task = task or hf_task(hf_cfg)
    if task not in ARCHITECTURES:
        raise ModelLoadError(f"task must be one of {', '.join(ARCHITECTURES)}, got {task!r}")
    declared = hf_task(hf_cfg)
    if require_head and declared not in ("backbone", task):
        raise ModelLoadError(
            f"{d} is a {', '.join(hf_architectures(hf_cfg))} checkpoint (head: {declared}), "
            f"without the {task} head; a {ARCHITECTURES[task]} checkpoint has it"
        )
    hf = _normalise_names(_read_weights(d))
    has_pooler = "pooler.dense.weight" in hf
    cfg = bert_config_from_hf(hf_cfg, task, num_labels, labels, pooler=has_pooler)
    model = build_bert(cfg)
    state, missing, unexpected, dropped = _convert(hf, model, cfg, task)
    new_head = [k for k in missing if _is_new_head(k, task, has_pooler)]
    missing = [k for k in missing if k not in new_head]
    if new_head and require_head:
        raise ModelLoadError(_head_refusal(d, hf_cfg, task, new_head))
    heads = [k for k in dropped if "head, not used" in str(_dropped_reason(k, task))]
    if heads and not explicit:
        raise ModelLoadError(
            f"{d}: config.json says {task} but the checkpoint also holds head weights "
            f"{', '.join(heads)}; name the head to import (--task)"
        )
    if missing and not allow_missing:
        raise ModelLoadError(
            f"{d}: {len(missing)} weight(s) missing from the checkpoint: {', '.join(missing)} "
            "(pass allow_missing=True to initialise them randomly)"
        )
    if unexpected and not allow_unexpected:
        raise ModelLoadError(
            f"{d}: {len(unexpected)} unexpected weight(s) in the checkpoint: "
            f"{', '.join(unexpected)} (pass allow_unexpected=True to ignore them)"
        )
    if new_head:
        say(f"{task} head not in the checkpoint, initialised randomly: {', '.join(new_head)}")
    if missing:
        say(f"missing weights initialised randomly (allow_missing): {', '.join(missing)}")
    for k in dropped:
        say(f"checkpoint weight {k} dropped ({_dropped_reason(k, task)})")
    if unexpected:
        say(f"unexpected weights ignored (allow_unexpected): {', '.join(unexpected)}")
    model.load_state_dict(state, strict=False)
    model.eval()
    tokenizer = None
    if (d / "tokenizer.json").is_file() or (d / "vocab.txt").is_file():
        tokenizer = load_tokenizer(d)
    else:
        say(f"{d} has no tokenizer.json or vocab.txt; no tokenizer loaded")
    return model, cfg, tokenizer


def load_hf_bert(directory: str | Path, **kwargs: Any) -> LoadedModel:
    """:func:`import_hf_bert` as a :class:`~dhian.models.model_dir.LoadedModel` (``kind`` = task)."""
    model, cfg, tok = import_hf_bert(directory, **kwargs)
    data = DataConfig(tokenizer="wordpiece", max_len=cfg.max_positions, lowercase=_lowercase(tok))
    build_kwargs = {"src_vocab_size": cfg.vocab_size, "tgt_vocab_size": cfg.vocab_size}
    return LoadedModel(
        model, RunConfig(model=cfg, data=data), {"src": tok, "tgt": tok}, cfg.task, build_kwargs
    )


# --------------------------------------------------------------------------- export


def _hf_state(model: nn.Module, cfg: BertConfig, task: str, log: Log) -> dict[str, Tensor]:
    own = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    prefix, hf_prefix = ("", "") if task == "backbone" else ("backbone.", "bert.")
    pooler = f"{prefix}pooler.dense.weight" in own and task not in TOKEN_TASKS
    out: dict[str, Tensor] = {}
    for h, d in backbone_pairs(cfg.layers, pooler):
        out[hf_prefix + h] = own[prefix + d]
    for h, d in HEAD_PAIRS[task]:
        out[h] = own[d]
    for i in range(cfg.layers):
        for wb in ("weight", "bias"):
            names, fused = qkv_names(i, wb)
            for n, part in zip(names, own[prefix + fused].chunk(3, dim=0), strict=True):
                out[hf_prefix + n] = part  # (E, E) | (E,)
    if task == "mlm" and pooler:
        for k in [k for k in out if k.startswith("bert.pooler.")]:
            del out[k]
        log("pooler not exported: HF BertForMaskedLM has none")
    return {k: v.contiguous().clone() for k, v in out.items()}


def _write_tokenizer(tok: Any, out: Path, cfg: BertConfig) -> None:
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers.processors import TemplateProcessing

    hf = HFTokenizer.from_str(tok.hf.to_str())
    roles: dict[str, str] = dict(tok.roles)
    cls, sep = roles.get("cls"), roles.get("sep")
    if cls and sep:
        cls_id, sep_id = tok.token_to_id(cls), tok.token_to_id(sep)
        hf.post_processor = TemplateProcessing(
            single=f"{cls}:0 $A:0 {sep}:0",
            pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
            special_tokens=[(cls, cls_id), (sep, sep_id)],
        )
    hf.save(str(out / "tokenizer.json"))
    specials = {
        f"{r}_token": t
        for r, t in roles.items()
        if r in ("pad", "unk", "mask", "cls", "sep")
        or (r in ("bos", "eos") and t not in (roles.get("cls"), roles.get("sep")))
    }  # bos/eos only where they are tokens of their own (dhian's <s> </s>), for the round trip
    wordpiece = getattr(tok, "kind", "") == "wordpiece"
    if wordpiece:
        vocab = hf.get_vocab(with_added_tokens=True)
        by_id = sorted(vocab.items(), key=lambda kv: kv[1])
        if [i for _, i in by_id] != list(range(len(by_id))):
            raise ModelLoadError("tokenizer ids are not contiguous; cannot write vocab.txt")
        (out / "vocab.txt").write_text("".join(f"{t}\n" for t, _ in by_id), encoding="utf-8")
    tok_cfg = {
        **specials,
        "tokenizer_class": "BertTokenizer" if wordpiece else "PreTrainedTokenizerFast",
        "do_lower_case": _lowercase(tok),
        "model_max_length": cfg.max_positions,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")


def _lowercase(tok: Any) -> bool:
    if tok is None or not hasattr(tok, "hf"):
        return False
    norm = json.loads(tok.hf.to_str()).get("normalizer") or {}
    stack = [norm]
    while stack:
        n = stack.pop()
        if n.get("type") == "Lowercase" or (
            n.get("type") == "BertNormalizer" and n.get("lowercase")
        ):
            return True
        stack.extend(n.get("normalizers") or [])
    return False


def export_hf_bert(
    model: nn.Module,
    cfg: BertConfig | RunConfig,
    tokenizer: Any,
    out_dir: str | Path,
    log: Log | None = None,
) -> Path:
    """Write ``model`` as an HF BERT directory (``config.json``, ``model.safetensors`` and, when
    ``tokenizer`` is given, ``tokenizer.json``/``vocab.txt``/``tokenizer_config.json``).
    ``transformers.AutoModel*.from_pretrained(out_dir)`` then gives the same outputs."""
    bcfg = cfg.model if isinstance(cfg, RunConfig) else cfg
    if not isinstance(bcfg, BertConfig):
        raise ModelLoadError(f"export_hf_bert needs a BertConfig, got {type(bcfg).__name__}")
    task = task_of(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say: Log = log or logger.info
    backbone = model if isinstance(model, BertBackbone) else getattr(model, "backbone", None)
    if not isinstance(backbone, BertBackbone):
        raise ModelLoadError(f"export_hf_bert needs a BERT model, got {type(model).__name__}")
    vocab = int(backbone.embeddings.word.weight.size(0))
    hf_cfg = bert_config_to_hf(bcfg if bcfg.task == task else _with_task(bcfg, task), vocab)
    save_file(_hf_state(model, bcfg, task, say), str(out / "model.safetensors"), {"format": "pt"})
    (out / "config.json").write_text(json.dumps(hf_cfg, indent=2) + "\n")
    if tokenizer is not None:
        _write_tokenizer(tokenizer, out, bcfg)
    return out


def _with_task(cfg: BertConfig, task: str) -> BertConfig:
    import dataclasses

    return dataclasses.replace(cfg, task=task)


def export_loaded_bert(loaded: LoadedModel, out_dir: str | Path, log: Log | None = None) -> Path:
    """:func:`export_hf_bert` of a loaded dhian model dir (registry entry for ``bert``)."""
    tok = (loaded.tokenizers or {}).get("src")
    return export_hf_bert(loaded.model, loaded.config, tok, out_dir, log=log)
