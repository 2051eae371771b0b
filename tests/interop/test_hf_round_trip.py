"""Every family dhian exports to HuggingFace comes back with ``dhian import-hf``: a
dhian-trained model (its own tokenizer with ``<pad>``/``<unk>``/``<mask>`` specials, not BERT's
``[PAD]``...) → ``export-hf`` → ``import-hf`` gives the same tokenizer (ids and roles) and the
same outputs. Families: BERT (masked LM, classifier), transformer (Marian layout), LLaMA."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from dhian.cli import main
from dhian.config import DataConfig, RunConfig
from dhian.inference.load import load_model
from dhian.models.families import build_model
from dhian.models.llama.config import LlamaConfig
from dhian.models.model_dir import save_model_dir
from dhian.models.transformer.config import TransformerConfig
from dhian.text import train_tokenizer
from helpers.tiny_models import PAIRS, TEXTS, save_tiny


def _marian_dir(out: Path) -> Path:
    """A dhian transformer in Marian's layout (sinusoidal_marian, post-norm), joint BPE."""
    torch.manual_seed(0)
    tok = train_tokenizer("bpe", [t for p in PAIRS for t in p] * 3, 120)
    cfg = TransformerConfig(
        embed_dim=16, num_heads=2, ff_dim=32, enc_layers=2, dec_layers=2, dropout=0.0,
        positions="sinusoidal_marian", norm="post", output_bias=True, max_positions=64,
    )  # fmt: skip
    kwargs = {"src_vocab_size": tok.vocab_size, "tgt_vocab_size": tok.vocab_size}
    kwargs |= {"pad_id": tok.pad_id, "bos_id": tok.bos_id, "eos_id": tok.eos_id}
    model = build_model(cfg, **kwargs).eval()
    run = RunConfig(model=cfg, data=DataConfig(max_len=32))
    return save_model_dir(out, model, run, tok, kind="translation", build_kwargs=kwargs)


def _llama_dir(out: Path) -> Path:
    torch.manual_seed(0)
    tok = train_tokenizer("bytebpe", TEXTS * 3, 300)
    cfg = LlamaConfig(
        vocab_size=tok.vocab_size, dim=16, n_layers=2, n_heads=2, n_kv_heads=1, ffn_dim=32,
        max_seq_len=64, bos_id=tok.bos_id, eos_id=tok.eos_id, pad_id=tok.pad_id,
    )  # fmt: skip
    kwargs = {"src_vocab_size": tok.vocab_size, "tgt_vocab_size": tok.vocab_size}
    model = build_model(cfg, **kwargs).eval()
    run = RunConfig(model=cfg, data=DataConfig(max_len=32))
    return save_model_dir(out, model, run, tok, kind="lm", build_kwargs=kwargs)


def _outputs(loaded: Any, kind: str) -> torch.Tensor:
    tok = loaded.tokenizers["src"]
    ids = torch.tensor([tok.encode("Und Gott sprach: Es werde Licht!")[:12]])
    with torch.no_grad():
        if kind == "translation":
            lens = torch.tensor([ids.size(1)])
            tgt = torch.tensor([[loaded.model.bos_id, *ids[0, :5].tolist()]])
            return loaded.model(ids, lens, tgt).logits
        out = loaded.model(ids)
        return out.logits if hasattr(out, "logits") else out


#: The special tokens each family's HF form carries (an HF LLM keeps BOS/EOS only).
ROLES = {
    "bert-mlm": ("pad_id", "unk_id", "mask_id", "cls_id", "sep_id"),
    "bert-cls": ("pad_id", "unk_id", "cls_id", "sep_id"),
    "llama": ("bos_id", "eos_id"),
}


@pytest.mark.parametrize("family", ["bert-mlm", "bert-cls", "marian", "llama"])
def test_export_then_import_gives_the_same_model(family: str, tmp_path: Path) -> None:
    if family == "marian":
        original = _marian_dir(tmp_path / "dhian")
    elif family == "llama":
        original = _llama_dir(tmp_path / "dhian")
    else:
        original = save_tiny(family, tmp_path / "dhian")
    assert main(["export-hf", str(original), str(tmp_path / "hf")]) == 0
    assert main(["import-hf", str(tmp_path / "hf"), str(tmp_path / "back")]) == 0
    before, after = load_model(original), load_model(tmp_path / "back")
    assert after.kind == before.kind
    tok_a, tok_b = before.tokenizers["src"], after.tokenizers["src"]
    text = "Im Anfang schuf Gott Himmel und Erde."
    want = _outputs(before, before.kind)
    if family == "marian":
        # the Marian export moves <pad> (id 0) to the last id for CTranslate2: ids above it
        # shift down by one, and the vocabulary axis of the outputs with them
        assert tok_a.pad_id == 0 and tok_b.pad_id == tok_a.vocab_size - 1
        assert tok_b.encode(text) == [i - 1 for i in tok_a.encode(text)]
        for role in ("unk_id", "eos_id"):
            assert getattr(tok_b, role) == getattr(tok_a, role) - 1, role
        want = torch.cat([want[..., 1:], want[..., :1]], dim=-1)  # old id i → new id i-1
    else:
        assert tok_b.encode(text) == tok_a.encode(text)
        for role in ROLES[family]:
            assert getattr(tok_b, role) == getattr(tok_a, role), role
    torch.testing.assert_close(_outputs(after, before.kind), want)
