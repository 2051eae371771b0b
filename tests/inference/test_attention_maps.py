"""Attention extraction for every family, checked against independent computations:
step-by-step greedy decoding (RNN, transformer), softmax(QKᵀ/√D) by hand (BERT layer 0), the
KV-cached forward (GPT), plus the display-token convention."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dhian.decoding import greedy_decode
from dhian.errors import DataError
from dhian.inference.attention_maps import extract_attention
from dhian.inference.display_tokens import display_tokens
from dhian.inference.load import load_model
from dhian.text import train_tokenizer
from dhian.viz import decode_weights

SENTENCE = "Und Gott sah das Licht, dass es gut war."


def _greedy(loaded, text):
    model = loaded.model
    ids = loaded.tokenizers["src"].encode(text)
    hyp = greedy_decode(model, torch.tensor([ids]), torch.tensor([len(ids)]), need_weights=True)
    return hyp[0]


def _rows_sum_to_one(w: np.ndarray) -> None:
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)


def test_rnnsearch_cross_attention_equals_step_decoding(tiny_dirs):
    loaded = load_model(tiny_dirs["rnnsearch"])
    res = extract_attention(loaded, SENTENCE)
    hyp = _greedy(loaded, SENTENCE)
    tgt = loaded.tokenizers["tgt"]
    assert res.cross_attention is not None and res.cross_attention.shape[:2] == (1, 1)
    assert res.self_attention == {}
    np.testing.assert_allclose(res.cross_attention[0, 0], hyp.attention.numpy(), atol=1e-5)
    assert res.tokens_tgt == [*display_tokens(tgt, hyp.tokens), "</s>"]
    assert res.output == tgt.decode(hyp.tokens) == res.meta["translation"]
    assert len(res.tokens_src) == len(loaded.tokenizers["src"].encode(SENTENCE))
    payload = res.payload("t")
    assert [k["id"] for k in payload["kinds"]] == ["cross"]
    np.testing.assert_allclose(decode_weights(payload["kinds"][0]), res.cross_attention, atol=2e-5)


def test_transformer_every_layer_and_head(tiny_dirs):
    loaded = load_model(tiny_dirs["transformer"])
    res = extract_attention(loaded, SENTENCE)
    hyp = _greedy(loaded, SENTENCE)
    ts, tt = len(res.tokens_src), len(hyp.tokens) + 1
    assert res.cross_attention is not None and res.cross_attention.shape == (2, 2, tt, ts)
    assert res.self_attention["encoder"].shape == (2, 2, ts, ts)
    assert res.self_attention["decoder"].shape == (2, 2, tt, tt)
    # the decoder's step path returns the last layer's cross attention averaged over heads
    np.testing.assert_allclose(res.cross_attention[-1].mean(0), hyp.attention.numpy(), atol=1e-5)
    for w in (*res.self_attention.values(), res.cross_attention):
        _rows_sum_to_one(w)
    dec = res.self_attention["decoder"]
    assert np.allclose(np.triu(dec, k=1), 0.0)  # causal
    assert not np.allclose(dec[0, 0], dec[0, 1])  # heads differ
    kinds = [k["id"] for k in res.payload()["kinds"]]
    assert kinds == ["encoder", "decoder", "cross"]


def test_transformer_teacher_forced_target(tiny_dirs):
    loaded = load_model(tiny_dirs["transformer"])
    target = "And God saw the light."
    res = extract_attention(loaded, SENTENCE, target=target)
    tgt = loaded.tokenizers["tgt"]
    ids = tgt.encode(target)
    assert res.tokens_tgt == [*display_tokens(tgt, ids), "</s>"]
    assert res.cross_attention.shape[2] == len(ids) + 1
    assert res.meta["output"] == "teacher-forced target"
    # same weights as the model's own forward on BOS + target
    model = loaded.model
    src = torch.tensor([loaded.tokenizers["src"].encode(SENTENCE)])
    out = model(src, torch.tensor([src.size(1)]), torch.tensor([[tgt.bos_id, *ids]]), True)
    np.testing.assert_allclose(
        res.cross_attention[1], out.attention[1][0].detach().numpy(), atol=1e-6
    )


def test_bert_layer0_matches_softmax_qk_by_hand(tiny_dirs):
    loaded = load_model(tiny_dirs["bert-cls"])
    res = extract_attention(loaded, "a good film about the light")
    assert res.output in ("negative", "positive") and "prediction" in res.meta
    w = res.self_attention["encoder"]
    tok = loaded.tokenizers["src"]
    ids = [tok.cls_id, *tok.encode("a good film about the light"), tok.sep_id]
    assert res.tokens_src[0] == "<cls>" and res.tokens_src[-1] == "<sep>"
    assert w.shape == (2, 2, len(ids), len(ids))
    bb = loaded.model.backbone
    with torch.no_grad():
        x = bb.embeddings(torch.tensor([ids]), torch.zeros(1, len(ids), dtype=torch.long))[0]
        mha = bb.layers[0].self_attn
        q, k, _ = (x @ mha.in_proj_weight.T + mha.in_proj_bias).chunk(3, dim=-1)  # (T, E) each
        heads, dim = 2, q.size(-1) // 2
        q = q.view(-1, heads, dim).transpose(0, 1)  # (H, T, D)
        k = k.view(-1, heads, dim).transpose(0, 1)
        ref = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(dim), dim=-1)  # (H, T, T)
    np.testing.assert_allclose(w[0], ref.numpy(), atol=1e-5)


def test_keras_classifier_and_mlm(tiny_dirs):
    keras = extract_attention(load_model(tiny_dirs["keras"]), "a bad film")
    assert keras.self_attention["encoder"].shape[:2] == (1, 2)
    tok = load_model(tiny_dirs["keras"]).tokenizers["src"]
    assert keras.tokens_src == display_tokens(tok, tok.encode("a bad film"))  # no [CLS]
    mlm = extract_attention(load_model(tiny_dirs["bert-mlm"]), "the light <mask> good")
    assert "<mask>" in mlm.tokens_src and mlm.output is None


def test_gpt_causal_attention_equals_cached_last_step(tiny_dirs):
    loaded = load_model(tiny_dirs["gpt"])
    prompt = "And God saw the light"
    res = extract_attention(loaded, prompt)
    w = res.self_attention["decoder"]
    ids = loaded.tokenizers["src"].encode(prompt)
    assert w.shape == (2, 2, len(ids), len(ids))
    assert np.allclose(np.triu(w, k=1), 0.0)
    _rows_sum_to_one(w)
    model = loaded.model
    with torch.no_grad():
        caches = model.init_caches()
        model(torch.tensor([ids[:-1]]), caches=caches)
        last = model(torch.tensor([ids[-1:]]), caches=caches, need_weights=True).attention
    for layer in range(2):
        np.testing.assert_allclose(w[layer, :, -1], last[layer][0, :, 0].numpy(), atol=1e-5)
    assert res.tokens_src[0] == "And" and res.tokens_src[1] == "God"  # Ġ markers removed


def test_errors_are_one_line_data_errors(tiny_dirs):
    with pytest.raises(DataError, match=r"rnnencdec.*no attention"):
        extract_attention(load_model(tiny_dirs["rnnencdec"]), SENTENCE)
    with pytest.raises(DataError, match="target is only for translation"):
        extract_attention(load_model(tiny_dirs["gpt"]), "x", target="y")
    with pytest.raises(DataError, match="no tokens"):
        extract_attention(load_model(tiny_dirs["rnnsearch"]), "   ")


class FakeTokenizer:
    """Raw pieces as ids (id = index); ``kind`` picks the marker convention."""

    def __init__(self, kind: str, pieces: list[str], specials: tuple[int, ...] = ()) -> None:
        self.kind, self.pieces, self.special_ids = kind, pieces, frozenset(specials)

    def id_to_token(self, i: int) -> str:
        return self.pieces[i]


@pytest.mark.parametrize(
    ("kind", "pieces", "expected"),
    [
        (
            "bpe",
            ["▁In", "▁Anf", "ang", ",", "▁über", "▁", "x"],
            ["In", "Anf", "·ang", ",", "über", "␣", "x"],
        ),
        (
            "bytebpe",
            ["In", "ĠAnf", "ang", ",", "ĠÃ¼ber", "Ġ"],
            ["In", "Anf", "·ang", ",", "über", "␣"],
        ),
        (
            "wordpiece",
            ["in", "anf", "##ang", ",", "über", "##"],
            ["in", "anf", "·ang", ",", "über", "##"],
        ),
        ("char", ["▁", "i", "n", "▁", "x"], ["␣", "i", "n", "␣", "x"]),
        ("", ["##ing", "x", "##y"], ["ing", "x", "·y"]),  # no kind: guessed from the markers
    ],
)
def test_display_tokens_convention(kind, pieces, expected):
    tok = FakeTokenizer(kind, pieces)
    assert display_tokens(tok, range(len(pieces))) == expected


def test_display_tokens_keep_specials():
    tok = FakeTokenizer("bpe", ["<s>", "▁a", "b", "</s>"], specials=(0, 3))
    assert display_tokens(tok, [0, 1, 2, 3]) == ["<s>", "a", "·b", "</s>"]


@pytest.mark.parametrize("kind", ["bpe", "bytebpe", "wordpiece", "char"])
def test_display_tokens_of_trained_tokenizers_rebuild_the_words(kind):
    text = "in the beginning, über godly."
    corpus = ["in the beginning, über god.", "the word was only with god."] * 4  # no "godly"
    tok = train_tokenizer(kind, corpus, 40 if kind != "bytebpe" else 300)
    ids = tok.encode(text)
    shown = display_tokens(tok, ids)
    assert len(shown) == len(ids)
    assert not any(m in "".join(shown) for m in ("▁", "Ġ", "##", "Ã"))
    words: list[str] = []
    for s in shown:  # a "·" piece or punctuation continues the word; "␣" separates (char)
        if s == "␣":
            words.append("")
        elif words and (s.startswith("·") or s in ",." or kind == "char"):
            words[-1] += s.removeprefix("·")
        else:
            words.append(s)
    assert " ".join(w for w in words if w) == text, (tok.ids_to_tokens(ids), shown)
    if kind != "char":
        assert any(s.startswith("·") for s in shown), shown  # "godly" is split
