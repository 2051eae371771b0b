"""Model dirs: round trip of a real RNNsearch + trained tokenizer, and one-line errors for
missing dirs/files, other model types, corrupt or pickled weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from dhian.config import DataConfig, RunConfig, TrainConfig
from dhian.errors import ModelLoadError
from dhian.models import model_dir as model_io
from dhian.models.families import build_model
from dhian.models.rnn.config import RNNSeq2SeqConfig
from dhian.text import train_tokenizer

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "der hund lief im park"] * 4


def tiny(tmp_path: Path, joint: bool = True) -> tuple[torch.nn.Module, RunConfig, dict, Path]:
    cfg = RunConfig(
        RNNSeq2SeqConfig(type="rnnsearch", embed_dim=8, hidden_dim=8, dropout=0.0),
        DataConfig(corpus="tsv:x", tokenizer="char", vocab_size=40),
        TrainConfig(out_dir=str(tmp_path)),
    )
    src = train_tokenizer("char", TEXTS, 40)
    tgt = src if joint else train_tokenizer("char", TEXTS[:2], 30)
    torch.manual_seed(0)
    model = build_model(cfg.model, src.vocab_size, tgt.vocab_size)
    d = model_io.save_model_dir(tmp_path / "m", model, cfg, {"src": src, "tgt": tgt})
    return model, cfg, {"src": src, "tgt": tgt}, d


def test_round_trip(tmp_path: Path) -> None:
    model, cfg, toks, d = tiny(tmp_path)
    assert (d / "tokenizer" / "dhian_tokenizer.json").is_file()  # shared tokenizer saved once
    loaded = model_io.load_model_dir(d)
    assert loaded.kind == "translation"
    assert loaded.config == cfg
    assert not loaded.model.training
    want = model.state_dict()
    got = loaded.model.state_dict()
    assert want.keys() == got.keys()
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert loaded.tokenizers["src"] is loaded.tokenizers["tgt"]
    text = "the dog sat"
    assert loaded.tokenizers["src"].encode(text) == toks["src"].encode(text)
    src = torch.tensor([toks["src"].encode(text)])
    lengths = torch.tensor([src.size(1)])
    tgt_in = torch.tensor([[2, 5, 6]])
    model.eval()
    torch.testing.assert_close(
        loaded.model(src, lengths, tgt_in).logits, model(src, lengths, tgt_in).logits
    )


def test_round_trip_separate_tokenizers(tmp_path: Path) -> None:
    _, _, toks, d = tiny(tmp_path, joint=False)
    assert (d / "tokenizer" / "src").is_dir() and (d / "tokenizer" / "tgt").is_dir()
    loaded = model_io.load_model_dir(d)
    assert loaded.tokenizers["tgt"].vocab_size == toks["tgt"].vocab_size
    assert loaded.tokenizers["src"].vocab_size == toks["src"].vocab_size
    assert loaded.build_kwargs["tgt_vocab_size"] == toks["tgt"].vocab_size


def test_missing_dir_and_files(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        model_io.load_model_dir(tmp_path / "nope")
    _, _, _, d = tiny(tmp_path)
    (d / "config.yaml").unlink()
    with pytest.raises(ModelLoadError, match=r"no config\.yaml"):
        model_io.load_model_dir(d)
    (d / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=r"no model\.safetensors"):
        model_io.load_model_dir(d)


def test_other_model_type(tmp_path: Path) -> None:
    _, _, _, d = tiny(tmp_path)
    with pytest.raises(ModelLoadError, match="holds a 'rnnsearch' model; expected transformer"):
        model_io.load_model_dir(d, expect_type="transformer")
    # config says rnnencdec but the weights were written for rnnsearch
    data = yaml.safe_load((d / "config.yaml").read_text())
    data["model"]["type"] = "rnnencdec"
    (d / "config.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ModelLoadError, match="weights are of model type 'rnnsearch'"):
        model_io.load_model_dir(d)
    # weights that do not fit the model being filled
    other = torch.nn.Linear(3, 3)
    with pytest.raises(ModelLoadError, match="do not fit"):
        model_io.load_weights(d, other)


def test_corrupt_and_pickled_weights(tmp_path: Path) -> None:
    _, _, _, d = tiny(tmp_path)
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="corrupt or truncated"):
        model_io.load_model_dir(d)
    (d / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ModelLoadError, match="corrupt or truncated"):
        model_io.load_model_dir(d)
    (d / "model.safetensors").unlink()
    torch.save({"w": torch.zeros(2)}, d / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="never unpickles"):
        model_io.load_model_dir(d)


def test_foreign_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    _, _, _, d = tiny(tmp_path)
    save_file({"w": torch.zeros(2)}, str(d / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="not written by dhian"):
        model_io.load_model_dir(d)


def test_atomic_write_bytes(tmp_path: Path) -> None:
    p = tmp_path / "f.txt"
    model_io.atomic_write_text(p, "one")
    model_io.atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert [x.name for x in tmp_path.iterdir()] == ["f.txt"]
