"""translate_texts against independent per-sentence references: batching, length sorting and
order restoration change nothing; beam 1 is greedy; empty lines, truncation, transformer
position caps, attention shapes and the layer/head choice; run-dir resolution and wrong-kind
errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from dhian.config import RunConfig
from dhian.decoding import beam_search, greedy_decode
from dhian.errors import ConfigError, ModelLoadError
from dhian.inference.translate import (
    forced_attention,
    load_translation_model,
    require_translation,
    resolve_model_dir,
    translate_texts,
)
from dhian.models.families import build_model
from dhian.models.model_dir import LoadedModel, save_model_dir
from dhian.models.rnn.config import RNNSeq2SeqConfig
from dhian.models.transformer.config import TransformerConfig
from dhian.text import train_tokenizer

TEXTS = [
    "the red house is big",
    "a cat",
    "",
    "one two three four five six seven",
    "   ",
    "blue",
    "the cat sees the red house and the blue house",
]


def tiny(kind: str = "rnnsearch", seed: int = 0, **cfg: Any) -> LoadedModel:
    tok = train_tokenizer("char", [*TEXTS, "xyz"], vocab_size=60)
    torch.manual_seed(seed)
    mcfg: object
    if kind == "transformer":
        mcfg = TransformerConfig(
            embed_dim=16, num_heads=2, ff_dim=24, enc_layers=2, dec_layers=2, dropout=0.0, **cfg
        )
    else:
        mcfg = RNNSeq2SeqConfig(type=kind, embed_dim=12, hidden_dim=12, dropout=0.0, **cfg)
    model = build_model(mcfg, tok.vocab_size, tok.vocab_size, tok.pad_id, tok.bos_id, tok.eos_id)
    return LoadedModel(model.eval(), RunConfig(model=mcfg), {"src": tok, "tgt": tok}, "translation")


def one(loaded: LoadedModel, text: str) -> tuple[torch.Tensor, torch.Tensor]:
    ids = loaded.tokenizers["src"].encode(text)
    return torch.tensor([ids]), torch.tensor([len(ids)])


@pytest.mark.parametrize("kind", ["rnnsearch", "transformer"])
def test_beam1_is_greedy_and_order_is_restored(kind: str) -> None:
    loaded = tiny(kind)
    tok = loaded.tokenizers["tgt"]
    out = translate_texts(loaded, TEXTS, beam=1, batch_size=2, max_len_offset=4)
    assert [t.source for t in out] == TEXTS
    for text, tr in zip(TEXTS, out, strict=True):
        if not text.strip():
            assert tr.text == "" and tr.score is None and tr.nbest == []
            continue
        src, lens = one(loaded, text)  # alone: no sorting, no padding
        ref = greedy_decode(loaded.model, src, lens, max_len_offset=4)[0]  # type: ignore[arg-type]
        assert tr.text == tok.decode(ref.tokens)
        assert tr.score == pytest.approx(ref.score, abs=1e-4)


def test_beam_matches_single_sentence_beam_search() -> None:
    loaded = tiny(seed=3)
    tok = loaded.tokenizers["tgt"]
    out = translate_texts(loaded, TEXTS, beam=3, n_best=2, length_penalty=0.6, max_len_offset=4)
    for text, tr in zip(TEXTS, out, strict=True):
        if not text.strip():
            continue
        src, lens = one(loaded, text)
        ref = beam_search(loaded.model, src, lens, 3, 0.6, max_len_offset=4, n_best=2)[0]  # type: ignore[arg-type]
        assert [t for t, _ in tr.nbest] == [tok.decode(h.tokens) for h in ref]
        assert [s for _, s in tr.nbest] == pytest.approx([h.score for h in ref], abs=1e-4)
        assert tr.text == tr.nbest[0][0]


def test_attention_shapes_and_tokens() -> None:
    loaded = tiny()
    tok = loaded.tokenizers["src"]
    out = translate_texts(loaded, TEXTS, beam=2, need_weights=True, max_len_offset=3)
    for text, tr in zip(TEXTS, out, strict=True):
        if not text.strip():
            assert tr.attention is None
            continue
        assert tr.src_tokens == tok.tokens(text)
        assert tr.out_tokens[-1] == tok.id_to_token(tok.eos_id)
        assert tr.attention is not None
        assert tr.attention.shape == (len(tr.out_tokens), len(tr.src_tokens))
        torch.testing.assert_close(tr.attention.sum(-1), torch.ones(len(tr.out_tokens)))


def test_transformer_layer_head_choice() -> None:
    loaded = tiny("transformer", seed=1)
    default = translate_texts(loaded, TEXTS[:2], beam=1, need_weights=True, max_len_offset=3)
    last = translate_texts(loaded, TEXTS[:2], beam=1, need_weights=True, layer=-1, max_len_offset=3)
    for a, b in zip(default, last, strict=True):  # step attention == teacher-forced last layer
        assert a.text == b.text and a.attention is not None and b.attention is not None
        torch.testing.assert_close(a.attention, b.attention, atol=1e-5, rtol=1e-4)
    h0 = translate_texts(
        loaded, TEXTS[:1], beam=1, need_weights=True, layer=0, head=1, max_len_offset=3
    )[0]
    src, lens = one(loaded, TEXTS[0])
    ids = greedy_decode(loaded.model, src, lens, max_len_offset=3)[0].tokens  # type: ignore[arg-type]
    tgt_in = torch.tensor([[loaded.model.bos_id, *ids]])
    with torch.no_grad():
        ref = loaded.model(src, lens, tgt_in, need_weights=True).attention[0][0, 1]  # (Tt, Ts)
    assert h0.attention is not None
    torch.testing.assert_close(h0.attention, ref)
    with pytest.raises(ConfigError, match="layer 5"):
        forced_attention(loaded.model, [[7, 8]], [[9]], 5, None)
    with pytest.raises(ConfigError, match="--layer/--head"):
        translate_texts(tiny(), ["a cat"], layer=0)


def test_truncation_and_position_cap() -> None:
    loaded = tiny("transformer", max_positions=12)
    warnings: list[str] = []
    long_text = TEXTS[-1]  # 46 characters > 12 positions
    out = translate_texts(
        loaded, ["a cat", long_text], beam=2, warn=warnings.append, max_len_ratio=3.0
    )
    assert [t.truncated for t in out] == [False, True]
    assert len(warnings) == 1 and warnings[0].startswith("line 2:") and "limit 12" in warnings[0]
    # the decoder has 12 positions: at most 11 output tokens (BOS takes position 0)
    assert len(loaded.tokenizers["tgt"].encode(out[1].text)) <= 11
    # an explicit limit on an RNN (which has none of its own)
    rnn_warn: list[str] = []
    got = translate_texts(tiny(), [long_text], beam=1, max_src_len=5, warn=rnn_warn.append)
    assert got[0].truncated and "limit 5" in rnn_warn[0]
    rnn = tiny()
    src, _ = one(rnn, long_text)
    ref = greedy_decode(rnn.model, src[:, :5], torch.tensor([5]))[0]  # type: ignore[arg-type]
    assert got[0].text == rnn.tokenizers["tgt"].decode(ref.tokens)


def test_bad_arguments() -> None:
    loaded = tiny()
    with pytest.raises(ConfigError, match="n-best"):
        translate_texts(loaded, ["a"], beam=2, n_best=3)
    with pytest.raises(ConfigError, match="beam"):
        translate_texts(loaded, ["a"], beam=0)


def test_resolve_and_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_model_dir(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="neither a model dir"):
        resolve_model_dir(tmp_path / "empty")
    (tmp_path / "pending").mkdir()
    (tmp_path / "pending" / "config.yaml").write_text("model: {type: rnnsearch}\n")
    with pytest.raises(ModelLoadError, match="no checkpoint yet"):
        resolve_model_dir(tmp_path / "pending")
    loaded = tiny()
    run = tmp_path / "run"
    save_model_dir(run / "last", loaded.model, loaded.config, loaded.tokenizers)
    assert resolve_model_dir(run) == run / "last"
    save_model_dir(run / "best", loaded.model, loaded.config, loaded.tokenizers)
    assert resolve_model_dir(run) == run / "best"
    again = load_translation_model(run)
    assert translate_texts(again, ["a cat"], beam=1)[0].text == (
        translate_texts(loaded, ["a cat"], beam=1)[0].text
    )
    lm = LoadedModel(loaded.model, loaded.config, loaded.tokenizers, "lm")
    with pytest.raises(ModelLoadError, match=r"'lm' model .*dhian generate"):
        require_translation(lm, "runs/gpt", "translate")


def test_hf_marian_dir_gets_source_eos(tmp_path: Path) -> None:
    from dhian.inference.translate import default_src_eos
    from dhian.interop.hf_dirs import export_hf_dir

    loaded = tiny("transformer", positions="sinusoidal_marian", norm="post")
    export_hf_dir(loaded, tmp_path / "hf")
    assert default_src_eos(tmp_path / "hf") and not default_src_eos(
        save_model_dir(tmp_path / "own", loaded.model, loaded.config, loaded.tokenizers)
    )
    hf = load_translation_model(tmp_path / "hf")
    tok = hf.tokenizers["src"]
    got = translate_texts(hf, ["a cat"], beam=2, src_eos=True, need_weights=True)[0]
    assert got.src_tokens == [*tok.tokens("a cat"), tok.id_to_token(hf.model.eos_id)]
    src = torch.tensor([[*tok.encode("a cat"), hf.model.eos_id]])
    ref = beam_search(hf.model, src, torch.tensor([src.size(1)]), 2)[0][0]  # type: ignore[arg-type]
    assert got.text == hf.tokenizers["tgt"].decode(ref.tokens)
