"""HF LlamaForCausalLM directories: a tiny random HF model (HF is the oracle) imports with
identical logits (GQA, rope theta, tied and untied heads), and an exported dhian model loads in
HF ``AutoModelForCausalLM`` with identical logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dhian.errors import ModelLoadError
from dhian.interop.hf_llama import export_hf_llama, import_hf_llama
from dhian.models.llama.config import LlamaConfig
from dhian.models.llama.model import build_llama

transformers = pytest.importorskip("transformers")


def _hf_tiny(tie: bool, seed: int = 0) -> object:
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=97, hidden_size=48, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=2, intermediate_size=80, rope_theta=5000.0, rms_norm_eps=1e-5,
        max_position_embeddings=64, tie_word_embeddings=tie, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # HF inits norms to ones; make them matter
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.mark.parametrize("tie", [False, True])
def test_import_matches_hf_logits(tmp_path: Path, tie: bool) -> None:
    hf = _hf_tiny(tie)
    hf.save_pretrained(tmp_path)
    cfg, model, tok, template = import_hf_llama(tmp_path)
    assert (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.rope_theta) == (6, 2, 8, 5000.0)
    assert cfg.tie_embeddings is tie and tok is None and template is None
    ids = torch.randint(0, 97, (2, 33), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, _ = model(ids)
        theirs = hf(ids).logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("tie", [False, True])
def test_export_loads_in_hf_with_identical_logits(tmp_path: Path, tie: bool) -> None:
    cfg = LlamaConfig(
        vocab_size=89, dim=40, n_layers=2, n_heads=4, n_kv_heads=1, ffn_dim=72,
        rope_theta=100000.0, max_seq_len=64, tie_embeddings=tie, eos_id=2,
    )  # fmt: skip
    torch.manual_seed(3)
    model = build_llama(cfg).eval()
    export_hf_llama(model, cfg, None, tmp_path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    ids = torch.randint(0, 89, (2, 40), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours, _ = model(ids)
        theirs = hf(ids).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
    _, back, _, _ = import_hf_llama(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(back(ids)[0], ours, atol=0, rtol=0)


def test_export_with_smollm2_tokenizer_loads_in_hf_autotokenizer(tmp_path: Path) -> None:
    from dhian.interop.gguf import read_gguf
    from dhian.text.gguf_tokenizer import tokenizer_from_gguf
    from helpers.smollm2 import smollm2_path

    file = read_gguf(smollm2_path())
    tok = tokenizer_from_gguf(file)
    template = file.metadata["tokenizer.chat_template"]
    cfg = LlamaConfig(vocab_size=49152, dim=16, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=32,
                      bos_id=tok.bos_id, eos_id=tok.eos_id, pad_id=tok.pad_id)  # fmt: skip
    export_hf_llama(build_llama(cfg), cfg, tok, tmp_path, chat_template=template)
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    text = "Grüße, ਧਿਆਨ 🤗 12345 <|im_end|>"
    assert hf_tok.encode(text, add_special_tokens=False) == tok.encode(text)
    msgs = [{"role": "user", "content": "hi"}]
    assert "<|im_start|>assistant" in hf_tok.apply_chat_template(
        msgs, tokenize=False, add_generation_prompt=True
    )
    _, _, back_tok, back_template = import_hf_llama(tmp_path)
    assert back_tok is not None and back_template == template
    assert back_tok.encode(text) == tok.encode(text) and back_tok.eos_id == tok.eos_id


def test_unsupported_config_names_the_value(tmp_path: Path) -> None:
    hf = _hf_tiny(False)
    hf.config.hidden_act = "gelu"
    hf.save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="hidden_act 'gelu'"):
        import_hf_llama(tmp_path)
