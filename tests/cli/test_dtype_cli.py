"""``--dtype {fp32,bf16,int8}`` on translate, evaluate, classify, fill-mask, generate and serve:
the flag reaches :func:`dhian.models.precision.apply_precision` (the loaded model really runs in
that precision), the output equals the library call with the same precision, a trained tiny
RNNsearch keeps its BLEU in bf16 and int8 (within 5 BLEU of fp32 on its 24 test sentences), and
an unknown dtype is argparse's one-line error (exit 2)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from dhian.cli import main
from dhian.config import DataConfig, RunConfig
from dhian.inference.load import load_model
from dhian.inference.translate import load_translation_model, translate_texts
from dhian.models.bert.config import BertConfig
from dhian.models.families import build_model
from dhian.models.gpt.config import GPTConfig
from dhian.models.model_dir import save_model_dir
from dhian.models.precision import model_precision
from dhian.text import train_tokenizer
from helpers.corpus import train_word_swap_run
from helpers.threads import one_thread  # noqa: F401

TEXTS = ["a good film", "a bad film", "what a great story", "the story was bad", "good good"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny RNNsearch trained by ``dhian train`` on the word-swap corpus (best/ and last/)."""
    return train_word_swap_run(tmp_path_factory.mktemp("mt"), test_max_words=8, eval_every=120)


def feed_stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode("utf-8"))))


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "int8"])
def test_translate_dtype_matches_the_library_in_that_precision(
    run_dir: Path, dtype: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = ["one red house", "", "big blue cat two three"]
    feed_stdin(monkeypatch, "\n".join(lines) + "\n")
    assert main(["translate", "--model", str(run_dir), "--beam", "2", "--dtype", dtype]) == 0
    got = capsys.readouterr().out.split("\n")[:-1]
    loaded = load_translation_model(run_dir, device="cpu", dtype=dtype)
    assert model_precision(loaded.model) == dtype
    ref = translate_texts(loaded, lines, beam=2, length_penalty=1.0)
    assert got == [t.text for t in ref] and got[1] == ""
    assert "eins" in got[0] and "rot" in got[0]  # still translates


def test_evaluate_bleu_in_bf16_and_int8_stays_close_to_fp32(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bleu = {}
    for dtype in ("fp32", "bf16", "int8"):
        out = tmp_path / dtype
        args = ["evaluate", "--model", str(run_dir), "--beam", "2", "--out", str(out)]
        assert main([*args, "--dtype", dtype]) == 0
        capsys.readouterr()
        bleu[dtype] = json.loads((out / "eval.test.json").read_text())["models"][0]["bleu"]
    assert bleu["fp32"] > 10.0, bleu  # a model that learned something
    assert abs(bleu["bf16"] - bleu["fp32"]) <= 5.0, bleu
    assert abs(bleu["int8"] - bleu["fp32"]) <= 5.0, bleu


def test_load_model_rejects_an_unknown_dtype_before_loading(run_dir: Path) -> None:
    from dhian.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown dtype 'fp16'"):
        load_model(run_dir / "nowhere", dtype="fp16")  # the dtype is checked first


def _bert_dir(root: Path, task: str) -> tuple[Path, str]:
    """A tiny random BERT ``task`` model dir and its mask token."""
    tok = train_tokenizer("wordpiece", TEXTS * 3, 80, lowercase=True)
    cfg = BertConfig(
        task=task, vocab_size=tok.vocab_size, embed_dim=16, layers=2, heads=2, ff_dim=32,
        max_positions=32, dropout=0.0, attention_dropout=0.0, labels=("neg", "pos"),
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg, tok.vocab_size).eval()
    kind = "classification" if task == "classification" else "mlm"
    run = RunConfig(model=cfg, data=DataConfig(max_len=32))
    kw = {"src_vocab_size": tok.vocab_size, "tgt_vocab_size": tok.vocab_size}
    d = save_model_dir(root / task, model, run, tok, kind=kind, build_kwargs=kw)
    return d, tok.id_to_token(tok.mask_id)


def _gpt_dir(root: Path) -> Path:
    tok = train_tokenizer("bytebpe", TEXTS * 3, 300)
    cfg = GPTConfig(vocab_size=tok.vocab_size, n_layer=2, n_head=2, n_embd=16, block_size=32)
    torch.manual_seed(0)
    model = build_model(cfg, tok.vocab_size).eval()
    run = RunConfig(model=cfg, data=DataConfig(max_len=32))
    kw = {"src_vocab_size": tok.vocab_size, "tgt_vocab_size": tok.vocab_size}
    return save_model_dir(root / "gpt", model, run, tok, kind="lm", build_kwargs=kw)


def _spy_precision(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the precision of every model apply_precision hands back."""
    import dhian.models.precision as precision

    seen: list[str] = []
    real = precision.apply_precision

    def spy(model: Any, dtype: str = "fp32") -> Any:
        out = real(model, dtype)
        seen.append(model_precision(out))
        return out

    monkeypatch.setattr(precision, "apply_precision", spy)
    return seen


def test_classify_fill_mask_generate_run_in_the_asked_precision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen = _spy_precision(monkeypatch)
    (cls_dir, _), (mlm_dir, mask), gpt_dir = (
        _bert_dir(tmp_path, "classification"),
        _bert_dir(tmp_path, "mlm"),
        _gpt_dir(tmp_path),
    )
    outputs = {}
    for dtype in ("fp32", "int8"):
        feed_stdin(monkeypatch, "a good film\nthe story was bad\n")
        assert main(["classify", "--model", str(cls_dir), "--json", "--dtype", dtype]) == 0
        rows = [json.loads(r) for r in capsys.readouterr().out.splitlines()]
        assert len(rows) == 2 and all(abs(sum(r["probs"].values()) - 1) < 1e-4 for r in rows)
        outputs[dtype] = rows
    for a, b in zip(outputs["fp32"], outputs["int8"], strict=True):
        assert all(abs(a["probs"][k] - b["probs"][k]) < 0.02 for k in a["probs"])
    assert main(["fill-mask", "--model", str(mlm_dir), f"a {mask} film", "--dtype", "bf16"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 5
    gen = ["generate", "--model", str(gpt_dir), "--prompt", "a good", "--temperature", "0"]
    assert main([*gen, "--max-new-tokens", "5", "--device", "cpu", "--dtype", "int8"]) == 0
    assert capsys.readouterr().out.startswith("a good")
    assert seen == ["fp32", "int8", "bf16", "int8"]


def test_serve_loads_the_model_in_the_asked_precision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("fastapi")
    import dhian.serve.server as server

    got: dict[str, Any] = {}

    def fake_run_server(model_dir: Any, *args: Any, loaded: Any = None, **kw: Any) -> None:
        got["loaded"] = loaded

    monkeypatch.setattr(server, "run_server", fake_run_server)
    d, _ = _bert_dir(tmp_path, "classification")
    assert main(["serve", "--model", str(d), "--device", "cpu", "--dtype", "bf16"]) == 0
    assert model_precision(got["loaded"].model) == "bf16"


def test_unknown_dtype_is_a_one_line_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for verb in ("translate", "evaluate", "classify", "generate", "serve"):
        with pytest.raises(SystemExit) as exit_:
            main([verb, "--model", str(tmp_path), "--dtype", "fp16"])
        assert exit_.value.code == 2
        assert "invalid choice: 'fp16'" in capsys.readouterr().err
