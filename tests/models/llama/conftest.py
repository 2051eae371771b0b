"""Fixtures of tests/models/llama: SmolLM2 loaded once per package by dhian (from the GGUF)
and by HF transformers (the oracle)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from helpers.smollm2 import hf_gguf_model, hf_gguf_tokenizer, smollm2_path
from helpers.threads import torch_threads


@pytest.fixture(autouse=True)
def few_threads() -> Iterator[None]:
    with torch_threads(2):
        yield


@pytest.fixture(scope="package")
def smollm2() -> tuple[Any, Any, Any, Any]:
    """dhian's ``load_gguf``: (config, model, tokenizer, chat_template)."""
    from dhian.interop.gguf import load_gguf

    return load_gguf(smollm2_path())


@pytest.fixture(scope="package")
def hf_smollm2() -> Any:
    """HF ``AutoModelForCausalLM`` of the same GGUF, float32."""
    return hf_gguf_model(smollm2_path())


@pytest.fixture(scope="package")
def hf_smollm2_tokenizer() -> Any:
    return hf_gguf_tokenizer(smollm2_path())
