"""HuggingFace interoperability: export dhian models to HF formats and import HF checkpoints.

Owns the parameter-name and config mappings between dhian model families and HF ones (BERT in
:mod:`dhian.interop.bert`, Marian for the translation transformer in
:mod:`dhian.interop.marian`) and the dispatch in :mod:`dhian.interop.registry`. Weights only,
safetensors only — pickled checkpoints are refused. Family modules load lazily (importing the
BERT mapping never imports Marian); the Marian names below resolve on first access.
Sits beside :mod:`dhian.models`: imports models, nn, text and errors; nothing above.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dhian.interop.marian import (
        MarianImport,
        export_marian,
        import_marian,
        load_marian,
        marian_config,
    )

__all__ = ["MarianImport", "export_marian", "import_marian", "load_marian", "marian_config"]

_LAZY = {name: "dhian.interop.marian" for name in __all__}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
