"""Register the toy model config of ``train_toy`` for each training test; one torch thread
(the toy models are tiny, and thread hand-offs dominate on a busy machine)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from train_toy import ToyConfig

from dhian import config


@pytest.fixture(autouse=True)
def _toy_model_type(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(config._MODEL_CONFIGS, "train_toy", ToyConfig)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
