"""The training progress bar (tqdm): step count, loss, tokens/s, lr and ETA.

Owns console output during a run: :class:`Progress` draws the bar on stderr when enabled and
routes log lines through ``tqdm.write`` so they do not tear the bar. Disabled, it prints log
lines with ``print`` (stdout) and draws nothing.
Imports: stdlib, tqdm.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from tqdm import tqdm


class Progress:
    """A step bar. ``total`` = ``max_steps`` (None: unknown, no ETA); ``initial`` = resumed step."""

    def __init__(
        self,
        total: int | None,
        initial: int = 0,
        enabled: bool = True,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self._log = log
        self._bar: Any = None
        if enabled:
            self._bar = tqdm(
                total=total or None,
                initial=initial,
                unit="step",
                dynamic_ncols=True,
                file=sys.stderr,
                leave=True,
            )

    def update(self, step: int, **stats: float) -> None:
        """Move the bar to ``step`` and show ``stats`` (loss, tok/s, lr...)."""
        if self._bar is None:
            return
        self._bar.update(max(0, step - int(self._bar.n)))
        self._bar.set_postfix({k: _fmt(v) for k, v in stats.items()}, refresh=False)

    def write(self, message: str) -> None:
        """Print one log line without tearing the bar."""
        if self._log is not None:
            self._log(message)
        elif self._bar is not None:
            self._bar.write(message, file=sys.stdout)
        else:
            print(message, flush=True)

    def close(self) -> None:
        """Finish the bar (idempotent)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _fmt(value: float) -> str:
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4g}"
    return f"{value:.2e}"
