"""``dhian translate`` / ``dhian evaluate`` end to end: train a tiny RNNsearch on a generated
tsv corpus with ``dhian train``, translate stdin and files (matching the library call, order
and empty lines kept), write alignment plots, evaluate with a comparison (report files; BLEU
equal to sacrebleu on the written hypotheses against the corpus's references) — and one-line
errors with exit 2 for bad input."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image
from sacrebleu.metrics import BLEU

from dhian.cli import main
from dhian.config import RunConfig
from dhian.inference.translate import load_translation_model, translate_texts
from dhian.models.bert.config import BertConfig
from dhian.models.families import build_model
from dhian.models.model_dir import save_model_dir
from dhian.text import train_tokenizer
from helpers.corpus import train_word_swap_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run dir trained by ``dhian train`` (best/ and last/) on an en→de word-swap corpus."""
    run = train_word_swap_run(tmp_path_factory.mktemp("mt"), test_max_words=12, eval_every=60)
    assert (run / "best" / "model.safetensors").is_file()
    return run


def feed_stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode("utf-8"))))


LINES = ["one red house", "", "big blue cat two three", "cat", "three big red houses one two"]


def test_translate_stdin_keeps_order_and_empty_lines(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    feed_stdin(monkeypatch, "\n".join(LINES) + "\n")
    assert main(["translate", "--model", str(run_dir), "--beam", "3", "--batch-size", "2"]) == 0
    got = capsys.readouterr().out.split("\n")
    assert got[-1] == "" and len(got) - 1 == len(LINES)
    loaded = load_translation_model(run_dir / "best")  # the run dir means its best/
    ref = translate_texts(loaded, LINES, beam=3, length_penalty=1.0, batch_size=32)
    assert got[:-1] == [t.text for t in ref]
    assert got[1] == "" and got[0] != ""
    assert "eins" in got[0] and "rot" in got[0]  # it learned something


def test_translate_no_repeat_ngram_is_the_library_guard(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = ["one one one red red house house", "two two two two"]
    feed_stdin(monkeypatch, "\n".join(lines) + "\n")
    argv = ["translate", "--model", str(run_dir), "--beam", "2", "--no-repeat-ngram", "1"]
    assert main(argv) == 0
    got = capsys.readouterr().out.splitlines()
    loaded = load_translation_model(run_dir / "best")
    guarded = translate_texts(loaded, lines, beam=2, length_penalty=1.0, no_repeat_ngram=1)
    assert got == [t.text for t in guarded] and all(got)


def test_translate_files_nbest_and_attention(run_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    out, att = tmp_path / "out.txt", tmp_path / "att"
    args = ["translate", "--model", str(run_dir), "--input", str(src), "--output", str(out)]
    assert main([*args, "--attention-out", str(att), "--beam", "1"]) == 0
    lines = out.read_text(encoding="utf-8").split("\n")[:-1]
    assert len(lines) == len(LINES) and lines[1] == ""
    pngs = sorted(p.name for p in att.glob("*.png"))
    assert pngs == ["0001.png", "0003.png", "0004.png", "0005.png"]  # not the empty line
    rec = json.loads((att / "0003.json").read_text(encoding="utf-8"))
    assert rec["translation"] == lines[2]
    assert len(rec["weights"]) == len(rec["out_tokens"])
    assert all(len(r) == len(rec["src_tokens"]) for r in rec["weights"])
    with Image.open(att / "0003.png") as img:
        assert img.size[0] > 150 and img.size[1] > 150

    nbest = tmp_path / "nbest.txt"
    n_args = ["translate", "--model", str(run_dir), "--input", str(src), "--output", str(nbest)]
    assert main([*n_args, "--beam", "3", "--n-best", "2"]) == 0
    rows = nbest.read_text(encoding="utf-8").splitlines()
    assert [r.split(" ||| ")[0] for r in rows] == ["0", "0", "1", "2", "2", "3", "3", "4", "4"]


def test_evaluate_report_and_compare(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(run_dir), "--beam", "2", "--out", str(out)]
    assert main([*args, "--buckets", "0-4,4-8,8+", "--compare", str(run_dir / "last")]) == 0
    printed = capsys.readouterr().out
    assert "nrefs:1|case:mixed|eff:no|tok:13a" in printed and "sentences/s" in printed
    corpus = yaml.safe_load((run_dir / "best" / "config.yaml").read_text())["data"]["corpus"]
    test_tsv = Path(corpus.removeprefix("tsv:")) / "test.tsv"
    pairs = [line.split("\t") for line in test_tsv.read_text(encoding="utf-8").splitlines()]
    refs = [t for _, t in pairs]
    hyps = (out / "hyps.test.txt").read_text(encoding="utf-8").splitlines()
    assert len(hyps) == len(refs) == 24
    report = json.loads((out / "eval.test.json").read_text(encoding="utf-8"))
    best, last = report["models"]
    assert (best["name"], last["name"]) == ("run", "run-2")
    expected = BLEU().corpus_score(hyps, [refs]).score
    assert best["bleu"] == pytest.approx(expected) and expected > 10.0
    hyps_last = (out / "hyps.test.run-2.txt").read_text(encoding="utf-8").splitlines()
    assert last["bleu"] == pytest.approx(BLEU().corpus_score(hyps_last, [refs]).score)
    assert [b["n"] for b in best["by_length"]] == [
        sum(lo <= len(s.split()) < hi for s, _ in pairs) for lo, hi in ((0, 4), (4, 8), (8, 99))
    ]
    md = (out / "eval.test.md").read_text(encoding="utf-8")
    assert "| source words | n | run | run-2 |" in md
    assert (out / "bleu_by_length.test.png").stat().st_size > 5000


def bert_dir(root: Path, task: str = "mlm") -> Path:
    tok = train_tokenizer("wordpiece", ["a small text", "another one"], vocab_size=40)
    extra: dict[str, Any] = {"labels": ("neg", "pos")} if task == "classification" else {}
    cfg = BertConfig(
        embed_dim=8, layers=1, heads=2, ff_dim=16, max_positions=16, task=task, **extra
    )
    model = build_model(cfg, tok.vocab_size)
    return save_model_dir(root / f"bert-{task}", model, RunConfig(model=cfg), tok, kind=task)


def test_evaluate_dispatches_other_kinds_to_dhian_train(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A kind without its own CLI branch (here a masked LM) goes to its task's library
    evaluator with the options it accepts; its dict is printed and saved."""
    from dhian.cli import evaluate as cli_evaluate

    calls: list[tuple[str, dict[str, object]]] = []

    def evaluate_mlm(
        loaded: object, split: str = "test", corpus: str | None = None
    ) -> dict[str, float]:
        calls.append((getattr(loaded, "kind", "?"), {"split": split, "corpus": corpus}))
        return {"mlm_accuracy": 0.5, "loss": 0.25}

    model = bert_dir(tmp_path)
    monkeypatch.setitem(
        cli_evaluate.EVALUATORS, "mlm", cli_evaluate.library_evaluator(lambda: evaluate_mlm)
    )
    out = tmp_path / "out"
    assert main(["evaluate", "--model", str(model), "--split", "dev", "--out", str(out)]) == 0
    assert calls == [("mlm", {"split": "dev", "corpus": None})]
    assert "mlm_accuracy: 0.5" in capsys.readouterr().out
    assert json.loads((out / "eval.dev.json").read_text())["loss"] == 0.25


def test_bad_input_is_one_line_exit_2(
    run_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def fails(argv: list[str], *needles: str) -> None:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err, err
        for needle in needles:
            assert needle in err, err

    fails(["translate", "--model", str(tmp_path / "nope")], "does not exist")
    fails(["evaluate", "--model", str(tmp_path / "nope")], "does not exist")
    bert = bert_dir(tmp_path)
    fails(["translate", "--model", str(bert)], "'mlm' model (bert)", "dhian fill-mask")
    missing = str(tmp_path / "no-corpus")
    fails(["evaluate", "--model", str(bert), "--corpus", f"text:{missing}"], "no-corpus")
    feed_stdin(monkeypatch, "")
    fails(["translate", "--model", str(run_dir)], "no input")
    fails(["translate", "--model", str(run_dir), "--n-best", "4", "--beam", "2"], "--n-best")
    fails(["translate", "--model", str(run_dir), "--no-repeat-ngram", "-1"], "--no-repeat-ngram")
    fails(["evaluate", "--model", str(run_dir), "--no-repeat-ngram", "-2"], "got -2")
    fails(["evaluate", "--model", str(run_dir), "--buckets", "0-10,5-20"], "overlap")
    fails(["evaluate", "--model", str(run_dir), "--corpus", f"tsv:{tmp_path}"], str(tmp_path))
    recipe = tmp_path / "typo.yaml"
    recipe.write_text(yaml.safe_dump({"model": {"type": "rnnsearch", "hiden_dim": 8}}), "utf-8")
    fails(["train", str(recipe)], "hiden_dim", "hidden_dim")


def test_empty_stdin_in_a_real_process(run_dir: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dhian", "translate", "--model", str(run_dir)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: no input") and "Traceback" not in proc.stderr
