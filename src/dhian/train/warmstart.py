"""``train.init_from``: start a run from the weights (and tokenizer) of an existing model dir.

Owns :func:`init_source` (where the tokenizer of ``init_from`` lives, checked before any work)
and :func:`load_init_weights` (copy every weight whose name and shape fit; report the rest).
A dhian model dir is read with :mod:`dhian.models.io`; a HuggingFace dir (``config.json`` with a
``model_type`` dhian can import) is converted by :mod:`dhian.interop.registry` first.
Imports: stdlib, torch, :mod:`dhian.models.io`, :mod:`dhian.interop`, :mod:`dhian.errors`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from dhian.errors import ModelLoadError
from dhian.models import io as model_io


def _is_hf(path: Path) -> bool:
    from dhian.interop.registry import hf_model_type

    return hf_model_type(path) is not None


def init_source(path: str | Path) -> Path:
    """Check ``init_from`` and return the directory its tokenizer loads from."""
    d = Path(path)
    if not d.is_dir():
        raise ModelLoadError(f"train.init_from {str(d)!r} is not a directory")
    if (d / model_io.CONFIG).is_file():
        model_io.read_metadata(d)  # a corrupt/foreign weights file fails here, before any work
        return d / model_io.TOKENIZER
    if _is_hf(d):
        return d  # dhian.text loads HF tokenizer.json / vocab.txt dirs
    raise ModelLoadError(
        f"train.init_from {str(d)!r} is neither a dhian model dir (config.yaml) nor a "
        "HuggingFace dir (config.json)"
    )


def load_init_weights(
    model: torch.nn.Module, path: str | Path, log: Callable[[str], None] = print
) -> list[str]:
    """Copy the weights of ``path`` into ``model`` where names and shapes match.

    Returns the names left as initialised (e.g. a new classification head). Shape mismatches
    and a checkpoint sharing no name with ``model`` raise ModelLoadError.
    """
    d = Path(path)
    if (d / model_io.CONFIG).is_file():
        missing, unexpected = model_io.load_weights(d, model, strict=False)
    else:
        from dhian.interop.registry import load_hf_dir

        source = load_hf_dir(d).model.state_dict()
        own = model.state_dict()
        bad = [
            f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
            for k, v in source.items()
            if k in own and own[k].shape != v.shape
        ]
        if bad:
            raise ModelLoadError(f"weights in {d} do not fit this model: {bad[0]}")
        result = model.load_state_dict(source, strict=False)
        missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
        if len(missing) >= len(own):
            raise ModelLoadError(f"no weight in {d} matches a parameter name of this model")
    log(
        f"init_from {d}: {len(missing)} tensors left as initialised"
        + (f" (e.g. {missing[0]})" if missing else "")
        + (f", {len(unexpected)} unused" if unexpected else "")
    )
    return list(missing)
