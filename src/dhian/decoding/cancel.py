"""Stopping a decoding loop whose result nobody waits for any more.

Owns :data:`ShouldStop` (a callable ``() -> bool``, cheap, called once per decoding step),
:class:`Cancelled` (raised by a loop that was told to stop) and :func:`check_cancel`. Every
decoding loop (greedy, beam, sampling, LLM generation) takes ``should_stop`` and calls
:func:`check_cancel` before each step, so a caller (the HTTP server, when a request timed out
or its client went away; a stream whose reader left) frees the model within one step.
Imports: the standard library only.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Cancelled", "ShouldStop", "check_cancel"]

ShouldStop = Callable[[], bool]


class Cancelled(Exception):
    """A decoding loop stopped because its ``should_stop`` said so (its result is unwanted)."""


def check_cancel(should_stop: ShouldStop | None) -> None:
    """Raise :class:`Cancelled` when ``should_stop`` is given and returns True."""
    if should_stop is not None and should_stop():
        raise Cancelled("decoding cancelled: nobody waits for its result")
