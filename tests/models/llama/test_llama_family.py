"""The llama family record at work: ``load_model`` takes the built-in name, the ``.gguf`` file, a
dhian model dir and an HF ``LlamaForCausalLM`` dir; ``save_model_dir`` and the HF export/import
records round-trip a (tiny) llama with its tokenizer and chat template."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dhian.config import DataConfig, RunConfig
from dhian.inference.load import load_model
from dhian.interop.hf_dirs import export_hf_dir, import_hf_dir
from dhian.models.families import family_of
from dhian.models.llama.config import LlamaConfig
from dhian.models.llama.model import LlamaModel
from dhian.models.model_dir import LoadedModel, save_model_dir
from helpers.smollm2 import smollm2_path


def _tiny(tokenizer: Any) -> LoadedModel:
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=tokenizer.vocab_size, dim=16, n_layers=2, n_heads=4, n_kv_heads=2,
        ffn_dim=24, max_seq_len=64, eos_id=tokenizer.eos_id, bos_id=tokenizer.bos_id,
    )  # fmt: skip
    model = family_of("llama").build(cfg, tokenizer.vocab_size, tokenizer.vocab_size).eval()
    run = RunConfig(model=cfg, data=DataConfig(tokenizer="bytebpe", vocab_size=cfg.vocab_size))
    return LoadedModel(model, run, {"src": tokenizer, "tgt": tokenizer}, "lm")


def _logits(model: Any, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids]))[0]  # (1, T, V)


def test_builtin_name_and_gguf_path_load_the_same_model(smollm2: Any) -> None:
    by_name = load_model("smollm2")
    by_path = load_model(smollm2_path())
    assert isinstance(by_name.model, LlamaModel) and by_name.kind == "lm"
    assert by_name.config.model.type == "llama" and by_name.config.model.n_kv_heads == 3
    tok = by_name.tokenizers["src"]
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    ids = tok.encode("Attention is all you need.")
    assert torch.equal(_logits(by_name.model, ids), _logits(by_path.model, ids))
    # load_model's fp32 weights are stored column-major (another GEMM summation order than
    # load_gguf's plain model): the same values, logits equal up to float rounding
    torch.testing.assert_close(
        _logits(by_name.model, ids), _logits(smollm2[1], ids), rtol=1e-5, atol=1e-4
    )


def test_dhian_dir_and_hf_dir_round_trips(smollm2: Any, tmp_path: Path) -> None:
    tiny = _tiny(smollm2[2])
    ids = smollm2[2].encode("Grouped-query attention shares keys.")
    want = _logits(tiny.model, ids)

    save_model_dir(tmp_path / "dhian", tiny.model, tiny.config, tiny.tokenizers, kind="lm")
    back = load_model(tmp_path / "dhian")
    assert back.kind == "lm" and back.config.model == tiny.config.model
    assert back.tokenizers["src"].chat_template == smollm2[2].chat_template
    assert torch.equal(_logits(back.model, ids), want)

    export_hf_dir(back, tmp_path / "hf")
    assert (tmp_path / "hf" / "config.json").is_file()
    from_hf = load_model(tmp_path / "hf")
    assert from_hf.tokenizers["src"].encode("Grouped-query attention shares keys.") == ids
    assert from_hf.tokenizers["src"].chat_template == smollm2[2].chat_template
    torch.testing.assert_close(_logits(from_hf.model, ids), want, rtol=0, atol=1e-6)

    import_hf_dir(tmp_path / "hf", tmp_path / "imported")
    again = load_model(tmp_path / "imported")
    torch.testing.assert_close(_logits(again.model, ids), want, rtol=0, atol=1e-6)
