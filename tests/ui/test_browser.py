"""The page in a real browser (Chromium via Playwright) against the API on a real store.

Skipped unless Playwright is importable and a Chromium binary is found
(``RUNSTREAM_CHROMIUM``, else Debian's ``chromium-headless-shell``/``chromium``).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette

from tests.ui.browser import needs_chromium, signed_in_page, sync_api
from tests.ui.conftest import XSS_LINE, XSS_NAME, Seeded, make_app

pytestmark = needs_chromium


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def base_url(queries_app_parts: tuple) -> Iterator[str]:
    """The app served by uvicorn on a free loopback port, for the module's tests."""
    port = _free_port()
    app: Starlette = make_app(*queries_app_parts, allowed_hosts=(f"127.0.0.1:{port}",))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", ws="none")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def page(browser: Any, base_url: str) -> Iterator[Any]:
    with signed_in_page(browser, base_url, "table.runs") as opened:
        yield opened


def test_sign_in_drops_the_token_from_the_address(page: Any, base_url: str) -> None:
    """After opening /?token=..., the address bar no longer shows the token."""
    assert page.url == f"{base_url}/"


def test_run_list_shows_markup_as_text(page: Any, seeded: Seeded) -> None:
    """A run named with HTML is listed as that literal text, creating no element."""
    names = page.locator("td.name").all_inner_texts()
    assert XSS_NAME in names and "lr-3e-4" in names
    assert page.locator("main img, main script").count() == 0


def test_run_page_draws_charts_and_logs(page: Any, seeded: Seeded) -> None:
    """A run's page has a chart per metric and its log lines, markup shown as text."""
    page.click("text=lr-3e-4")
    page.wait_for_selector("figure.card")
    # A locator wait, not wait_for_function: the page's CSP forbids the eval that polling a
    # string predicate needs, so that wait failed whenever the lines were not there at once.
    sync_api.expect(page.locator(".logview .line")).to_have_count(40)
    captions = page.locator("figure.card .metric").all_inner_texts()
    assert captions == ["acc", "grad_norm", "loss"]
    page.goto(page.url.replace(seeded.run_id, seeded.xss_run_id))
    page.wait_for_selector(".logview .line")
    assert page.locator(".logview .text").all_inner_texts() == [XSS_LINE]
    assert page.locator("main script, main b").count() == 0


def test_log_deep_link_fills_the_search(page: Any, base_url: str, seeded: Seeded) -> None:
    """/runs/{id}/logs?q=... opens with the search filled in and applied."""
    page.goto(f"{base_url}/runs/{seeded.run_id}/logs?q=checkpoint+saved")
    page.wait_for_selector(".logview .line")
    assert page.input_value("input.q") == "checkpoint saved"
    texts = page.locator(".logview .text").all_inner_texts()
    assert texts == [line for line in seeded.lines if "checkpoint saved" in line.lower()]
