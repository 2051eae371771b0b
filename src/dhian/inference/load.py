"""The one model loader: any model source → a :class:`~dhian.models.model_dir.LoadedModel`
(model in eval mode on the chosen device and precision, config, tokenizers, task kind).

A source is, in the order :func:`load_model` tries it:

1. a **built-in name** (not an existing path) that a family record lists in ``builtins``;
2. a **single file** whose suffix a family lists in ``file_import`` (e.g. ``.gguf``);
3. a **run dir** written by ``dhian train`` (``config.yaml`` + ``best/`` or ``last/``): its
   ``best/``, else ``last/`` (:func:`resolve_model_dir`);
4. an **HF dir** (``config.json`` with a ``model_type`` a family imports);
5. a **dhian model dir** (``config.yaml`` + ``model.safetensors`` + ``tokenizer/``).

Every family fact comes from :mod:`dhian.models.families`; this module keeps no table of its
own. Owns also :func:`require_task` (one line naming the model's task and the verb that serves
it when a verb gets the wrong kind of model), :func:`load_for_task` (what a verb loads: the
model of its task or that one-line refusal — an HF BERT dir without the head is refused, never
given a random head) and :func:`model_name`.
Imports: stdlib, :mod:`dhian.models` (families, model_dir, device, precision),
:mod:`dhian.interop.hf_dirs`, :mod:`dhian.errors`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dhian.errors import ModelLoadError, nearest
from dhian.interop.hf_dirs import hf_model_type, is_hf_dir, load_hf_dir
from dhian.models import families, precision
from dhian.models.device import choose_device
from dhian.models.families import builtin_names, family_for_builtin, family_for_suffix, resolve
from dhian.models.model_dir import CONFIG, WEIGHTS, LoadedModel, load_model_dir

__all__ = [
    "VERB_FOR_TASK",
    "load_for_task",
    "load_model",
    "model_name",
    "require_task",
    "resolve_model_dir",
]

#: the dhian verb that serves each task (for "wrong kind" errors)
VERB_FOR_TASK = {
    "translation": "dhian translate",
    "classification": "dhian classify",
    "lm": "dhian generate",
    "mlm": "dhian fill-mask",
    "backbone": "dhian train (fine-tune a head on it) or dhian attention",
    "token_classification": "dhian tag",
    "question_answering": "dhian answer",
}

#: what a model of each task is called in messages
TASK_NAMES = {
    "translation": "translation",
    "classification": "classifier",
    "lm": "language",
    "mlm": "masked-LM",
    "backbone": "backbone",
    "token_classification": "token classifier",
    "question_answering": "question-answering",
}


def resolve_model_dir(path: str | Path) -> Path:
    """The model dir that ``path`` names: itself (dhian model dir or HF dir with
    ``config.json``), or for a training run dir its ``best/`` (else ``last/``)."""
    d = Path(path)
    if not d.exists():
        raise ModelLoadError(f"model dir {str(d)!r} does not exist")
    if not d.is_dir():
        raise ModelLoadError(f"{str(d)!r} is a file, not a model dir")
    if (d / WEIGHTS).is_file() or (d / "config.json").is_file():
        return d
    for sub in ("best", "last"):
        if (d / sub / WEIGHTS).is_file():
            return d / sub
    if (d / CONFIG).is_file():
        raise ModelLoadError(
            f"run dir {d} has no checkpoint yet (no best/ or last/ with {WEIGHTS}); wait for the "
            "first save or lower train.save_every"
        )
    raise ModelLoadError(
        f"{d} is neither a model dir ({CONFIG} + {WEIGHTS}), a run dir with best/ or last/, "
        "nor an HF dir (config.json); give the dir that `dhian train` wrote"
    )


def _read(
    source: str | Path, dtype: str, where: torch.device, **options: Any
) -> tuple[LoadedModel, str | None]:
    """The source as a LoadedModel (on CPU, before device and precision) and, for a built-in
    or single file, the resolved precision it was handed (it may already be in it); None for
    a directory (its family's default applies)."""
    path = Path(source)
    builtin = None if path.exists() else family_for_builtin(str(source))
    if builtin is not None:
        want = _resolve_auto(builtin, source, dtype, where)
        loaded: LoadedModel = resolve(builtin.builtins[str(source)])(dtype=want, **options)
        return loaded, want
    family = family_for_suffix(path.suffix) if path.is_file() else None
    if family is not None:
        want = _resolve_auto(family, path, dtype, where)
        loaded = resolve(family.file_import[path.suffix.lower()])(path, dtype=want, **options)
        return loaded, want
    if not path.exists() and builtin_names():
        raise ModelLoadError(
            f"{str(source)!r} does not exist and is not a built-in model"
            f"{nearest(str(source), builtin_names())}; built-ins: {', '.join(builtin_names())}"
        )
    directory = resolve_model_dir(path)
    if is_hf_dir(directory):
        return load_hf_dir(directory, **options), None
    return load_model_dir(directory), None


def _resolve_auto(
    family: families.Family, source: str | Path, dtype: str, where: torch.device
) -> str:
    """``dtype`` with ``auto`` resolved for this file or built-in: the family's ``auto_dtype``
    rule where it has one (e.g. a GGUF file's own 4-bit blocks), else its ``default_dtype``."""
    if dtype == precision.AUTO and family.auto_dtype is not None:
        return str(resolve(family.auto_dtype)(source, where))
    return precision.resolve_precision(dtype, family.default_dtype)


def load_model(
    source: str | Path, device: str = "cpu", dtype: str = "fp32", **options: Any
) -> LoadedModel:
    """Load any model source (see the module docstring) onto ``device`` (``auto`` = CUDA when
    available), in eval mode, in precision ``dtype`` (fp32 | bf16 | int8 | int4 | int4-fp32
    (LLaMA) | auto = the family's ``auto_dtype`` rule for a file or built-in, else its
    ``default_dtype``; see :func:`dhian.models.precision.apply_precision`).
    ``options`` go to a foreign importer (e.g. ``task=``, ``num_labels=`` for an HF BERT dir);
    a dhian dir knows its task and ignores them."""
    precision.check_precision(dtype)
    where = choose_device(device)
    loaded, want = _read(source, dtype, where, **options)
    if want is None:
        mtype = str(getattr(loaded.config.model, "type", ""))
        default = families.family_of(mtype).default_dtype if mtype else "fp32"
        want = precision.resolve_precision(dtype, default)
    loaded.model.to(where)
    loaded.model.eval()
    loaded.model = precision.apply_precision(loaded.model, want)
    return loaded


def load_for_task(
    source: str | Path, verb: str, task: str, device: str = "cpu", dtype: str = "fp32"
) -> LoadedModel:
    """Load ``source`` for ``dhian {verb}``, which needs a model of ``task``: an HF BERT dir is
    imported with that head, which must be in the checkpoint (a missing head is a
    :class:`ModelLoadError` naming it and the checkpoint kind that has it); any other source
    must have been saved for ``task`` (:func:`require_task`)."""
    path = Path(source)
    hf_bert = path.is_dir() and is_hf_dir(path) and hf_model_type(path) == "bert"
    options: dict[str, Any] = {"task": task, "require_head": True} if hf_bert else {}
    loaded = load_model(source, device, dtype, **options)
    require_task(loaded, source, verb, task)
    return loaded


def require_task(loaded: LoadedModel, path: str | Path, verb: str, *tasks: str) -> None:
    """Raise :class:`ModelLoadError` unless ``loaded`` was trained for one of ``tasks``."""
    if loaded.kind in tasks:
        return
    mtype = str(getattr(loaded.config.model, "type", "?"))
    if loaded.kind == "backbone":
        raise ModelLoadError(
            f"{path} holds a {mtype} backbone without the {' or '.join(tasks)} head that dhian "
            f"{verb} needs; fine-tune one on it with dhian train (model.task={tasks[0]}) or give "
            "a checkpoint that has the head"
        )
    other = VERB_FOR_TASK.get(loaded.kind, "the verb for that kind")
    fits = [t for f in families.FAMILIES if f.task in tasks for t in f.model_types]
    fits += [f"HF {t}" for f in families.FAMILIES if f.task in tasks for t in f.hf_model_types]
    wanted = " or ".join(f"{TASK_NAMES.get(t, t)} ({t})" for t in tasks)
    raise ModelLoadError(
        f"{path} holds a {loaded.kind!r} model ({mtype}); dhian {verb} needs a {wanted} model "
        f"({', '.join(fits) or 'none yet'}); use {other} for this one"
    )


def model_name(path: str | Path) -> str:
    """A short name for a model dir: ``runs/x/best`` → ``x/best``, ``/tmp/m`` → ``m``."""
    p = Path(path).resolve()
    if p.name in ("best", "last", "model", "final") and p.parent.name:
        return f"{p.parent.name}/{p.name}"
    return p.name
