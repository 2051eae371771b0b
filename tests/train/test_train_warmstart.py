"""``train.init_from`` from a HuggingFace dir (converted by dhian.interop) and bad sources."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dhian.errors import ModelLoadError
from dhian.models import build_model
from dhian.train.warmstart import init_source, load_init_weights

transformers = pytest.importorskip("transformers")


def test_init_from_hf_bert_dir(tmp_path: Path) -> None:
    from dhian.interop.registry import load_hf_dir

    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "##s"]
    cfg = transformers.BertConfig(
        vocab_size=len(tokens),
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=16,
    )
    torch.manual_seed(0)
    hf = transformers.BertModel(cfg)
    d = tmp_path / "hf"
    hf.save_pretrained(str(d))
    (d / "vocab.txt").write_text("\n".join(tokens) + "\n")

    assert init_source(d) == d  # the tokenizer loads from the HF dir itself
    reference = load_hf_dir(d)
    torch.manual_seed(1)
    fresh = build_model(reference.config.model, **reference.build_kwargs)
    lines: list[str] = []
    missing = load_init_weights(fresh, d, lines.append)
    assert missing == []
    want = reference.model.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in fresh.state_dict().items())
    assert lines and "0 tensors left as initialised" in lines[0]


def test_bad_init_sources(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not a directory"):
        init_source(tmp_path / "missing")
    with pytest.raises(ModelLoadError, match="neither a dhian model dir"):
        init_source(tmp_path)
