"""Headless Chromium (Debian ``chromium``) driven by Playwright, for the browser tests.

Importing this module skips the importing test module when Playwright is missing
(``pip install playwright``); mark it ``pytestmark = needs_chromium`` to skip without the
browser binary (``apt-get install -y chromium``; ``DHIAN_CHROMIUM`` names another path). Import
a module-scoped fixture yields ``with launch_chromium() as b: yield b``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("DHIAN_CHROMIUM", "/usr/bin/chromium"))
#: no sandbox (containers), no GPU, and none of Chromium's own background traffic
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} missing: apt-get install -y chromium"
)
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright missing: pip install playwright"
)


@contextlib.contextmanager
def launch_chromium() -> Iterator[Any]:
    """A launched headless Chromium (a Playwright ``Browser``), closed afterwards."""
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield b
        finally:
            b.close()
