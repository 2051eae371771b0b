"""A trained dhian translator exported with ``export_marian`` as a user would use it elsewhere:
CTranslate2's own converter (``ct2-transformers-converter``) and HF ``MarianMTModel.generate``.

The model is tiny and trained here in a few seconds on a made-up word-for-word language pair,
with ``start_from_zero`` (the decoder starts from a zero vector, as CTranslate2's Marian decoder
always does — the quickstart trains this way). Greedy decoding (beam 1) must give dhian's tokens
exactly, in CTranslate2 (float32) and in HF. Sources carry no ``</s>``: dhian trains without it.
CTranslate2 is told ``suppress_sequences=[["<s>"]]``, the one token dhian's decoding bans that
CTranslate2 still has (``<pad>`` is not in its vocabulary at all).

Beam search (beam 5) is compared, not required to match: dhian scores finished hypotheses with
the GNMT length penalty ``log_prob / ((5 + |Y|) / 6) ** alpha`` (``|Y|`` counting EOS) and stops
a sentence once ``k`` hypotheses have finished (fairseq), while HF divides by ``|Y| ** alpha``
and, with ``early_stopping=False``, keeps going while a live beam could still beat the worst
kept hypothesis. The two pick different hypotheses when these rules rank them differently; with
greedy decoding there is no ranking and the outputs are identical.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.nn import functional as F

from dhian.decoding import beam_search, greedy_decode
from dhian.errors import ConfigError
from dhian.interop.hf_marian import export_marian, load_marian
from dhian.models.transformer.config import TransformerConfig
from dhian.models.transformer.model import build_transformer
from dhian.text import Tokenizer, train_tokenizer
from helpers.threads import one_thread_per_module  # noqa: F401 - autouse fixture

LEXICON = {
    "der": "the", "hund": "dog", "katze": "cat", "sieht": "sees", "ein": "a",
    "haus": "house", "und": "and", "mann": "man", "frau": "woman", "kind": "child",
    "geht": "goes", "nach": "to", "großen": "big", "kleinen": "small", "baum": "tree",
    "isst": "eats", "brot": "bread", "gott": "god", "sprach": "spoke", "zu": "to",
}  # fmt: skip
LIMIT = 24


def corpus(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    words = sorted(LEXICON)
    pairs = []
    for _ in range(n):
        de = [rng.choice(words) for _ in range(rng.randint(2, 7))]
        pairs.append((" ".join(de), " ".join(LEXICON[w] for w in de)))
    return pairs


def pad(rows: list[list[int]], value: int) -> torch.Tensor:
    out = torch.full((len(rows), max(map(len, rows))), value)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r)
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tiny trained zero-start model, its tokenizer, test sources and its Marian export."""
    train = corpus(600, 0)
    tok = train_tokenizer("bpe", [t for p in train for t in p], vocab_size=80, min_frequency=1)
    cfg = TransformerConfig(
        embed_dim=32, num_heads=2, ff_dim=64, enc_layers=2, dec_layers=2, dropout=0.0,
        norm="post", positions="sinusoidal_marian", max_positions=64, output_bias=True,
        start_from_zero=True,
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_transformer(
        cfg, tok.vocab_size, pad_id=tok.pad_id, bos_id=tok.bos_id, eos_id=tok.eos_id
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = random.Random(1)
    for _ in range(400):
        batch = rng.sample(train, 32)
        src_rows = tok.encode_batch([p[0] for p in batch])
        tgt_rows = tok.encode_batch([p[1] for p in batch])
        src = pad(src_rows, tok.pad_id)
        lens = torch.tensor([len(r) for r in src_rows])
        tgt_in = pad([[tok.bos_id, *r] for r in tgt_rows], tok.pad_id)
        tgt_out = pad([[*r, tok.eos_id] for r in tgt_rows], tok.pad_id)
        logits = model(src, lens, tgt_in).logits
        loss = F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=tok.pad_id)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    out = tmp_path_factory.mktemp("marian")
    export_marian(model, cfg, tok, out / "hf")
    sources = [p[0] for p in corpus(40, 99)]
    return {"model": model, "tok": tok, "hf_dir": out / "hf", "root": out, "sources": sources}


def dhian_tokens(t: dict[str, Any], beam: int) -> list[list[str]]:
    """dhian's own decoding of the test sources, as token strings."""
    tok: Tokenizer = t["tok"]
    rows = tok.encode_batch(t["sources"])
    src, lens = pad(rows, tok.pad_id), torch.tensor([len(r) for r in rows])
    if beam == 1:
        hyps = greedy_decode(t["model"], src, lens, max_len=LIMIT)
    else:
        hyps = [h[0] for h in beam_search(t["model"], src, lens, beam_size=beam, max_len=LIMIT)]
    return [tok.ids_to_tokens(h.tokens) for h in hyps]


def test_trained_model_translates(trained: dict[str, Any]) -> None:
    """The fixture's model learned something, so the comparisons below compare real outputs."""
    got = [trained["tok"].hf.decoder.decode(t) for t in dhian_tokens(trained, 1)]
    want = [" ".join(LEXICON[w] for w in s.split()) for s in trained["sources"]]
    right = sum(g == w for g, w in zip(got, want, strict=True))
    assert right >= len(want) // 2


def test_ct2_converter_translates_like_dhian(trained: dict[str, Any]) -> None:
    """``ct2-transformers-converter --quantization int8`` (the command users run) converts the
    export; a float32 conversion gives dhian's greedy tokens exactly."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    from ctranslate2.converters import TransformersConverter

    root: Path = trained["root"]
    exe = Path(sys.executable).with_name("ct2-transformers-converter")
    cmd = [str(exe) if exe.exists() else shutil.which("ct2-transformers-converter") or ""]
    if not cmd[0]:
        pytest.skip("ct2-transformers-converter is not on PATH")
    cmd += ["--model", str(trained["hf_dir"]), "--output_dir", str(root / "int8")]
    done = subprocess.run(
        [*cmd, "--quantization", "int8"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    TransformersConverter(str(trained["hf_dir"])).convert(str(root / "fp32"), force=True)

    tok: Tokenizer = trained["tok"]
    source = [tok.tokens(s) for s in trained["sources"]]  # no </s>: dhian trains without it
    options = {
        "beam_size": 1,
        "max_decoding_length": LIMIT,
        "min_decoding_length": 0,
        "suppress_sequences": [["<s>"]],
    }
    fp32 = ctranslate2.Translator(str(root / "fp32"), device="cpu", inter_threads=1)
    got = [r.hypotheses[0] for r in fp32.translate_batch(source, **options)]
    assert got == dhian_tokens(trained, 1)
    int8 = ctranslate2.Translator(str(root / "int8"), device="cpu", compute_type="int8")
    assert all(r.hypotheses[0] for r in int8.translate_batch(source, **options))


def test_hf_generate_translates_like_dhian(trained: dict[str, Any]) -> None:
    """The export read back by ``AutoTokenizer`` + ``MarianMTModel`` gives dhian's greedy tokens
    exactly; beam 5 is reported, not required (see the module docstring)."""
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    hf_dir = trained["hf_dir"]
    fast = transformers.AutoTokenizer.from_pretrained(hf_dir)
    hf = transformers.MarianMTModel.from_pretrained(hf_dir).eval()
    batch = fast(trained["sources"], add_special_tokens=False, padding=True, return_tensors="pt")
    for beam in (1, 5):
        with torch.no_grad():
            gen = hf.generate(**batch, num_beams=beam, do_sample=False, max_new_tokens=LIMIT + 1)
        theirs = [
            [t for t in fast.convert_ids_to_tokens(row) if t not in ("<pad>", "</s>")]
            for row in gen[:, 1:].tolist()
        ]
        ours = dhian_tokens(trained, beam)
        same = sum(a == b for a, b in zip(ours, theirs, strict=True))
        if beam == 1:
            assert theirs == ours
        else:
            print(f"beam 5: {same}/{len(ours)} identical to dhian")
    assert load_marian(hf_dir).model.bos_id == fast.pad_token_id  # decoder starts from PAD


def test_export_refuses_a_tokenizer_of_another_size(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    """A tokenizer that does not fit the model is refused with what to do."""
    other = train_tokenizer("bpe", ["ganz andere wörter"] * 3, vocab_size=40, min_frequency=1)
    with pytest.raises(ConfigError, match="tokenizer the model was trained with"):
        export_marian(trained["model"], TransformerConfig(
            embed_dim=32, num_heads=2, ff_dim=64, enc_layers=2, dec_layers=2,
            positions="sinusoidal_marian", max_positions=64, output_bias=True,
        ), other, tmp_path)  # fmt: skip
