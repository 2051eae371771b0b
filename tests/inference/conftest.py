"""Inference tests run on one torch thread per module (tiny models; a shared machine)."""

from __future__ import annotations

from helpers.threads import one_thread_per_module  # noqa: F401 - autouse fixture
