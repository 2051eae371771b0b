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
it when a verb gets the wrong kind of model) and :func:`model_name`.
Imports: stdlib, :mod:`dhian.models` (families, model_dir, device, precision),
:mod:`dhian.interop.hf_dirs`, :mod:`dhian.errors`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dhian.errors import ModelLoadError, nearest
from dhian.interop.hf_dirs import is_hf_dir, load_hf_dir
from dhian.models import families, precision
from dhian.models.device import choose_device
from dhian.models.families import builtin_names, family_for_builtin, family_for_suffix, resolve
from dhian.models.model_dir import CONFIG, WEIGHTS, LoadedModel, load_model_dir

__all__ = [
    "VERB_FOR_TASK",
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
    "backbone": "dhian fill-mask or dhian classify (after fine-tuning)",
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


def _read(source: str | Path, dtype: str, **options: Any) -> LoadedModel:
    """The source as a LoadedModel (on CPU, before device and precision; a built-in or single
    file is handed the resolved ``dtype`` and may already be in it)."""
    path = Path(source)
    builtin = None if path.exists() else family_for_builtin(str(source))
    if builtin is not None:
        want = precision.resolve_precision(dtype, builtin.default_dtype)
        loaded: LoadedModel = resolve(builtin.builtins[str(source)])(dtype=want, **options)
        return loaded
    family = family_for_suffix(path.suffix) if path.is_file() else None
    if family is not None:
        want = precision.resolve_precision(dtype, family.default_dtype)
        loaded = resolve(family.file_import[path.suffix.lower()])(path, dtype=want, **options)
        return loaded
    if not path.exists() and builtin_names():
        raise ModelLoadError(
            f"{str(source)!r} does not exist and is not a built-in model"
            f"{nearest(str(source), builtin_names())}; built-ins: {', '.join(builtin_names())}"
        )
    directory = resolve_model_dir(path)
    if is_hf_dir(directory):
        return load_hf_dir(directory, **options)
    return load_model_dir(directory)


def load_model(
    source: str | Path, device: str = "cpu", dtype: str = "fp32", **options: Any
) -> LoadedModel:
    """Load any model source (see the module docstring) onto ``device`` (``auto`` = CUDA when
    available), in eval mode, in precision ``dtype`` (fp32 | bf16 | int8 | int4 (LLaMA) | auto
    = the family's ``default_dtype``, see :func:`dhian.models.precision.apply_precision`).
    ``options`` go to a foreign importer (e.g. ``task=``, ``num_labels=`` for an HF BERT dir);
    a dhian dir knows its task and ignores them."""
    precision.check_precision(dtype)
    where = choose_device(device)
    loaded = _read(source, dtype, **options)
    mtype = str(getattr(loaded.config.model, "type", ""))
    default = families.family_of(mtype).default_dtype if mtype else "fp32"
    loaded.model.to(where)
    loaded.model.eval()
    loaded.model = precision.apply_precision(
        loaded.model, precision.resolve_precision(dtype, default)
    )
    return loaded


def require_task(loaded: LoadedModel, path: str | Path, verb: str, *tasks: str) -> None:
    """Raise :class:`ModelLoadError` unless ``loaded`` was trained for one of ``tasks``."""
    if loaded.kind in tasks:
        return
    mtype = str(getattr(loaded.config.model, "type", "?"))
    other = VERB_FOR_TASK.get(loaded.kind, "the verb for that kind")
    fits = [t for f in families.FAMILIES if f.task in tasks for t in f.model_types]
    fits += [f"HF {t}" for f in families.FAMILIES if f.task in tasks for t in f.hf_model_types]
    raise ModelLoadError(
        f"{path} holds a {loaded.kind!r} model ({mtype}); dhian {verb} needs a "
        f"{' or '.join(tasks)} model ({', '.join(fits) or 'none yet'}); use {other} for this one"
    )


def model_name(path: str | Path) -> str:
    """A short name for a model dir: ``runs/x/best`` → ``x/best``, ``/tmp/m`` → ``m``."""
    p = Path(path).resolve()
    if p.name in ("best", "last", "model", "final") and p.parent.name:
        return f"{p.parent.name}/{p.name}"
    return p.name
