"""Hostile inputs found by the hardening pass (issue 21) are one ``error:`` line, never a
traceback or an abort: wrong JSON types in an HF config.json, a model too large for the
machine (refused before allocation, naming the setting), a vocabulary the tokenizer trainer
would abort on, NaN/inf wherever a number is read, a model section that is not a mapping, a
directory given as a config, an empty or non-UTF-8 stdin to ``classify``."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from dhian.cli import main
from helpers.corpus import recipe


def run_cli(argv: list[str], stdin: bytes = b"") -> tuple[int, str, str]:
    """``main(argv)`` in-process with ``stdin`` bytes → (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        pytest.MonkeyPatch.context() as mp,
    ):
        mp.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def error_line(code: int, err: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def bad_hf_bert(tiny_dirs, tmp_path_factory) -> Path:
    """An exported HF BERT whose config.json says ``"hidden_size": "x"``."""
    out = tmp_path_factory.mktemp("hf") / "bert"
    assert main(["export-hf", str(tiny_dirs["bert-mlm"]), str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    cfg["hidden_size"] = "x"
    (out / "config.json").write_text(json.dumps(cfg))
    return out


@pytest.mark.parametrize(
    "argv",
    [
        ["import-hf", "{hf}", "{tmp}/out"],
        ["fill-mask", "--model", "{hf}", "a [MASK] film"],
        ["serve", "--model", "{hf}", "--port", "0"],
    ],
    ids=["import-hf", "fill-mask", "serve"],
)
def test_a_wrong_type_in_hf_config_json_is_one_line(argv, bad_hf_bert, tmp_path):
    argv = [a.format(hf=bad_hf_bert, tmp=tmp_path) for a in argv]
    line = error_line(*run_cli(argv)[::2])
    assert "hidden_size must be an integer >= 1, got 'x'" in line
    assert not (tmp_path / "out").exists()


def test_a_model_too_large_is_refused_before_allocation_naming_the_setting(tmp_path):
    cfg = recipe(tmp_path)
    line = error_line(*run_cli(["train", str(cfg), "--set", "model.embed_dim=1000000000"])[::2])
    assert "model.embed_dim=1000000000 makes a model of" in line
    assert "memory available; lower model.embed_dim" in line
    line = error_line(*run_cli(["train", str(cfg), "--set", "model.hidden_dim=3000000"])[::2])
    assert "model.hidden_dim=3000000" in line and "TiB" in line


def test_a_huge_vocabulary_is_refused_before_the_tokenizer_trainer(tmp_path):
    cfg = recipe(tmp_path)
    code, _, err = run_cli(["train", str(cfg), "--set", "data.vocab_size=9999999999999"])
    assert "vocab_size 9999999999999 is too large" in error_line(code, err)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lr=.nan", "train.lr must be a finite number, got nan"),
        ("train.clip_norm=.inf", "train.clip_norm must be a finite number, got inf"),
        ("train.warmup_steps=.nan", "train.warmup_steps must be an integer"),
        ("model=3", "model must be a mapping with a type"),
        ("train=3", "train must be a mapping of settings, got 3"),
        ("train.device=tpu9", "train.device must be auto, cpu, cuda or cuda:N, got 'tpu9'"),
    ],
)
def test_bad_numbers_and_shapes_in_a_config_are_one_line(tmp_path, override, message):
    cfg = recipe(tmp_path)
    assert message in error_line(*run_cli(["train", str(cfg), "--set", override])[::2])


def test_a_directory_given_as_a_config_says_so(tmp_path):
    line = error_line(*run_cli(["train", str(tmp_path)])[::2])
    assert "is a directory; give a YAML file in it" in line


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "--model", "{gpt}", "--temperature", "nan", "hi"],
        ["generate", "--model", "{gpt}", "--top-p", "inf", "hi"],
        ["translate", "--model", "{rnn}", "--length-penalty", "nan", "--beam", "2"],
        ["translate", "--model", "{rnn}", "--max-len-ratio=-inf"],
    ],
)
def test_nan_and_inf_options_are_usage_errors(argv, tiny_dirs):
    argv = [a.format(gpt=tiny_dirs["gpt"], rnn=tiny_dirs["rnnsearch"]) for a in argv]
    code, _, err = run_cli(argv, b"Gott\n")
    assert code == 2 and "must be a finite number" in err and "Traceback" not in err


def test_translate_device_tpu9_is_one_line(tiny_dirs):
    code, _, err = run_cli(["translate", "--model", str(tiny_dirs["rnnsearch"]), "--device", "tpu9"], b"Gott\n")  # fmt: skip
    assert "--device must be auto, cpu, cuda or cuda:N, got 'tpu9'" in error_line(code, err)


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        (b"", "no input: stdin is empty"),
        (b"a good film\n\xff\xfe\n", "stdin is not UTF-8 text (line 2, byte 0)"),
    ],
)
def test_classify_refuses_empty_and_non_utf8_stdin_like_translate(tiny_dirs, stdin, message):
    code, _, err = run_cli(["classify", "--model", str(tiny_dirs["bert-cls"])], stdin)
    assert message in error_line(code, err)
    code, _, err = run_cli(["translate", "--model", str(tiny_dirs["rnnsearch"])], stdin)
    assert message.split(" (")[0] in error_line(code, err)


def test_classify_reads_crlf_lines(tiny_dirs):
    code, out, _ = run_cli(
        ["classify", "--model", str(tiny_dirs["bert-cls"]), "--json"], b"ok\r\nfine"
    )
    assert code == 0 and [json.loads(x)["text"] for x in out.splitlines()] == ["ok", "fine"]
