"""A family that exists only in tests: the importers a record names for a single-file checkpoint
(``.toy``) and a built-in name, both giving a tiny GPT from the test's recipe. Used to check that
adding a family to :data:`dhian.models.families.FAMILIES` is all the loader needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dhian.config import RunConfig
from dhian.models.gpt.config import GPTConfig
from dhian.models.gpt.model import build_gpt
from dhian.models.model_dir import LoadedModel

CALLS: list[tuple[str, Any]] = []


def _tiny(kind: str, where: Any, options: dict[str, Any]) -> LoadedModel:
    CALLS.append((kind, where))
    cfg = GPTConfig(n_layer=1, n_head=2, n_embd=8, block_size=8, dropout=0.0, vocab_size=11)
    return LoadedModel(build_gpt(cfg, 11), RunConfig(model=cfg), {}, "lm", dict(options))


def load_toy_file(path: Path, **options: Any) -> LoadedModel:
    """The ``file_import`` of the toy family."""
    return _tiny("file", Path(path).name, options)


def load_toy_builtin(**options: Any) -> LoadedModel:
    """The built-in ``toy-tiny`` of the toy family."""
    return _tiny("builtin", "toy-tiny", options)
