"""A model dir with a ``manifest.json`` (every checkpoint) is checked when it is loaded: one
flipped bit in tensor data (which safetensors itself loads without complaint) is a one-line
error naming the file; a good file is hashed once and then trusted while its size and mtime
stay the same (the cache survives the process)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from dhian.cli import main
from dhian.errors import ModelLoadError
from dhian.inference.load import load_model
from dhian.models import manifest
from dhian.train.checkpoint import write_manifest


@pytest.fixture
def checkpoint(tiny_dirs, tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("DHIAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(manifest, "_memory", {})
    out = tmp_path / "best"
    shutil.copytree(tiny_dirs["rnnsearch"], out)
    write_manifest(out)
    return out


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    stat = path.stat()
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def test_a_flipped_bit_in_the_weights_is_named(checkpoint, capsys):
    load_model(checkpoint)  # fine as written
    _flip_last_byte(checkpoint / "model.safetensors")
    with pytest.raises(ModelLoadError, match=r"model\.safetensors does not match its SHA-256"):
        load_model(checkpoint)
    code = main(["translate", "--model", str(checkpoint), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "model.safetensors does not match" in err


def test_a_truncated_or_missing_file_is_named(checkpoint):
    vocab = next((checkpoint / "tokenizer").rglob("tokenizer.json"))
    vocab.write_text(vocab.read_text()[:-10])
    with pytest.raises(ModelLoadError, match=r"tokenizer\.json has .* bytes but .* were written"):
        load_model(checkpoint)
    vocab.unlink()
    with pytest.raises(ModelLoadError, match=r"tokenizer\.json is missing"):
        load_model(checkpoint)


def test_files_are_hashed_once_per_version(checkpoint, monkeypatch):
    hashed: list[str] = []
    real = manifest.hashlib.file_digest

    def counting(fh, name):  # type: ignore[no-untyped-def]
        hashed.append(Path(fh.name).name)
        return real(fh, name)

    monkeypatch.setattr(manifest.hashlib, "file_digest", counting)
    load_model(checkpoint)
    first = len(hashed)
    assert "model.safetensors" in hashed and first >= 3
    load_model(checkpoint)
    assert len(hashed) == first  # this process remembers
    monkeypatch.setattr(manifest, "_memory", {})
    load_model(checkpoint)
    assert len(hashed) == first  # and so does the cache file (another process)
    os.utime(checkpoint / "config.yaml")  # a new mtime: hashed again (and still good)
    load_model(checkpoint)
    assert hashed[first:] == ["config.yaml"]


def test_a_dir_without_manifest_is_not_checked(tiny_dirs):
    assert manifest.verify_model_files(tiny_dirs["rnnsearch"]) is False
