"""``dhian import-hf``, ``export-hf``, ``fill-mask`` and ``classify`` (in-process, tiny random
BERTs; the printed numbers are checked against the library functions)."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import pytest
import torch

from dhian.cli import main
from dhian.config import RunConfig
from dhian.inference.classify import classify
from dhian.inference.fill_mask import fill_mask
from dhian.inference.load import load_model
from dhian.interop.hf_bert import export_hf_bert
from dhian.models.bert.config import BertConfig
from dhian.models.bert.heads import build_bert
from dhian.models.model_dir import save_model_dir
from dhian.text import Tokenizer, wordpiece_from_vocab
from helpers.bert import tiny_bert_config, write_vocab
from helpers.threads import one_thread  # noqa: F401 - autouse fixture

LABELS = ("sad", "meh", "happy")


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    words = ["the", "of", "is", "capital", "france", "paris", "cat", "sat", "mat", "good", "bad"]
    vocab = write_vocab(tmp_path_factory.mktemp("vocab"), words)
    return wordpiece_from_vocab(vocab, lowercase=True)


def tiny_cfg(task: str, tok: Tokenizer) -> BertConfig:
    return tiny_bert_config(task, tok.vocab_size, LABELS)


def model_dir(tmp_path: Path, task: str, tok: Tokenizer) -> Path:
    torch.manual_seed(0)
    cfg = tiny_cfg(task, tok)
    model = build_bert(cfg).eval()
    return save_model_dir(tmp_path / task, model, RunConfig(model=cfg), tok, kind=task)


def run_cli(
    capsys: pytest.CaptureFixture[str], *args: str, stdin: str | None = None
) -> tuple[int, str, str]:
    old = sys.stdin
    if stdin is not None:
        sys.stdin = io.StringIO(stdin)
    try:
        code = main(list(args))
    finally:
        sys.stdin = old
    out = capsys.readouterr()
    return code, out.out, out.err


ROW = re.compile(r"^\s*(\d+)\s+(\S+)\s+([0-9.]+)$")


def test_fill_mask_prints_the_library_result(
    tmp_path: Path, tok: Tokenizer, capsys: pytest.CaptureFixture[str]
) -> None:
    d = model_dir(tmp_path, "mlm", tok)
    code, out, err = run_cli(
        capsys, "fill-mask", "--model", str(d), "the [MASK] sat .", "--top-k", "4"
    )
    assert code == 0, err
    rows = [ROW.match(line) for line in out.splitlines()]
    assert all(rows) and len(rows) == 4
    expect = fill_mask(load_model(d).model, tok, "the [MASK] sat .", 4)[0]
    got = [(m.group(2), float(m.group(3))) for m in rows if m]
    assert [t for t, _ in got] == [t for t, _ in expect]
    assert all(abs(p - q) < 1e-4 for (_, p), (_, q) in zip(got, expect, strict=True))
    code, out, _ = run_cli(
        capsys, "fill-mask", "--model", str(d), "[MASK] of [MASK]", "--top-k", "2"
    )
    assert code == 0 and out.count("[MASK] #") == 2
    code, _, err = run_cli(capsys, "fill-mask", "--model", str(d), "no mask", "--top-k", "2")
    assert code == 2 and err.startswith("error:") and "[MASK]" in err


def test_classify_reads_stdin_in_batches(
    tmp_path: Path, tok: Tokenizer, capsys: pytest.CaptureFixture[str]
) -> None:
    d = model_dir(tmp_path, "classification", tok)
    texts = ["the cat sat", "good", "bad bad bad", "paris is the capital of france", "", "mat"]
    code, out, err = run_cli(
        capsys, "classify", "--model", str(d), "--batch-size", "4", stdin="\n".join(texts) + "\n"
    )
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == len(texts)
    expect = classify(load_model(d).model, tok, texts, batch_size=32)
    for line, res in zip(lines, expect, strict=True):
        label, probs = line.split("\t")
        assert label == res.label and label in LABELS
        parsed = dict(kv.split("=") for kv in probs.split())
        assert list(parsed) == list(LABELS)
        assert abs(sum(float(v) for v in parsed.values()) - 1) < 1e-3
        assert all(abs(float(parsed[k]) - res.probs[k]) < 1e-4 for k in LABELS)
    code, out, _ = run_cli(capsys, "classify", "--model", str(d), "--json", stdin="good\nbad\n")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["text"] for r in rows] == ["good", "bad"]
    assert set(rows[0]["probs"]) == set(LABELS)


def test_import_then_export_hf_directories(
    tmp_path: Path, tok: Tokenizer, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(0)
    cfg = tiny_cfg("mlm", tok)
    model = build_bert(cfg).eval()
    hf_dir = export_hf_bert(model, cfg, tok, tmp_path / "hf")
    # an HF dir works directly wherever a model dir is accepted
    code, direct, err = run_cli(capsys, "fill-mask", "--model", str(hf_dir), "the [MASK] .")
    assert code == 0, err
    code, out, err = run_cli(capsys, "import-hf", str(hf_dir), str(tmp_path / "dhian"))
    assert code == 0 and "wrote dhian model dir" in out, err
    assert (tmp_path / "dhian" / "config.yaml").is_file()
    code, imported, _ = run_cli(
        capsys, "fill-mask", "--model", str(tmp_path / "dhian"), "the [MASK] ."
    )
    assert code == 0 and imported == direct
    code, out, err = run_cli(capsys, "export-hf", str(tmp_path / "dhian"), str(tmp_path / "hf2"))
    assert code == 0 and "wrote HuggingFace model dir" in out, err
    hf_cfg = json.loads((tmp_path / "hf2" / "config.json").read_text())
    assert hf_cfg["architectures"] == ["BertForMaskedLM"] and hf_cfg["hidden_size"] == 16
    assert (tmp_path / "hf2" / "vocab.txt").read_text() == (hf_dir / "vocab.txt").read_text()
    # an MLM checkpoint imported as a classifier logs the new head on stderr
    code, _, err = run_cli(
        capsys,
        "import-hf",
        str(hf_dir),
        str(tmp_path / "cls"),
        "--task",
        "classification",
        "--labels",
        "neg,pos",
    )
    assert code == 0 and "classification head not in the checkpoint" in err
    loaded = load_model(tmp_path / "cls")
    assert loaded.kind == "classification" and loaded.config.model.labels == ("neg", "pos")


def test_wrong_kind_and_bad_dirs_fail_with_one_line(
    tmp_path: Path, tok: Tokenizer, capsys: pytest.CaptureFixture[str]
) -> None:
    mlm = model_dir(tmp_path, "mlm", tok)
    code, _, err = run_cli(capsys, "classify", "--model", str(mlm), stdin="x\n")
    assert code == 2 and err.startswith("error:") and "classifier" in err
    cls = model_dir(tmp_path, "classification", tok)
    code, _, err = run_cli(capsys, "fill-mask", "--model", str(cls), "[MASK]")
    assert code == 2 and "masked-LM" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "import-hf", str(tmp_path / "empty"), str(tmp_path / "o"))
    assert code == 2 and "not a HuggingFace model dir" in err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"model_type": "roberta"}')
    code, _, err = run_cli(capsys, "import-hf", str(tmp_path / "other"), str(tmp_path / "o"))
    assert code == 2 and "roberta" in err and "bert" in err
