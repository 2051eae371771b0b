"""Typed, frozen configs: YAML in, ``--set a.b=c`` overrides, unknown keys are errors.

A run is described by :class:`RunConfig` = ``model`` (one frozen dataclass per model family,
picked by ``model.type``) + ``data`` (:class:`DataConfig`) + ``train`` (:class:`TrainConfig`).
The family config dataclasses live in ``dhian/models/<family>/config.py`` (stdlib only) and are
listed in ``_MODEL_CONFIGS`` below; a family's config is read in exactly one place (its builder).
Layers in ``dhian.nn`` never see a config. Imports: stdlib, PyYAML, :mod:`dhian.errors` and the
family config modules (never torch).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from dhian.errors import ConfigError, nearest
from dhian.models.bert.config import BertConfig
from dhian.models.gpt.config import GPTConfig
from dhian.models.keras_classifier.config import KerasClassifierConfig
from dhian.models.llama.config import LlamaConfig
from dhian.models.rnn.config import RNNSeq2SeqConfig
from dhian.models.transformer.config import TransformerConfig

T = TypeVar("T")

# ``model.type`` → its family's config dataclass. The family configs are stdlib-only modules
# in their family folders (dhian.models.<family>.config, torch-free package __init__s), so
# parsing a run config never imports torch. dhian.models.families names the same classes in
# its records; tests/models/test_families.py checks that the two agree.
_MODEL_CONFIGS: dict[str, type] = {
    "rnnencdec": RNNSeq2SeqConfig,
    "rnnsearch": RNNSeq2SeqConfig,
    "transformer": TransformerConfig,
    "bert": BertConfig,
    "keras_classifier": KerasClassifierConfig,
    "gpt": GPTConfig,
    "llama": LlamaConfig,
}


def model_types() -> list[str]:
    """Names accepted as ``model.type``."""
    return sorted(_MODEL_CONFIGS)


def model_config_class(name: str) -> type:
    """The config dataclass of ``model.type == name``."""
    if name not in _MODEL_CONFIGS:
        raise ConfigError(
            f"unknown model.type {name!r}{nearest(name, _MODEL_CONFIGS)}; "
            f"valid: {', '.join(sorted(_MODEL_CONFIGS))}"
        )
    return _MODEL_CONFIGS[name]


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """What to train on and how to tokenise it.

    ``corpus`` is a built-in name (``bible:de-en``, ``rotten-tomatoes``, ``news``,
    ``bible:en``) or a local spec ``KIND:DIR[@src-tgt]`` with KIND one of tsv, files, jsonl,
    csv, text, multi30k, iwslt, agnews, wikitext, hf (see docs/data.md).
    """

    corpus: str = "bible:de-en"
    tokenizer: str = "bpe"  # bpe | char | wordpiece | bytebpe
    vocab_size: int = 8000
    joint_vocab: bool = True
    lowercase: bool = False
    max_len: int = 128  # tokens per side; longer examples are handled by `too_long`
    too_long: str = "truncate"  # truncate | skip | error
    max_train_examples: int = 0  # 0 = all; >0 = first N (tiny recipes, tests)
    max_eval_examples: int = 0
    block_size: int = 128  # language modelling: tokens per packed block
    label_column: str = "label"
    text_column: str = "text"
    tokenizer_path: str = ""  # load a saved/pretrained tokenizer instead of training one
    doc_stride: int = 128  # extractive QA: context tokens shared by neighbouring windows


@dataclasses.dataclass(frozen=True)
class LoraSettings:
    """``train.lora``: low-rank adapters (through ``peft``) instead of full fine-tuning.

    ``r`` 0 = off (every weight trains); ``r`` > 0 freezes the model and trains rank-``r``
    adapters on the linear layers named in ``targets`` (module-name suffixes), scaled by
    ``alpha / r``, with ``dropout`` on their input.
    """

    r: int = 0
    alpha: int = 16
    dropout: float = 0.0
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The training engine's knobs; shared by every model family."""

    out_dir: str = "runs/default"
    task: str = "auto"  # auto (from the model config) | a name in dhian.train.tasks.TASKS
    seed: int = 1234
    max_steps: int = 1000
    max_epochs: int = 0  # 0 = no epoch limit
    max_minutes: float = 0.0  # 0 = no limit; >0 stops in time for the final eval and saves
    max_tokens: int = 4096  # token budget per batch (source + target, padded)
    batch_size: int = 0  # >0: fixed number of examples per batch instead of a token budget
    grad_accum: int = 1
    optimizer: str = "adamw"
    lr: float = 5e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    schedule: str = "inverse_sqrt"  # inverse_sqrt | noam | linear | cosine | constant
    warmup_steps: int = 400
    min_lr_ratio: float = 0.0
    clip_norm: float = 1.0  # 0 = off
    label_smoothing: float = 0.1
    bf16: bool | str = False  # bf16 autocast (CPU or CUDA); auto = where the hardware has bf16
    eval_every: int = 200
    eval_beam: int = 1
    eval_length_penalty: float = 1.0
    eval_no_repeat_ngram: int = 0  # >0: decoding never repeats an n-gram of this size
    eval_max_examples: int = 0  # 0 = whole dev split for BLEU
    save_every: int = 200
    log_every: int = 20
    early_stop_metric: str = "loss"  # loss | ppl | bleu | chrf | accuracy | ...
    early_stop_patience: int = 0  # evaluations without improvement; 0 = off
    keep_last: int = 1
    average_last: int = 0  # >1: at the end, average the last N weight snapshots (kept if better)
    average_every: int = 100  # steps between those snapshots (in memory)
    num_threads: int = 0  # 0 = torch default
    max_bad_steps: int = 5  # consecutive non-finite losses before stopping
    freeze: str = ""  # e.g. "encoder": parameters whose name starts with it get no updates
    init_from: str = ""  # a model dir (dhian or HuggingFace) to start from
    device: str = "auto"  # auto | cpu | cuda
    lora: LoraSettings = LoraSettings()  # r > 0: LoRA adapters instead of full fine-tuning
    fsdp: bool = False  # under torchrun: shard parameters with FSDP2 (fully_shard), not DDP

    def __post_init__(self) -> None:
        if isinstance(self.bf16, str):
            if self.bf16.strip().lower() != "auto":
                raise ConfigError(f"train.bf16 must be true, false or auto, got {self.bf16!r}")
            object.__setattr__(self, "bf16", "auto")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A whole run: ``model`` (family dataclass), ``data`` and ``train``."""

    model: Any
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (tuples become lists), ready for YAML."""
        return {
            "model": _asdict(self.model),
            "data": _asdict(self.data),
            "train": _asdict(self.train),
        }

    def save(self, path: str | Path) -> None:
        """Write the resolved config as YAML (atomically)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")
        tmp.replace(path)


def _asdict(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = _asdict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Turn ``["train.lr=3e-4", "model.layers=2"]`` into a nested dict (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(
                f"override {item!r} is not of the form key=value (e.g. train.lr=3e-4)"
            )
        key, raw = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = tree
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier override of {p!r}")
            node = nxt
        node[parts[-1]] = value
    return tree


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``over`` wins."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def from_dict(cls: type[T], data: Mapping[str, Any] | None, where: str = "") -> T:
    """Build frozen dataclass ``cls`` from ``data``, checking keys and types.

    Unknown keys raise :class:`ConfigError` naming the nearest valid key; values are coerced
    where lossless (int → float, list → tuple, "1e-4" → float).
    """
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(
            f"{where or cls.__name__} must be a mapping of settings, got {data!r}"
            + (f"; did you mean {where}.KEY=VALUE?" if where else "")
        )
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise ConfigError(
                f"unknown config key {dotted!r}{nearest(str(key), fields)}; "
                f"valid keys: {', '.join(fields)}"
            )
        kwargs[key] = _coerce(value, hints[key], dotted)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where or cls.__name__}: {exc}") from exc


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"{where} must have {len(args)} items, got {len(value)}: {value!r}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args, strict=True))
    if origin is list:
        (arg,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return [_coerce(v, arg, where) for v in value]
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value):
            return value
        return from_dict(tp, value, where)  # type: ignore[arg-type]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "false", "yes", "no", "1", "0"}:
            return value.lower() in {"true", "yes", "1"}
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return (
                    int(float(value))
                    if float(value).is_integer()
                    else _bad(where, "an integer", value)
                )
            except ValueError:
                pass
        raise ConfigError(f"{where} must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        number: float | None = None
        if isinstance(value, int | float):
            number = float(value)
        elif isinstance(value, str):
            with contextlib.suppress(ValueError):
                number = float(value)
        if number is None:
            raise ConfigError(f"{where} must be a number, got {value!r}")
        if not math.isfinite(number):
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where} must be a string, got {value!r}")
    return value


def _bad(where: str, what: str, value: Any) -> Any:
    raise ConfigError(f"{where} must be {what}, got {value!r}")


def run_config_from_dict(data: Mapping[str, Any]) -> RunConfig:
    """Build a :class:`RunConfig` from a nested dict (as read from YAML)."""
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"a config must be a mapping with model/data/train, got {type(data).__name__}"
        )
    top = {"model", "data", "train"}
    for key in data:
        if key not in top:
            raise ConfigError(
                f"unknown config section {key!r}{nearest(str(key), top)}; valid: model, data, train"
            )
    if data.get("model") is not None and not isinstance(data.get("model"), Mapping):
        raise ConfigError(
            f"model must be a mapping with a type (e.g. model.type=transformer), "
            f"got {data.get('model')!r}"
        )
    model_raw = dict(data.get("model") or {})
    mtype = model_raw.get("type")
    if not mtype:
        raise ConfigError(f"model.type is required; valid: {', '.join(model_types())}")
    model_cls = model_config_class(str(mtype))
    model: Any = from_dict(model_cls, model_raw, "model")
    return RunConfig(
        model=model,
        data=from_dict(DataConfig, data.get("data"), "data"),
        train=from_dict(TrainConfig, data.get("train"), "train"),
    )


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with a clear error for a missing or malformed file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(
            f"config file {str(path)!r} is a directory; give a YAML file in it "
            "(see configs/ for recipes)"
        )
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist (see configs/ for recipes)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {first}") from exc
    if data is None:
        raise ConfigError(f"config file {str(path)!r} is empty")
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(path)!r} must hold a mapping, got {type(data).__name__}"
        )
    return data


def load_run_config(path: str | Path, overrides: Sequence[str] = ()) -> RunConfig:
    """Load a recipe YAML, apply ``--set`` overrides, validate, and return the frozen config."""
    data = merge(load_yaml(path), parse_overrides(overrides))
    return run_config_from_dict(data)


def replace(cfg: T, **changes: Any) -> T:
    """``dataclasses.replace`` re-exported for frozen configs."""
    return dataclasses.replace(cfg, **changes)  # type: ignore[type-var]
