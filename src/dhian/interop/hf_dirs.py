"""HuggingFace model directories in and out, dispatched by the family records.

Owns reading an HF dir's ``config.json`` ``model_type`` (:func:`hf_model_type`) and the three
HF operations, each of which looks the family up in :mod:`dhian.models.families` (``hf_model_types``,
``hf_import``, ``hf_export``) instead of keeping a table of its own:

- :func:`load_hf_dir` — an HF dir → :class:`~dhian.models.model_dir.LoadedModel`;
- :func:`import_hf_dir` — an HF dir → a dhian model dir on disk;
- :func:`export_hf_dir` — a :class:`LoadedModel` → an HF dir.

Loading *any* model (dhian dir, run dir, HF dir, GGUF file, built-in name) is
:func:`dhian.inference.load_model`, one layer up. Imports: stdlib, :mod:`dhian.models`
(families, model_dir), :mod:`dhian.errors`; the family importers on first use.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dhian.errors import ConfigError, ModelLoadError, nearest
from dhian.models.families import FAMILIES, family_for_hf_type, family_of, resolve
from dhian.models.model_dir import CONFIG, LoadedModel, atomic_dir, save_model_dir

__all__ = ["export_hf_dir", "hf_model_type", "import_hf_dir", "is_hf_dir", "load_hf_dir"]


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


def is_hf_dir(path: str | Path) -> bool:
    """Whether ``path`` is an HF model dir with a ``model_type``."""
    return Path(path).is_dir() and hf_model_type(path) is not None


def load_hf_dir(path: str | Path, **options: Any) -> LoadedModel:
    """Read an HF model dir with the importer of its family (``options`` go to it, e.g.
    ``task=``, ``num_labels=`` for BERT)."""
    d = Path(path)
    mtype = hf_model_type(d)
    if mtype is None:
        raise ModelLoadError(f"{d} is not a HuggingFace model dir (no config.json model_type)")
    family = family_for_hf_type(mtype)
    if family is None or family.hf_import is None:
        supported = sorted(t for f in FAMILIES if f.hf_import for t in f.hf_model_types)
        raise ModelLoadError(
            f"cannot import HF model_type {mtype!r}{nearest(mtype, supported)}; "
            f"supported: {', '.join(supported)}"
        )
    loaded: LoadedModel = resolve(family.hf_import)(d, **options)
    return loaded


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


def export_hf_dir(loaded: LoadedModel, out_dir: str | Path) -> Path:
    """Write a loaded model as an HF dir at ``out_dir`` with its family's exporter: into a
    temp dir, swapped in complete (:func:`~dhian.models.model_dir.atomic_dir`), so a failed
    export leaves ``out_dir`` as it was and a replaced one never mixes two models' files."""
    mtype = str(getattr(loaded.config.model, "type", ""))
    try:
        family = family_of(mtype)
    except ConfigError:
        family = None
    if family is None or family.hf_export is None:
        exportable = sorted(t for f in FAMILIES if f.hf_export for t in f.model_types)
        raise ModelLoadError(
            f"no HuggingFace export for model.type {mtype!r}; exportable: {', '.join(exportable)}"
        )
    with atomic_dir(out_dir) as tmp:
        resolve(family.hf_export)(loaded, tmp)
    return Path(out_dir)
