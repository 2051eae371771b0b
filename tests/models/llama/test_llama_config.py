"""LlamaConfig validation and the GGUF → config mapping of SmolLM2 (checked against the
gguf package's reader and HF's config from the same file)."""

from __future__ import annotations

import dataclasses

import pytest

from dhian.models.llama.config import LlamaConfig
from helpers.smollm2 import smollm2_path


def test_config_is_frozen_and_errors_name_the_value() -> None:
    cfg = LlamaConfig(vocab_size=10, dim=8, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=16)
    assert cfg.head_dim == 4 and LlamaConfig(**cfg.to_dict()) == cfg
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.dim = 4  # type: ignore[misc]
    with pytest.raises(ValueError, match="n_heads=4 must be a multiple of n_kv_heads=3"):
        LlamaConfig(vocab_size=10, dim=8, n_layers=1, n_heads=4, n_kv_heads=3, ffn_dim=16)
    with pytest.raises(ValueError, match="eos_id=10 is outside"):
        LlamaConfig(
            vocab_size=10, dim=8, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=16, eos_id=10
        )


def test_smollm2_gguf_facts_match_gguf_reader_and_hf_config() -> None:
    import gguf

    from dhian.interop.gguf import llama_config_from_gguf, read_gguf

    path = smollm2_path()
    file = read_gguf(path)
    cfg = llama_config_from_gguf(file)
    reader = gguf.GGUFReader(str(path))
    kinds = [t.tensor_type.name for t in reader.tensors]
    assert (kinds.count("Q4_1"), kinds.count("Q8_0"), kinds.count("F32")) == (210, 1, 61)
    assert file.tensors["token_embd.weight"].type_name == "Q8_0"
    assert file.tensors["token_embd.weight"].shape == (49152, 576)
    assert file.tensors["blk.0.attn_k.weight"].shape == (192, 576)
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
    assert (cfg.n_layers, cfg.dim, cfg.n_heads, cfg.n_kv_heads) == (
        hf.num_hidden_layers, hf.hidden_size, hf.num_attention_heads, hf.num_key_value_heads,
    )  # fmt: skip
    assert (cfg.head_dim, cfg.ffn_dim, cfg.vocab_size, cfg.max_seq_len) == (
        hf.head_dim, hf.intermediate_size, hf.vocab_size, hf.max_position_embeddings,
    )  # fmt: skip
    theta = getattr(hf, "rope_theta", None) or hf.rope_parameters["rope_theta"]
    assert cfg.rope_theta == theta == 100000.0 and cfg.norm_eps == pytest.approx(hf.rms_norm_eps)
    assert cfg.tie_embeddings is bool(hf.tie_word_embeddings) is True
    assert (cfg.bos_id, cfg.eos_id, cfg.pad_id) == (1, 2, 2)


def test_reverse_rope_permute_matches_transformers() -> None:
    import numpy as np
    import torch

    from dhian.interop.gguf import reverse_rope_permute

    pytest.importorskip("transformers")
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    w = np.random.default_rng(0).standard_normal((3 * 64, 576)).astype(np.float32)
    proc = LlamaTensorProcessor(config={"num_attention_heads": 9, "num_key_value_heads": 3})
    expected = proc.process(w, "blk.0.attn_k.weight").weights
    assert torch.equal(reverse_rope_permute(torch.from_numpy(w), 3), torch.from_numpy(expected))
