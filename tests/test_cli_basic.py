"""The ``dhian`` command: --version, --help, selfcheck (run as real subprocesses)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dhian import __version__


def run(*args: str, script: bool = False) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("dhian")
    cmd = [str(exe), *args] if script else [sys.executable, "-m", "dhian", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def test_version() -> None:
    res = run("--version")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"dhian {__version__}"


def test_help_lists_selfcheck_and_no_args_prints_help() -> None:
    res = run("--help")
    assert res.returncode == 0, res.stderr
    assert "usage: dhian" in res.stdout and "selfcheck" in res.stdout
    bare = run()
    assert bare.returncode == 0 and "usage: dhian" in bare.stdout


def test_unknown_verb_fails() -> None:
    res = run("no-such-verb")
    assert res.returncode == 2 and "invalid choice" in res.stderr


def test_selfcheck_passes_via_console_script() -> None:
    if not Path(sys.executable).with_name("dhian").exists():
        pytest.skip("console script not installed next to this interpreter")
    res = run("selfcheck", script=True)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines[-1] == "attention core: OK"
    assert len(lines) >= 7 and all(line.startswith("PASS") for line in lines[:-1])
