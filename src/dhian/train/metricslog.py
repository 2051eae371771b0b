"""``OUT/metrics.jsonl``: one JSON object per line per event (train / eval / skip / stop).

Owns the writer: every row starts with ``event``, ``step``, ``epoch`` and ``wall`` (training
seconds, summed over resumed invocations); rows are flushed as written; :meth:`MetricsLog.sync`
fsyncs and returns the byte offset a checkpoint records, and opening with ``truncate_to`` cuts
rows written after that checkpoint (so a resumed run's log equals an uninterrupted one).
Reading lives in :mod:`dhian.viz.run_curves`. Imports: stdlib.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class MetricsLog:
    """Append-only JSONL event log. ``truncate_to``: None = start empty; an int = keep the
    first ``truncate_to`` bytes (resume)."""

    def __init__(self, path: str | Path, truncate_to: int | None = None) -> None:
        self.path = Path(path)
        if truncate_to is None:
            self.path.write_text("", encoding="utf-8")
        else:
            with open(self.path, "a+b") as fh:
                fh.truncate(truncate_to)
        self._fh: Any = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, event: str, step: int, epoch: float, wall: float, **fields: Any) -> None:
        """Append one row (flushed)."""
        row = {"event": event, "step": step, "epoch": epoch, "wall": round(wall, 3), **fields}
        self._fh.write(json.dumps(row) + "\n")
        self._fh.flush()

    def sync(self) -> int:
        """fsync the file; return its size in bytes (the resume offset)."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        return int(self._fh.tell())

    def close(self) -> None:
        """Close the file (idempotent)."""
        if not self._fh.closed:
            self._fh.close()
