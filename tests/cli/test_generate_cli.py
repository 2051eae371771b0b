"""``dhian generate``: streams a tiny random GPT's continuation, matching the library call."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch

from dhian.cli import main
from dhian.config import DataConfig, RunConfig
from dhian.inference.generate import generate_text
from dhian.models.gpt.config import GPTConfig
from dhian.models.gpt.model import build_gpt, lm_loss
from helpers.threads import one_thread  # noqa: F401 - autouse fixture

CORPUS = ["in the beginning was the word", "and the word was with god", "let there be light"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    io_mod = pytest.importorskip("dhian.models.model_dir")
    from dhian.text.training import train_tokenizer

    tok = train_tokenizer("char", CORPUS, 64)
    cfg = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=32, dropout=0.0, init_std=0.3)
    torch.manual_seed(0)
    model = build_gpt(cfg, tok.vocab_size)
    # a few steps on the corpus, so samples are letters rather than specials/EOS
    stream = torch.tensor([i for doc in tok.encode_batch(CORPUS) for i in [*doc, tok.eos_id]] * 4)
    batch = torch.stack([stream[s : s + 33] for s in range(0, len(stream) - 33, 13)])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(25):
        loss = lm_loss(model(batch[:, :-1]).logits, batch[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    run = RunConfig(model=cfg, data=DataConfig(corpus="bible:en", tokenizer="char"))
    out = tmp_path_factory.mktemp("gpt") / "model"
    io_mod.save_model_dir(out, model, run, tok, kind="lm")
    return out


class Recorder(io.StringIO):
    """stdout stand-in that records what was on screen at every flush."""

    def __init__(self) -> None:
        super().__init__()
        self.flushed: list[str] = []

    def flush(self) -> None:
        self.flushed.append(self.getvalue())


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, Recorder]:
    rec = Recorder()
    monkeypatch.setattr("sys.stdout", rec)
    code = main(["generate", *args])
    return code, rec


def library(model_dir: Path, prompt: str, **kw: Any) -> str:
    from dhian.models.model_dir import load_model_dir

    loaded = load_model_dir(model_dir)
    return generate_text(loaded.model, loaded.tokenizers["tgt"], [prompt], **kw)[0]


def test_streams_the_same_text_as_the_library(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["--model", str(model_dir), "--prompt", "and the", "--max-new-tokens", "12"]
    code, rec = run_cli(monkeypatch, *args, "--temperature", "0.9", "--seed", "5")
    assert code == 0
    expected = library(model_dir, "and the", max_new_tokens=12, temperature=0.9, seed=5)
    assert rec.getvalue() == "and the" + expected + "\n"
    # streamed: the screen grew over several flushes, each a prefix of the final output
    growing = [s for s in dict.fromkeys(rec.flushed) if s]
    assert len(growing) >= 4
    assert all(rec.getvalue().startswith(s) for s in growing)


def test_greedy_n_samples_and_stop_string(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = ["--model", str(model_dir), "--prompt", "let", "--max-new-tokens", "10"]
    code, rec = run_cli(monkeypatch, *base, "--temperature", "0", "--n", "2")
    assert code == 0
    greedy = library(model_dir, "let", max_new_tokens=10, temperature=0.0)
    sample = f"let{greedy}\n"
    assert rec.getvalue() == f"--- sample 1 ---\n{sample}\n--- sample 2 ---\n{sample}"
    if len(greedy.strip()) >= 3:
        stop = greedy.strip()[1:3]
        code, rec = run_cli(monkeypatch, *base, "--temperature", "0", "--stop", stop)
        assert code == 0
        assert rec.getvalue() == "let" + greedy[: greedy.index(stop)] + "\n"


def test_errors_are_one_line(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run_cli(monkeypatch, "--model", str(model_dir / "nope"), "--prompt", "x")
    assert code == 2
    assert "does not exist" in capsys.readouterr().err
    code, _ = run_cli(monkeypatch, "--model", str(model_dir), "--top-p", "0")
    assert code == 2
    assert "--top-p" in capsys.readouterr().err


def test_a_run_dir_means_its_best_model(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--model runs/X`` (what `dhian train` printed) works as with evaluate: X/best."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(model_dir, run / "best")
    base = ["--prompt", "let", "--max-new-tokens", "6", "--temperature", "0"]
    code, rec = run_cli(monkeypatch, "--model", str(run), *base)
    assert code == 0
    assert (
        rec.getvalue()
        == "let" + library(model_dir, "let", max_new_tokens=6, temperature=0.0) + "\n"
    )


@pytest.mark.parametrize("verb", ["generate", "chat", "serve"])
def test_compile_flag_parses(verb: str) -> None:
    from dhian.cli import build_parser

    parser = build_parser()
    base = [verb, "--model", "smollm2"]
    assert parser.parse_args(base).compile == "auto"
    for value in ("on", "off", "auto"):
        assert parser.parse_args([*base, "--compile", value]).compile == value
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--compile", "yes"])


def test_compile_on_needs_a_llama(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--model", str(model_dir), "--prompt", "let", "--max-new-tokens", "3"]
    code, _ = run_cli(monkeypatch, *base, "--compile", "on")
    assert code == 2
    assert "--compile on needs a LLaMA-family model" in capsys.readouterr().err
    code, rec = run_cli(monkeypatch, *base, "--compile", "auto", "--temperature", "0")
    assert code == 0 and rec.getvalue().startswith("let")
