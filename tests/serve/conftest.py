"""Tiny saved models of every family for the serve tests (built once per session), and
``tiny_models`` (next to these tests) importable under any pytest import mode."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from tiny_models import save_tiny  # noqa: E402


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Lazily built model dirs: ``tiny_dirs["rnnsearch"]`` etc. (see tiny_models.KINDS)."""

    class Dirs(dict[str, Path]):
        def __missing__(self, kind: str) -> Path:
            path = save_tiny(kind, tmp_path_factory.mktemp(kind) / "model")
            self[kind] = path
            return path

    return Dirs()
