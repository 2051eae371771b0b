"""``dhian tag`` and ``dhian answer`` in-process on tiny saved models: output formats, the
library's answers, option errors and wrong kinds of model as one ``error:`` line."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from dhian.cli import main
from dhian.inference.answer import answer
from dhian.inference.load import load_model
from dhian.inference.tag import tag
from helpers.ner_qa import CONTEXT, tiny_task_dir


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


def test_tag_text_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tiny_task_dir(tmp_path, "token_classification")
    lines = ["Anna lives in Paris", "", "Bob works at Acme Corp ."]
    code, out, err = run_cli(
        capsys, "tag", "--model", str(d), "--batch-size", "2", stdin="\n".join(lines) + "\n"
    )
    assert code == 0, err
    loaded = load_model(d)
    want = tag(loaded.model, loaded.tokenizers["src"], lines)
    rows = out.split("\n")[:-1]
    assert len(rows) == 3 and rows[1] == "\t"
    words, spans = rows[0].split("\t")
    assert words == " ".join(f"{w.text}/{w.label}" for w in want[0].words)
    assert spans == " ".join(f'{e.type}[{e.start}:{e.end}]="{e.text}"' for e in want[0].entities)
    code, out, _ = run_cli(capsys, "tag", "--model", str(d), "--json", stdin=lines[2] + "\n")
    assert code == 0 and json.loads(out) == want[2].as_dict()


def test_answer_text_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tiny_task_dir(tmp_path, "question_answering")
    ctx = tmp_path / "ctx.txt"
    ctx.write_text(CONTEXT, encoding="utf-8")
    loaded = load_model(d)
    want = answer(loaded.model, loaded.tokenizers["src"], "Who?", CONTEXT, max_answer_len=4)
    code, out, err = run_cli(
        capsys, "answer", "--model", str(d), "--context", str(ctx), "--max-answer-len", "4", "Who?"
    )
    assert code == 0 and out.strip() == want.text, err
    code, out, _ = run_cli(
        capsys, "answer", "--model", str(d), "--context", "-", "--json", "Who?", stdin=CONTEXT
    )
    body = json.loads(out)
    assert (
        code == 0
        and body["question"] == "Who?"
        and CONTEXT[body["start"] : body["end"]] == body["text"]
    )
    code, out, _ = run_cli(
        capsys,
        "answer",
        "--model",
        str(d),
        "--context",
        str(ctx),
        "--null-threshold=-1e9",
        "Who?",
    )
    assert code == 0 and out.strip() == "(no answer)"


def test_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tagger = tiny_task_dir(tmp_path, "token_classification")
    qa = tiny_task_dir(tmp_path, "question_answering")
    ctx = tmp_path / "ctx.txt"
    ctx.write_text(CONTEXT)
    code, _, err = run_cli(capsys, "tag", "--model", str(qa), stdin="x\n")
    assert code == 2 and err.startswith("error:") and "use dhian answer" in err
    code, _, err = run_cli(capsys, "answer", "--model", str(tagger), "--context", str(ctx), "q")
    assert code == 2 and "use dhian tag" in err
    code, _, err = run_cli(capsys, "fill-mask", "--model", str(tagger), "[MASK]")
    assert code == 2 and "masked-LM" in err
    code, _, err = run_cli(capsys, "tag", "--model", str(tagger), "--batch-size", "0")
    assert code == 2 and "--batch-size" in err
    code, _, err = run_cli(
        capsys, "answer", "--model", str(qa), "--context", str(ctx), "--stride", "-1", "q"
    )
    assert code == 2 and "--stride" in err
    code, _, err = run_cli(
        capsys, "answer", "--model", str(qa), "--context", str(tmp_path / "no"), "q"
    )
    assert code == 2 and "no such file" in err
    empty = tmp_path / "empty.txt"
    empty.write_text(" \n")
    code, _, err = run_cli(capsys, "answer", "--model", str(qa), "--context", str(empty), "q")
    assert code == 2 and "context is empty" in err
    code, _, err = run_cli(
        capsys,
        "attention",
        "--model",
        str(tagger),
        "x",
        "--context",
        str(ctx),
        "--out",
        str(tmp_path / "a"),
    )
    assert code == 2 and "--context is for question-answering" in err
    code, out, err = run_cli(
        capsys,
        "attention",
        "--model",
        str(qa),
        "Who?",
        "--context",
        str(ctx),
        "--out",
        str(tmp_path / "a"),
    )
    assert code == 0 and out.startswith("output: "), err


def test_evaluate_needs_a_corpus_of_the_right_kind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from helpers.ner_qa import write_conll, write_squad

    tagger = tiny_task_dir(tmp_path, "token_classification")
    qa = tiny_task_dir(tmp_path, "question_answering")
    code, _, err = run_cli(capsys, "evaluate", "--model", str(tagger))
    assert code == 2 and "give --corpus conll:DIR" in err
    code, _, err = run_cli(capsys, "evaluate", "--model", str(qa))
    assert code == 2 and "give --corpus squad:DIR" in err
    conll = write_conll(tmp_path / "c")  # has ORG and MISC tags the tiny model lacks
    code, _, err = run_cli(capsys, "evaluate", "--model", str(tagger), "--corpus", f"conll:{conll}")
    assert code == 2 and "tag 'B-ORG', not one of the model's" in err
    (conll / "test.txt").write_text("Anna B-PER\nlives O\nin O\nParis B-LOC\n", encoding="utf-8")
    code, out, err = run_cli(
        capsys, "evaluate", "--model", str(tagger), "--corpus", f"conll:{conll}"
    )
    assert code == 0 and "entity_f1:" in out and "sentences: 1" in out, err
    squad = write_squad(tmp_path / "s")
    code, out, err = run_cli(
        capsys, "evaluate", "--model", str(qa), "--corpus", str(squad), "--out", str(tmp_path / "e")
    )
    assert code == 0 and "exact_match:" in out and "no_answer_exact:" in out, err
    assert (tmp_path / "e" / "eval.test.json").is_file()
