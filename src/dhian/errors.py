"""Errors dhian raises on purpose: one line, naming the bad value and the fix.

The CLI prints ``error: <message>`` for a :class:`DhianError` and exits with status 2;
anything else is a bug and keeps its traceback. Imports nothing from dhian.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DhianError(Exception):
    """A user-facing error: bad input, bad config, missing file. Message says how to fix it."""


class ConfigError(DhianError, ValueError):
    """A configuration value or key is invalid."""


class DataError(DhianError, ValueError):
    """A corpus or data file cannot be read as asked."""


class ModelLoadError(DhianError):
    """A model directory or checkpoint cannot be loaded."""


def nearest(name: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""`` if none is close."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""
