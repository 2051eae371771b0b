"""Marian interop: dhian transformer → HF MarianMTModel gives the same logits and greedy tokens;
HF Marian checkpoints (ours or HF-made) import back with the same logits. No network needed.

The export moves PAD to the last id (Marian's and CTranslate2's convention), so exported ids are
dhian's ids renumbered by :func:`export_order`: :func:`to_export` maps inputs, and logits are
compared with their vocabulary columns in that order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from dhian.decoding import greedy_decode
from dhian.errors import ConfigError, ModelLoadError
from dhian.interop.hf_marian import export_marian, import_marian, load_marian
from dhian.interop.hf_marian_names import export_order
from dhian.models.transformer.config import TransformerConfig
from dhian.models.transformer.model import TransformerSeq2Seq, build_transformer
from helpers.threads import one_thread_per_module  # noqa: F401 - autouse fixture

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

PAD, BOS, EOS = 0, 2, 3
V = 30


def marian_cfg(**kw: Any) -> TransformerConfig:
    base: dict[str, Any] = {
        "embed_dim": 16,
        "num_heads": 2,
        "ff_dim": 32,
        "enc_layers": 2,
        "dec_layers": 3,
        "dropout": 0.0,
        "positions": "sinusoidal_marian",
        "norm": "post",
        "output_bias": True,
        "activation": "silu",
        "max_positions": 64,
    }
    base.update(kw)
    return TransformerConfig(**base)


def random_model(cfg: TransformerConfig, tgt_vocab: int = V, seed: int = 0) -> TransformerSeq2Seq:
    """Every parameter random (biases, LayerNorm affines, output bias too) so no slip hides."""
    torch.manual_seed(seed)
    model = build_transformer(cfg, V, tgt_vocab)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.normal_(0.0, 0.5)
            if "norm" in name and name.endswith("weight"):
                p.add_(1.0)
    return model.eval()


def inputs(seed: int = 1) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor([6, 3, 1, 5])
    src = torch.full((4, 6), PAD)
    for i, n in enumerate(lens.tolist()):
        src[i, :n] = torch.randint(7, V, (n,), generator=g)
    tgt = torch.cat([torch.full((4, 1), BOS), torch.randint(7, V, (4, 5), generator=g)], 1)
    return src, lens, tgt


def to_export(model: TransformerSeq2Seq, ids: Tensor) -> Tensor:
    """dhian ids → the exported model's ids (PAD last, the ids above it one lower)."""
    order = export_order(model)
    if order is None:
        return ids
    new = torch.empty(len(order), dtype=torch.long)
    new[torch.tensor(order)] = torch.arange(len(order))
    return new[ids]


def in_export_order(model: TransformerSeq2Seq, logits: Tensor) -> Tensor:
    """dhian logits (..., V) with their columns in the exported id order."""
    order = export_order(model)
    return logits if order is None else logits[..., order]


def hf_logits(hf: Any, src: Tensor, lens: Tensor, tgt: Tensor) -> Tensor:
    mask = (torch.arange(src.size(1)) < lens[:, None]).long()  # (B, Ts)
    with torch.no_grad():
        return hf(input_ids=src, attention_mask=mask, decoder_input_ids=tgt).logits


@pytest.mark.parametrize(
    ("share", "tie", "activation", "scale"),
    [
        (True, True, "silu", True),
        (True, False, "gelu", False),
        (False, True, "relu", True),
        (False, False, "gelu_new", True),
    ],
)
def test_export_gives_hf_the_same_logits(
    tmp_path: Path, share: bool, tie: bool, activation: str, scale: bool
) -> None:
    cfg = marian_cfg(
        share_embeddings=share, tie_embeddings=tie, activation=activation, scale_embedding=scale
    )
    model = random_model(cfg, V if share else V + 7)
    export_marian(model, cfg, None, tmp_path)
    hf = transformers.MarianMTModel.from_pretrained(tmp_path).eval()
    src, lens, tgt = inputs()
    with torch.no_grad():
        ours = in_export_order(model, model(src, lens, tgt).logits)
    src2, tgt2 = to_export(model, src), to_export(model, tgt)
    torch.testing.assert_close(hf_logits(hf, src2, lens, tgt2), ours, atol=1e-4, rtol=1e-4)
    back = import_marian(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(back(src2, lens, tgt2).logits, ours, atol=1e-6, rtol=1e-6)
    written = json.loads((tmp_path / "config.json").read_text())
    if share:  # joint vocabulary: PAD moves to the end (CTranslate2 drops the last id as PAD)
        assert written["pad_token_id"] == V - 1 and written["decoder_start_token_id"] == BOS - 1
    else:  # vocabularies of different sizes share one pad_token_id: ids kept
        assert written["pad_token_id"] == PAD and written["decoder_start_token_id"] == BOS


@pytest.mark.parametrize("zero_start", [False, True])
def test_export_greedy_equals_hf_generate(tmp_path: Path, zero_start: bool) -> None:
    """A zero-start model's decoder starts from HF's PAD (a zero row, last id); others from BOS."""
    cfg = marian_cfg(start_from_zero=zero_start)
    model = random_model(cfg, seed=3)
    export_marian(model, cfg, None, tmp_path)
    hf = transformers.MarianMTModel.from_pretrained(tmp_path).eval()
    src, lens, _ = inputs(4)
    limit = 8
    ours = greedy_decode(model, src, lens, max_len=limit)
    mask = (torch.arange(src.size(1)) < lens[:, None]).long()
    with torch.no_grad():
        gen = hf.generate(
            input_ids=to_export(model, src),
            attention_mask=mask,
            num_beams=1,
            do_sample=False,
            max_new_tokens=limit + 1,  # at most `limit` tokens, then EOS (forced at the end)
        )
    assert int(gen[0, 0]) == (V - 1 if zero_start else BOS - 1)  # PAD (last id) or our BOS
    theirs = []
    for row in gen[:, 1:].tolist():
        theirs.append(row[: row.index(EOS - 1)] if EOS - 1 in row else row)
    assert [to_export(model, torch.tensor(h.tokens)).tolist() for h in ours] == theirs
    assert any(len(t) > 0 for t in theirs)


def test_zero_start_changes_only_the_first_decoder_input() -> None:
    """``start_from_zero``: same weights, logits change (BOS embedding unused); teacher forcing
    and step-by-step decoding agree."""
    model = random_model(marian_cfg(start_from_zero=True), seed=7)
    plain = random_model(marian_cfg(), seed=7)
    src, lens, tgt = inputs(8)
    with torch.no_grad():
        full = model(src, lens, tgt).logits  # (B, Tt, V)
        assert not torch.allclose(full, plain(src, lens, tgt).logits, atol=1e-3)
        state = model.start(src, lens)
        steps = [model.step(tgt[:, t], state)[0] for t in range(tgt.size(1))]
        torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=1e-5)
        model.tgt_embed.weight[BOS].normal_()  # as input, the BOS row plays no part any more
        others = torch.arange(V) != BOS  # (tied: it still scores BOS itself, which is banned)
        torch.testing.assert_close(model(src, lens, tgt).logits[..., others], full[..., others])


def test_import_hf_made_marian(tmp_path: Path) -> None:
    """A checkpoint HF wrote itself (HF's defaults: gelu, no embedding scale) imports exactly."""
    torch.manual_seed(5)
    hf_cfg = transformers.MarianConfig(
        vocab_size=V,
        d_model=16,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=24,
        decoder_ffn_dim=24,
        max_position_embeddings=32,
        pad_token_id=V - 1,
        eos_token_id=0,
        decoder_start_token_id=V - 1,
        forced_eos_token_id=0,
    )
    hf = transformers.MarianMTModel(hf_cfg).eval()
    with torch.no_grad():
        hf.final_logits_bias.normal_()
        for p in hf.parameters():
            if p.dim() == 1:
                p.normal_(0.0, 0.3)
    hf.save_pretrained(tmp_path)
    got = load_marian(tmp_path)
    assert got.config.scale_embedding is False and got.config.activation == "gelu"
    model = got.model
    assert (model.pad_id, model.bos_id, model.eos_id) == (V - 1, V - 1, 0)
    assert got.build_kwargs["src_vocab_size"] == V
    lens = torch.tensor([5, 2])
    src = torch.tensor([[3, 4, 5, 6, 7], [8, 9, V - 1, V - 1, V - 1]])
    tgt = torch.tensor([[V - 1, 3, 4, 5], [V - 1, 9, 10, 11]])
    with torch.no_grad():
        ours = model(src, lens, tgt).logits
    torch.testing.assert_close(ours, hf_logits(hf, src, lens, tgt), atol=1e-4, rtol=1e-4)


def test_tokenizer_files(tmp_path: Path) -> None:
    from dhian.text import train_tokenizer

    texts = ["der Hund bellt", "die Katze schläft", "the dog barks", "the cat sleeps"] * 5
    tok = train_tokenizer("bpe", texts, vocab_size=60, min_frequency=1)
    cfg = marian_cfg()
    torch.manual_seed(0)
    model = build_transformer(cfg, tok.vocab_size).eval()
    export_marian(model, cfg, tok, tmp_path)
    for name in ("tokenizer.json", "vocab.json", "tokenizer_config.json", "model.safetensors"):
        assert (tmp_path / name).is_file(), name
    vocab = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    v = tok.vocab_size
    renumbered = {t: v - 1 if i == PAD else i - 1 for t, i in tok.hf.get_vocab().items()}
    assert vocab == renumbered and len(vocab) == v and list(vocab)[-1] == "<pad>"
    want = to_export(model, torch.tensor(tok.encode("die Katze bellt"))).tolist()
    got = load_marian(tmp_path)
    assert got.tokenizers is not None
    assert got.tokenizers["src"].encode("die Katze bellt") == want
    assert got.tokenizers["src"].decode(want) == tok.decode(tok.encode("die Katze bellt"))
    fast = transformers.AutoTokenizer.from_pretrained(tmp_path)  # the fast tokenizer, not spm
    assert fast("die Katze bellt", add_special_tokens=False)["input_ids"] == want
    assert fast.pad_token_id == v - 1 and fast.eos_token_id == EOS - 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"norm": "pre"}, "norm: post"),
        ({"positions": "sinusoidal"}, "sinusoidal_marian"),
        ({"layer_norm_eps": 1e-6}, "layer_norm_eps"),
    ],
)
def test_export_refuses_non_marian(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    cfg = marian_cfg(**change)
    model = build_transformer(cfg, V)
    with pytest.raises(ConfigError, match=message):
        export_marian(model, cfg, None, tmp_path)


def test_import_refuses_pickles_and_foreign_configs(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "marian", "d_model": 16}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(ModelLoadError, match="never unpickles"):
        import_marian(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelLoadError, match="not marian"):
        import_marian(tmp_path)
    with pytest.raises(ModelLoadError, match=r"config\.json"):
        import_marian(tmp_path / "missing")


def test_import_refuses_unmapped_parameters(tmp_path: Path) -> None:
    cfg = marian_cfg()
    export_marian(random_model(cfg), cfg, None, tmp_path)
    from safetensors.torch import load_file, save_file

    state = load_file(str(tmp_path / "model.safetensors"))
    state["model.encoder.layernorm_embedding.weight"] = torch.ones(16)
    save_file(state, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="layernorm_embedding"):
        import_marian(tmp_path)


def test_registry_round_trip_through_model_dirs(tmp_path: Path) -> None:
    """HF Marian dir → dhian model dir (registry import) → HF dir again: logits unchanged."""
    from dhian.inference.load import load_model
    from dhian.interop.hf_dirs import export_hf_dir, import_hf_dir
    from dhian.text import train_tokenizer

    texts = ["der Hund bellt", "the dog barks", "die Katze", "the cat"] * 5
    tok = train_tokenizer("bpe", texts, vocab_size=V, min_frequency=1)
    cfg = marian_cfg()
    model = random_model(cfg, tgt_vocab=tok.vocab_size)
    export_marian(model, cfg, tok, tmp_path / "hf")
    import_hf_dir(tmp_path / "hf", tmp_path / "dhian")
    loaded = load_model(tmp_path / "dhian")
    assert isinstance(loaded.model, TransformerSeq2Seq) and loaded.kind == "translation"
    export_hf_dir(load_model(tmp_path / "dhian"), tmp_path / "hf2")
    hf = transformers.MarianMTModel.from_pretrained(tmp_path / "hf2").eval()
    src, lens, tgt = inputs(6)
    src2, tgt2 = to_export(model, src), to_export(model, tgt)
    with torch.no_grad():
        ours = in_export_order(model, model(src, lens, tgt).logits)
        torch.testing.assert_close(loaded.model(src2, lens, tgt2).logits, ours)
    torch.testing.assert_close(hf_logits(hf, src2, lens, tgt2), ours, atol=1e-4, rtol=1e-4)
