"""``dhian`` turns operating-system errors into one line and exit 2, keeps real bugs visible.

A path that is too long, a missing directory, a full disk (``/dev/full``), a path with bytes
that are not UTF-8: each gives ``error: <what> (<path>); <hint>`` on stderr and exit status 2,
never a traceback. Any other exception (a bug) still propagates with its traceback, and an ASCII
terminal gets escapes instead of a UnicodeEncodeError.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dhian.cli import describe_os_error, main
from dhian.config import DataConfig, RunConfig
from dhian.models.families import build_model
from dhian.models.model_dir import save_model_dir
from dhian.models.rnn.config import RNNSeq2SeqConfig
from dhian.text import train_tokenizer

LONG = "x" * 300  # longer than NAME_MAX (255)


def run_cli(argv: list[str], stdin: str = "") -> tuple[int, str, str]:
    """``main(argv)`` in-process → (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        pytest.MonkeyPatch.context() as mp,
    ):
        mp.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin.encode())))
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random RNNsearch saved as a model dir (what ``dhian translate`` loads)."""
    torch.manual_seed(0)
    texts = ["the cat sat", "a dog ran", "the dog sat on a cat"] * 4
    src = train_tokenizer("char", texts, 40)
    tgt = train_tokenizer("char", texts, 40)
    cfg = RNNSeq2SeqConfig(type="rnnsearch", embed_dim=8, hidden_dim=8, dropout=0.0)
    kwargs = {
        "src_vocab_size": src.vocab_size,
        "tgt_vocab_size": tgt.vocab_size,
        "pad_id": tgt.pad_id,
        "bos_id": tgt.bos_id,
        "eos_id": tgt.eos_id,
    }
    model = build_model(cfg, **kwargs).eval()
    run = RunConfig(model=cfg, data=DataConfig(max_len=16))
    d = tmp_path_factory.mktemp("tiny") / "model"
    save_model_dir(d, model, run, {"src": src, "tgt": tgt}, kind="translation", build_kwargs=kwargs)
    return d


@pytest.mark.parametrize(
    "argv",
    [
        ["train", LONG],
        ["generate", "--model", LONG],
        ["translate", "--model", LONG],
        ["evaluate", "--model", LONG],
        ["classify", "--model", LONG],
        ["fill-mask", "--model", LONG, "a [MASK]"],
        ["import-hf", LONG, "out"],
        ["export-hf", LONG, "out"],
    ],
    ids=lambda a: a[0],
)
def test_a_too_long_path_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, argv: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(argv)
    line = one_error_line(err)
    assert code == 2
    assert line.startswith("error: file name too long (xxxx"), line
    assert line.endswith("; use a shorter path"), line
    # the path is shortened (its length told), not dumped
    assert re.search(r", 3\d\d characters\)", line) and len(line) < 260, line


def test_a_full_disk_is_one_line(model_dir: Path) -> None:
    """``/dev/full`` answers every write with ENOSPC, like a full disk."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    code, _, err = run_cli(
        ["translate", "--model", str(model_dir), "--output", "/dev/full"], stdin="the cat\n"
    )
    line = one_error_line(err)
    assert code == 2 and "no space left on device" in line and "free some disk space" in line


def test_writing_under_a_file_is_one_line(model_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x", encoding="utf-8")
    target = blocker / "out.txt"
    code, _, err = run_cli(
        ["translate", "--model", str(model_dir), "--output", str(target)], stdin="the cat\n"
    )
    line = one_error_line(err)
    assert code == 2
    assert line == f"error: not a directory ({target}); check the path", line


def test_a_path_with_undecodable_bytes_is_escaped(model_dir: Path, tmp_path: Path) -> None:
    """argv bytes that are not UTF-8 arrive as lone surrogates; the message escapes them."""
    target = tmp_path / "gone\udcff" / "out.txt"
    code, _, err = run_cli(
        ["translate", "--model", str(model_dir), "--output", str(target)], stdin="the cat\n"
    )
    line = one_error_line(err)
    assert code == 2 and "gone\\udcff/out.txt" in line and "no such file or directory" in line
    line.encode("utf-8")  # printable on any UTF-8 terminal


def test_describe_os_error_cases() -> None:
    rename = OSError(errno.EXDEV, "Invalid cross-device link", "/a/x", None, "/b/y")
    assert describe_os_error(rename) == "invalid cross-device link (/a/x -> /b/y)"
    assert describe_os_error(OSError(errno.ENOSPC, "No space left on device")) == (
        "no space left on device; free some disk space"
    )
    assert describe_os_error(OSError("socket closed\nsecond line")) == "socket closed"
    assert describe_os_error(ConnectionResetError()) == "ConnectionResetError"
    odd = describe_os_error(FileNotFoundError(errno.ENOENT, "No such file", "a\nb\udcff"))
    assert odd == "no such file (a\\nb\\udcff); check the path"
    readable = describe_os_error(FileNotFoundError(errno.ENOENT, "No such file", "ਧਿਆਨ/ü"))
    assert readable == "no such file (ਧਿਆਨ/ü); check the path"


def test_a_user_error_naming_an_odd_path_is_still_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Found by tests/test_fuzz.py: a DhianError quoting a path with a carriage return."""
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["import-hf", "\r", "out"])
    assert code == 2
    assert one_error_line(err) == (
        "error: \\r is not a HuggingFace model dir (no config.json model_type)"
    )


@pytest.mark.parametrize(
    "exc",
    [ValueError("a bug"), io.UnsupportedOperation("not readable")],
    ids=["ValueError", "UnsupportedOperation"],
)
def test_a_bug_keeps_its_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, exc: Exception
) -> None:
    """Only user errors and OSErrors become one line; anything else propagates."""

    def broken(args: object) -> int:
        raise exc

    monkeypatch.setattr("dhian.cli.train.run", broken)
    with pytest.raises(type(exc)):
        main(["train", str(tmp_path / "recipe.yaml")])


def _dhian(
    *args: str | bytes, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "dhian", *args],
        capture_output=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_real_process_with_undecodable_argv_bytes(tmp_path: Path) -> None:
    res = _dhian("train", os.fsencode(tmp_path) + b"/\xff\xfe.yaml")
    err = res.stderr.decode("utf-8")
    assert res.returncode == 2, err
    line = one_error_line(err)
    assert line.endswith("\\udcff\\udcfe.yaml' does not exist (see configs/ for recipes)"), line


def test_an_ascii_terminal_gets_escapes_not_a_crash() -> None:
    """``dhian --help`` holds Gurmukhi; a strict ASCII stdout used to raise UnicodeEncodeError."""
    res = _dhian("--help", env={"PYTHONIOENCODING": "ascii:strict"})
    assert res.returncode == 0, res.stderr.decode()
    out = res.stdout.decode("ascii")
    assert "dhian (\\u0a27\\u0a3f\\u0a06\\u0a28)" in out and "usage: dhian" in out
