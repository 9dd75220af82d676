"""The log panel with real lines in a real browser: multi-line records, paging a long search, a tail that falls behind.

Real server (``python -m ui.serve``: sink, API, live feed, a feed queue bound of 500 records) over the
real broker and chDB.
"""

from __future__ import annotations

import uuid
from typing import Any

from tests.conftest import scaled
from tests.ui.browser import needs_chromium, sync_api
from tests.ui.conftest import Server
from tests.ui.test_live_page import api, emit, open_run, wait_until

expect = sync_api.expect

pytestmark = needs_chromium

#: One record as ``logging.exception`` sends it: the message, then the traceback, in one text.
TRACEBACK = (
    'Traceback caught\nTraceback (most recent call last):\n  File "train.py", line 44\nZeroDivisionError: boom\n'
)


def test_a_multi_line_record_gets_one_row_per_line(page: Any, server: Server) -> None:
    """A record holding a traceback shows one fixed-height row per line (none overlapping), counted as one line."""
    run = f"multi-{uuid.uuid4().hex[:8]}"
    emit(server, run, "logs", [{"line": TRACEBACK, "level": "ERROR"}, {"line": "after it", "level": "INFO"}])
    page.goto(f"{server.url}/runs/{run}/logs")
    expect(page.locator(".logview .text")).to_have_text(
        [
            "Traceback caught",
            "Traceback (most recent call last):",
            '  File "train.py", line 44',
            "ZeroDivisionError: boom",
            "after it",
        ],
        timeout=scaled(20) * 1000,
    )
    boxes = [row.bounding_box() for row in page.locator(".logview .line").all()]
    assert all(b["y"] + b["height"] <= after["y"] + 0.5 for b, after in zip(boxes, boxes[1:], strict=False))
    assert page.locator(".logview .line.continued .ts").all_inner_texts() == ["", "", ""]
    expect(page.locator(".bar .status")).to_contain_text("2 lines")


def test_scrolling_to_the_end_of_a_search_loads_its_next_pages(page: Any, server: Server) -> None:
    """A whole-run search of 1200 lines shows 500, and scrolling to the bottom fetches the rest in order."""
    run = f"page-{uuid.uuid4().hex[:8]}"
    for start in range(0, 1200, 300):
        emit(server, run, "logs", [{"line": f"paged {i:04d}", "level": "INFO"} for i in range(start, start + 300)])
    wait_until(
        lambda: (api(server, f"/api/runs/{run}/logs/histogram") or {}).get("total") == 1200, "the lines to be stored"
    )
    page.goto(f"{server.url}/runs/{run}/logs?since=0")
    expect(page.locator(".bar .status")).to_have_text("500 lines, more available", timeout=scaled(20) * 1000)
    for shown in ("1000 lines, more available", "1200 lines"):
        page.locator(".logview").evaluate("el => { el.scrollTop = el.scrollHeight; }")
        expect(page.locator(".bar .status")).to_have_text(shown, timeout=scaled(10) * 1000)
    page.locator(".logview").evaluate("el => { el.scrollTop = el.scrollHeight; }")
    expect(page.locator(".logview .text").last).to_have_text("paged 1199", timeout=scaled(5) * 1000)
    texts = page.locator(".logview .text").all_inner_texts()
    numbers = [int(t.split()[1]) for t in texts]
    assert numbers == list(range(numbers[0], 1200))


def test_a_tail_that_falls_behind_says_so_and_misses_no_line(page: Any, server: Server) -> None:
    """800 lines at once overflow the tab's feed queue (500): the tail resumes from its cursor and says so."""
    run = f"behind-{uuid.uuid4().hex[:8]}"
    emit(server, run, "logs", [{"line": "first", "level": "INFO"}])
    open_run(page, server, run)
    page.wait_for_selector(".logview .text:text('first')", timeout=scaled(20) * 1000)
    emit(server, run, "logs", [{"line": f"burst {i:03d}", "level": "INFO"} for i in range(800)])
    expect(page.locator(".bar .status")).to_contain_text("801 lines · live", timeout=scaled(20) * 1000)
    expect(page.locator(".bar .status")).to_contain_text("fell behind")
    expect(page.locator(".logview .text").last).to_have_text("burst 799")
