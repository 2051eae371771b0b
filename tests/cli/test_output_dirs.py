"""Verbs that write a model or report directory never overwrite silently and never leave a
mix: a non-empty target is refused (exit 2, one line, nothing touched) unless ``--force``, which
writes a complete new dir and swaps it in; bad output paths are refused before the model runs;
written files are readable by others (0644, like every other file)."""

from __future__ import annotations

import contextlib
import io
import os
import stat
from pathlib import Path

import pytest

from dhian.cli import main


def run_cli(argv: list[str], stdin: bytes = b"Gott\n") -> tuple[int, str]:
    err = io.StringIO()
    with (
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(err),
        pytest.MonkeyPatch.context() as mp,
    ):
        mp.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        code = main(argv)
    return code, err.getvalue()


def _occupied(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "keep.txt").write_text("mine")
    return path


@pytest.fixture(scope="module")
def hf_bert(tiny_dirs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hf") / "bert"
    assert main(["export-hf", str(tiny_dirs["bert-mlm"]), str(out)]) == 0
    return out


def test_import_hf_refuses_a_model_dir_then_replaces_it_whole_with_force(hf_bert, tmp_path):
    target = _occupied(tmp_path / "translator")
    code, err = run_cli(["import-hf", str(hf_bert), str(target)])
    assert code == 2 and "is not empty" in err and "--force" in err
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    assert run_cli(["import-hf", str(hf_bert), str(target), "--force"])[0] == 0
    names = sorted(p.name for p in target.iterdir())
    assert names == ["config.yaml", "model.safetensors", "tokenizer"]  # no mix: keep.txt gone
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left


def test_export_hf_refuses_a_non_empty_dir_and_force_leaves_no_mix(tiny_dirs, tmp_path):
    target = _occupied(tmp_path / "hf")
    code, err = run_cli(["export-hf", str(tiny_dirs["bert-mlm"]), str(target)])
    assert code == 2 and "is not empty" in err
    assert (target / "keep.txt").read_text() == "mine"
    assert run_cli(["export-hf", str(tiny_dirs["bert-mlm"]), str(target), "--force"])[0] == 0
    assert not (target / "keep.txt").exists() and (target / "config.json").is_file()


def test_a_failed_export_leaves_the_old_dir_intact(tiny_dirs, tmp_path):
    target = _occupied(tmp_path / "hf")  # an RNN has no HF form: the export fails
    code, err = run_cli(["export-hf", str(tiny_dirs["rnnsearch"]), str(target), "--force"])
    assert code == 2 and "no HuggingFace export" in err
    assert [p.name for p in target.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["attention", "--model", "{missing}", "Gott", "--out", "{full}"], "is not empty"),
        (["attention", "--model", "{missing}", "Gott", "--out", "{file}/x"], "is a file"),
        (["translate", "--model", "{missing}", "--output", "{tmp}/no/x.txt"], "no such file"),
        (["translate", "--model", "{missing}", "--output", "{file}/x.txt"], "not a directory"),
        (["translate", "--model", "{missing}", "--output", "{tmp}"], "is a directory"),
        (["translate", "--model", "{missing}", "--attention-out", "{full}"], "is not empty"),
        (["evaluate", "--model", "{missing}", "--out", "{file}"], "is a file"),
        (["import-hf", "{missing}", "{full}"], "is not empty"),
    ],
)
def test_bad_output_paths_are_refused_before_the_model_is_read(argv, message, tmp_path):
    """The model path does not exist: the error is the output path's, so it came first."""
    full = _occupied(tmp_path / "full")
    (tmp_path / "file").write_text("x")
    names = {"missing": tmp_path / "missing", "full": full, "file": tmp_path / "file"}
    argv = [a.format(tmp=tmp_path, **names) for a in argv]
    code, err = run_cli(argv)
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_attention_out_with_force_replaces_the_report(tiny_dirs, tmp_path):
    target = _occupied(tmp_path / "report")
    argv = ["attention", "--model", str(tiny_dirs["rnnsearch"]), "Gott", "--out", str(target)]
    assert run_cli(argv)[0] == 2
    assert run_cli([*argv, "--force"])[0] == 0
    assert not (target / "keep.txt").exists() and (target / "attention.html").is_file()


def test_weights_are_written_0644_like_the_other_files(tiny_dirs, hf_bert):
    old = os.umask(0o022)
    os.umask(old)
    if old != 0o022:
        pytest.skip(f"umask is {old:o}")
    for path in (tiny_dirs["bert-mlm"] / "model.safetensors", hf_bert / "model.safetensors"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert stat.S_IMODE((hf_bert / "config.json").stat().st_mode) == 0o644
