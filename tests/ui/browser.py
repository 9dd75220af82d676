"""Chromium via Playwright for the page tests: which binary, one browser per module, a signed-in page.

Importing this module skips the importing test module unless Playwright is
importable; the tests skip themselves (``pytestmark``) when no Chromium binary
is found (``RUNSTREAM_CHROMIUM``, else Debian's ``chromium-headless-shell``/``chromium``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.ui.conftest import TOKEN

sync_api = pytest.importorskip("playwright.sync_api")

_CANDIDATES = ("/usr/lib/chromium/chromium-headless-shell", "/usr/lib/chromium/chromium")


def _chromium() -> str | None:
    wanted = os.environ.get("RUNSTREAM_CHROMIUM")
    if wanted:
        return wanted
    found = [c for c in _CANDIDATES if Path(c).exists()]
    return found[0] if found else shutil.which("chromium")


CHROMIUM = _chromium()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary found")


def launch() -> Iterator[Any]:
    """One headless Chromium (the body of a module-scoped ``browser`` fixture)."""
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@contextmanager
def signed_in_page(browser: Any, base_url: str, ready: str, viewport: dict[str, int] | None = None) -> Iterator[Any]:
    """A page signed in through ``/?token=``, once ``ready`` (a selector) shows.

    Fails the test on any script error or Content-Security-Policy violation
    seen while it was open.
    """
    context = browser.new_context(viewport=viewport) if viewport else browser.new_context()
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: problems.append(msg.text) if "Content Security Policy" in msg.text else None)
    page.goto(f"{base_url}/?token={TOKEN}")
    page.wait_for_selector(ready)
    yield page
    context.close()
    assert problems == []
