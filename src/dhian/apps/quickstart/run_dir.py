"""The run directory of ``dhian quickstart``: its marker, reuse of a finished run, clearing.

Owns :data:`MARKER` (``OUT/quickstart.json``, written last by a finished run),
:func:`read_marker`, :func:`clear_run` (deletes only entries a quickstart writes, so a mistyped
``--out`` never loses someone's files) and :func:`reuse_or_clear` (reuse a finished run of the
same model/corpus/mode, or clear ``OUT`` to train anew). :mod:`dhian.apps.quickstart.run` re-exports
them.
Imports: stdlib, :mod:`dhian.errors`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dhian.apps.quickstart.options import QuickstartOptions
from dhian.errors import ConfigError

__all__ = ["CURVE_DIR", "MARKER", "Confirm", "Log", "clear_run", "read_marker", "reuse_or_clear"]

MARKER = "quickstart.json"
Log = Callable[[str], None]
Confirm = Callable[[str], bool]

CURVE_DIR = "curve"  # OUT/curve/<M>min: the models of the earlier budgets of --curve

# Entries a quickstart (the training engine + the report) writes into OUT; `clear_run` deletes
# only these, so a mistyped --out never loses someone's files.
_OURS = {
    "config.yaml",
    "metrics.jsonl",
    "curves.png",
    "tokenizer",
    "best",
    "last",
    "last.prev",
    "checkpoints",
    "figures",
    CURVE_DIR,
    "report.md",
    "report.html",
    "test-translations.tsv",
    MARKER,
}


def read_marker(out: str | Path) -> dict[str, Any] | None:
    """The ``quickstart.json`` of a finished run in ``out`` (None if absent or unreadable)."""
    path = Path(out) / MARKER
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _is_ours(name: str) -> bool:
    return name in _OURS or name.startswith((".best.", ".last.", ".report.", ".curves."))


def _only_ours(out: Path) -> bool:
    """``out`` is a non-empty dir holding only what a quickstart writes."""
    entries = list(out.iterdir()) if out.is_dir() else []
    return bool(entries) and all(_is_ours(p.name) for p in entries)


def clear_run(out: str | Path) -> None:
    """Delete what a quickstart wrote in ``out``; refuse if ``out`` holds anything else."""
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a file; choose a directory")
    foreign = sorted(p.name for p in out.iterdir() if not _is_ours(p.name))
    if foreign:
        raise ConfigError(
            f"--out {str(out)!r} holds files a quickstart did not write ({', '.join(foreign[:3])}"
            f"{'...' if len(foreign) > 3 else ''}); choose another --out"
        )
    for p in out.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def reuse_or_clear(
    opts: QuickstartOptions, log: Log, confirm: Confirm | None
) -> dict[str, Any] | None:
    """The marker of a finished run to reuse, or None (after clearing ``out`` to train anew)."""
    out = Path(opts.out)
    marker = read_marker(out)
    model_ok = marker is not None and (out / str(marker.get("model_dir", "best"))).is_dir()
    if marker is not None and model_ok and not opts.retrain:
        if marker.get("identity") != opts.identity():
            raise ConfigError(
                f"{out} holds a finished quickstart of another setup ({marker.get('identity')}); "
                "pass --retrain to replace it or choose another --out"
            )
        bleu = marker.get("test", {}).get("bleu")
        shown = f" (test BLEU {bleu:.1f})" if isinstance(bleu, int | float) else ""
        question = f"{out} holds a finished quickstart model{shown}; reuse it?"
        if confirm is None or confirm(question):
            log(f"reusing the trained model in {out} (pass --retrain to train again)")
            return marker
    elif not opts.retrain and _only_ours(out):
        raise ConfigError(
            f"{out} holds an unfinished run (interrupted?); pass --retrain to start over, or "
            "choose another --out"
        )
    clear_run(out)  # refuses a dir holding files a quickstart did not write
    return None
