"""Which HF importer/exporter handles which model, and "any model dir" loading.

Owns two small registries — HF ``config.json`` ``model_type`` → importer, dhian ``model.type``
→ exporter — (entries are callables or lazily imported ``"module:function"`` strings, so
loading BERT never imports Marian) and the dispatchers the CLI and other layers call:

- :func:`load_any_model_dir` — a dhian model dir (``config.yaml``) or an HF dir
  (``config.json`` with a registered ``model_type``) → :class:`~dhian.models.io.LoadedModel`;
- :func:`import_hf_dir` — an HF dir → a dhian model dir on disk;
- :func:`export_hf_dir` — a dhian model dir (or a :class:`LoadedModel`) → an HF dir.

An importer is ``fn(directory: Path, **options) -> LoadedModel``; an exporter is
``fn(loaded: LoadedModel, out_dir: Path) -> Path``. Register new families with
:func:`register_hf_importer` / :func:`register_hf_exporter` (or add a line below).
Imports: stdlib, :mod:`dhian.models.io`, :mod:`dhian.errors`; family modules lazily.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dhian.errors import ModelLoadError, nearest
from dhian.models.io import CONFIG, LoadedModel, load_model_dir, save_model_dir

__all__ = [
    "export_hf_dir",
    "hf_model_type",
    "import_hf_dir",
    "load_any_model_dir",
    "load_hf_dir",
    "register_hf_exporter",
    "register_hf_importer",
]

Importer = Callable[..., LoadedModel]
Exporter = Callable[..., Path]

_IMPORTERS: dict[str, str | Importer] = {
    "bert": "dhian.interop.bert:load_hf_bert",
    "marian": "dhian.interop.registry:_load_marian",
}
_EXPORTERS: dict[str, str | Exporter] = {
    "bert": "dhian.interop.bert:export_loaded_bert",
    "transformer": "dhian.interop.registry:_export_marian",
}


def register_hf_importer(hf_model_type: str, fn: str | Importer) -> None:
    """Use ``fn`` to read HF dirs whose ``config.json`` says ``model_type: hf_model_type``."""
    _IMPORTERS[hf_model_type] = fn


def register_hf_exporter(model_type: str, fn: str | Exporter) -> None:
    """Use ``fn`` to export dhian models of ``model.type == model_type`` to HF."""
    _EXPORTERS[model_type] = fn


def _resolve(table: dict[str, Any], key: str) -> Callable[..., Any]:
    target = table[key]
    if isinstance(target, str):
        module, _, func = target.partition(":")
        target = getattr(importlib.import_module(module), func)
        table[key] = target
    return target


def hf_model_type(path: str | Path) -> str | None:
    """The ``model_type`` of an HF dir (``config.json`` and no dhian ``config.yaml``), else None."""
    d = Path(path)
    if not (d / "config.json").is_file() or (d / CONFIG).is_file():
        return None
    try:
        value = json.loads((d / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError) as exc:
        raise ModelLoadError(f"{d / 'config.json'} is not a readable HF config: {exc}") from exc
    return str(value) if value else None


def load_hf_dir(path: str | Path, **options: Any) -> LoadedModel:
    """Read an HF model dir with the importer of its ``model_type`` (``options`` go to it,
    e.g. ``task=``, ``num_labels=`` for BERT)."""
    d = Path(path)
    mtype = hf_model_type(d)
    if mtype is None:
        raise ModelLoadError(f"{d} is not a HuggingFace model dir (no config.json model_type)")
    if mtype not in _IMPORTERS:
        raise ModelLoadError(
            f"cannot import HF model_type {mtype!r}{nearest(mtype, _IMPORTERS)}; "
            f"supported: {', '.join(sorted(_IMPORTERS))}"
        )
    return _resolve(_IMPORTERS, mtype)(d, **options)


def load_any_model_dir(path: str | Path, **options: Any) -> LoadedModel:
    """A dhian model dir, or an HF dir of a registered ``model_type``, as a LoadedModel.

    ``options`` go to the HF importer (ignored for dhian dirs, which know their task).
    """
    d = Path(path)
    if hf_model_type(d) is not None:
        return load_hf_dir(d, **options)
    return load_model_dir(d)


def import_hf_dir(path: str | Path, out_dir: str | Path, **options: Any) -> Path:
    """Convert an HF model dir into a dhian model dir at ``out_dir`` (written atomically)."""
    loaded = load_hf_dir(path, **options)
    toks = loaded.tokenizers
    if not toks or all(t is None for t in toks.values()):
        raise ModelLoadError(f"{path} has no tokenizer dhian can read; a dhian model dir needs one")
    return save_model_dir(
        out_dir,
        loaded.model,
        loaded.config,
        toks,
        kind=loaded.kind,
        build_kwargs=loaded.build_kwargs or None,
    )


def export_hf_dir(model: str | Path | LoadedModel, out_dir: str | Path) -> Path:
    """Write a model (a dhian/HF model dir or a LoadedModel) as an HF dir at ``out_dir``."""
    loaded = model if isinstance(model, LoadedModel) else load_any_model_dir(model)
    mtype = str(getattr(loaded.config.model, "type", ""))
    if mtype not in _EXPORTERS:
        raise ModelLoadError(
            f"no HuggingFace export for model.type {mtype!r}; exportable: "
            f"{', '.join(sorted(_EXPORTERS))}"
        )
    return _resolve(_EXPORTERS, mtype)(loaded, Path(out_dir))


# --------------------------------------------------------------------------- Marian adapters


def _load_marian(path: Path, **_: Any) -> LoadedModel:
    from dhian.config import RunConfig
    from dhian.interop.marian import load_marian

    imp = load_marian(path)
    return LoadedModel(
        imp.model,
        RunConfig(model=imp.config),
        imp.tokenizers or {},
        "translation",
        dict(imp.build_kwargs),
    )


def _export_marian(loaded: LoadedModel, out_dir: Path) -> Path:
    from dhian.interop.marian import export_marian

    model: Any = loaded.model
    return export_marian(model, loaded.config, loaded.tokenizers or None, out_dir)
