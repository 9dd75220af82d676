"""The page says so when the feed cannot vouch for lines between history and live (a real browser).

A server with no sink of its own (``--no-sink``, as in a distributed
deployment whose sinks are stopped) and a two-message window: lines the
window let go are stored nowhere yet, so the tail's hand-off ends its
history with a ``gap`` frame, and the page must show a note with a reload,
never a silent hole.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import scaled
from tests.ui.browser import needs_chromium, sync_api
from tests.ui.conftest import Server, start_server, stop_server
from tests.ui.test_live_page import api, emit, wait_until

expect = sync_api.expect

pytestmark = needs_chromium

LINES = 10


@pytest.fixture(scope="module")
def server(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server without a sink (nothing gets stored) whose live window keeps two messages per run and stream."""
    running = start_server(
        broker,
        tmp_path_factory.mktemp("gap"),
        "--no-sink",
        "--sink-group-id",
        f"no-sink-{uuid.uuid4().hex[:8]}",
        "--feed-recent-messages",
        "2",
    )
    try:
        yield running
    finally:
        stop_server(running)


def test_a_tail_whose_history_the_store_cannot_complete_shows_a_gap_note_with_reload(page: Any, server: Server) -> None:
    """Lines let go by the window and never stored: the tail shows what it has, a gap note, and stays live."""
    run = f"gap-{uuid.uuid4().hex[:8]}"
    read_before = api(server, "/api/health")["live"]["messages"]
    for n in range(LINES):
        emit(server, run, "logs", [{"line": f"line {n}", "level": "INFO"}])
    wait_until(lambda: api(server, "/api/health")["live"]["messages"] >= read_before + LINES, "the feed to read them")
    page.goto(f"{server.url}/runs/{run}/logs")
    note = page.locator(".gap-note", has_text="lines between history and live")
    # The hand-off waits for the sink's offsets for 5 s without progress before it says so.
    expect(note).to_be_visible(timeout=scaled(30) * 1000)
    expect(note).to_contain_text("may be missing")
    assert api(server, "/api/health")["feed"]["gaps"] >= 1
    assert page.locator(".logview .text").all_inner_texts() == [f"line {n}" for n in range(LINES - 2, LINES)]
    emit(server, run, "logs", [{"line": "after the gap", "level": "INFO"}])
    expect(page.locator(".logview .text", has_text="after the gap")).to_have_count(1, timeout=scaled(5) * 1000)
    note.locator("button", has_text="reload").click()
    expect(note).to_be_hidden(timeout=scaled(5) * 1000)
    expect(note).to_be_visible(timeout=scaled(30) * 1000)  # still nothing stored: the fresh tail says so again
    assert page.locator(".logview .text").all_inner_texts() == ["line 9", "after the gap"]
