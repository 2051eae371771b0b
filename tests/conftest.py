"""Suite-wide test settings.

Tiny models run many times faster on one torch thread than on two when the machine's two
cores are shared, so every test runs single-threaded unless it sets its own count.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from helpers.tiny_models import save_tiny

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny saved models of every family, built on first use once per session:
    ``tiny_dirs["rnnsearch"]`` etc. (see helpers.tiny_models.KINDS)."""

    class Dirs(dict[str, Path]):
        def __missing__(self, kind: str) -> Path:
            path = save_tiny(kind, tmp_path_factory.mktemp(kind) / "model")
            self[kind] = path
            return path

    return Dirs()
