"""Checking a model dir's files against its ``manifest.json`` when the model is used.

Owns :func:`verify_model_files`: every file that ``manifest.json`` lists (size and SHA-256,
written by each checkpoint save — see :mod:`dhian.train.checkpoint`) must match before the
model is loaded, so one flipped bit in tensor data is a one-line
:class:`~dhian.errors.ModelLoadError` naming the file instead of a silently different model.
Hashing is paid once per file version: a file whose size and modification time are those it
had when it last matched is not hashed again (cache: ``$DHIAN_CACHE/verified.json``, best
effort, plus the process's memory). The trainer state (read only to resume, and verified then)
is skipped. A dir without a manifest (imported, or written by an older dhian) is not checked.
Imports: stdlib, :mod:`dhian.errors`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

from dhian.errors import ModelLoadError

__all__ = ["MANIFEST", "verify_model_files"]

MANIFEST = "manifest.json"
#: Files a model load does not read (the resume path verifies them itself).
SKIP = frozenset({"trainer_state.pt"})

_memory: dict[str, tuple[int, int, str]] = {}  # path -> (size, mtime_ns, sha256) that matched


def _cache_file() -> Path:
    root = os.environ.get("DHIAN_CACHE") or str(Path.home() / ".cache" / "dhian")
    return Path(root).expanduser() / "verified.json"


def _read_cache() -> dict[str, Any]:
    try:
        data = json.loads(_cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(entries: dict[str, Any]) -> None:
    """Merge ``entries`` into the cache file (atomic replace; errors ignored: it is a cache)."""
    path = _cache_file()
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read_cache()
        data.update(entries)
        if len(data) > 5000:  # forget the oldest entries of a long-lived cache
            data = dict(list(data.items())[-5000:])
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, path)


def _entries(directory: Path) -> list[tuple[str, int, str]] | None:
    path = directory / MANIFEST
    if not path.is_file():
        return None
    try:
        files = json.loads(path.read_text(encoding="utf-8"))["files"]
        return [(str(k), int(v["size"]), str(v["sha256"])) for k, v in files.items()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelLoadError(
            f"{path} is unreadable ({type(exc).__name__}); the model dir is damaged"
        ) from exc


def verify_model_files(directory: str | Path) -> bool:
    """Check the files of ``directory`` against its ``manifest.json``; True when checked, False
    when it has no manifest. Raises :class:`ModelLoadError` naming the first file that is
    missing, has another size or another SHA-256."""
    directory = Path(directory)
    entries = _entries(directory)
    if entries is None:
        return False
    disk = None
    fresh: dict[str, Any] = {}
    for rel, size, digest in entries:
        if Path(rel).name in SKIP:
            continue
        f = directory / rel
        try:
            st = f.stat()
        except FileNotFoundError:
            raise ModelLoadError(f"{f} is missing (listed in {MANIFEST}); restore it") from None
        if st.st_size != size:
            raise ModelLoadError(
                f"{f} has {st.st_size} bytes but {size} were written (truncated or replaced); "
                "restore it or use another checkpoint"
            )
        key = os.path.realpath(f)
        known = (st.st_size, st.st_mtime_ns, digest)
        if _memory.get(key) == known:
            continue
        if disk is None:
            disk = _read_cache()
        if disk.get(key) == list(known):
            _memory[key] = known
            continue
        with open(f, "rb") as fh:
            actual = hashlib.file_digest(fh, "sha256").hexdigest()
        if actual != digest:
            raise ModelLoadError(
                f"{f} does not match its SHA-256 in {MANIFEST} (corrupted or changed after it "
                "was written); restore it or use another checkpoint"
            )
        _memory[key] = known
        fresh[key] = list(known)
    if fresh:
        _write_cache(fresh)
    return True
