"""Chart interactions in a real browser: click a point to open its logs, drag to zoom, time axis.

One run with 3,000 loss points one second apart (so the chart is downsampled)
and 300 log lines ten seconds apart, emitted through the real broker and
stored by the real sink; Chromium drives the run page.
"""

from __future__ import annotations

import re
import time
import urllib.parse
import uuid
from datetime import datetime
from typing import Any

import pytest

from tests.conftest import scaled
from tests.ui.browser import needs_chromium, sync_api
from tests.ui.conftest import Server
from tests.ui.test_live_page import api, emit, open_run, wait_until

expect = sync_api.expect

pytestmark = needs_chromium

STEPS = 3000
LINES = 300
S = 1_000_000_000


@pytest.fixture(scope="module")
def stored_run(server: Server) -> tuple[str, int]:
    """A run's id and its start (ns): loss at step i logged at t0 + i s; line i at t0 + 10 i s + 2.5 s.

    Lines sit half-way between whole seconds, so no line falls on the edge of a
    window computed from a point's time (whole seconds).
    """
    run = f"chart-{uuid.uuid4().hex[:8]}"
    t0 = (time.time_ns() // S - 2 * 3600) * S
    emit(server, run, "runs", [{"event": "start", "project": "charts", "name": "chart-run", "ts_ns": t0}])
    emit(
        server,
        run,
        "metrics",
        [
            {"step": i, "values": {"loss": 1.0 / (1 + i) + (0.5 if i == 1234 else 0.0)}, "ts_ns": t0 + i * S}
            for i in range(STEPS)
        ],
    )
    emit(
        server,
        run,
        "logs",
        [{"line": f"chartlog {i}", "level": "INFO", "ts_ns": t0 + i * 10 * S + S // 2 * 5} for i in range(LINES)],
    )
    wait_until(
        lambda: (api(server, f"/api/runs/{run}/metrics?name=loss&points=10") or {}).get("total") == STEPS,
        "the metric points to be stored",
    )
    wait_until(
        lambda: len((api(server, f"/api/runs/{run}/logs?limit=1000") or {}).get("lines", [])) == LINES,
        "the log lines to be stored",
    )
    return run, t0


def loss_chart(page: Any, server: Server, run: str) -> tuple[Any, dict[str, float]]:
    """Open the run page; the loss card (drawn, downsampled) and its plot area's box."""
    open_run(page, server, run)
    card = page.locator("figure.card[data-metric='loss']")
    expect(card.locator("figcaption")).to_contain_text(f"{STEPS} points (showing", timeout=scaled(20) * 1000)
    over = card.locator(".u-over")
    over.scroll_into_view_if_needed()
    box = over.bounding_box()
    assert box is not None and box["width"] > 100
    return card, box


def _ns(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000) * 1_000_000


def test_clicking_a_point_opens_exactly_the_lines_around_its_time(
    page: Any, server: Server, stored_run: tuple[str, int]
) -> None:
    """A click on the chart opens /runs/{id}/logs with a ±30 s window, showing every line in it and no other."""
    run, t0 = stored_run
    _, box = loss_chart(page, server, run)
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_url(re.compile(rf"/runs/{run}/logs\?since=.+&until=.+"), timeout=scaled(10) * 1000)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(page.url).query)
    since, until = _ns(query["since"][0]), _ns(query["until"][0])
    assert until - since == 60 * S
    clicked_step = (since + 30 * S - t0) / S  # the point's time maps back to its step (1 s per step)
    assert STEPS * 0.3 < clicked_step < STEPS * 0.7, clicked_step
    expected = [f"chartlog {i}" for i in range(LINES) if since <= t0 + i * 10 * S + S // 2 * 5 <= until]
    assert 5 <= len(expected) <= 7
    lines = page.locator(".logview .text")
    expect(lines).to_have_count(len(expected), timeout=scaled(10) * 1000)
    assert lines.all_inner_texts() == expected


def test_dragging_zooms_to_every_point_of_the_range(page: Any, server: Server, stored_run: tuple[str, int]) -> None:
    """A drag over a tenth of a downsampled chart re-queries that step range at full resolution."""
    run, _ = stored_run
    card, box = loss_chart(page, server, run)
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.45, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.50, y, steps=5)
    page.mouse.move(box["x"] + box["width"] * 0.55, y, steps=5)
    page.mouse.up()
    caption = card.locator("figcaption")
    expect(caption).to_contain_text(re.compile(r"steps \d+–\d+: \d+ points"), timeout=scaled(10) * 1000)
    found = re.search(r"steps (\d+)–(\d+): (\d+) points", caption.inner_text())
    assert found is not None
    lo, hi, shown = (int(x) for x in found.groups())
    assert STEPS * 0.35 < lo < hi < STEPS * 0.65
    assert shown == hi - lo + 1  # every step of the range, none downsampled away
    note = card.locator(".zoom-note")
    assert note.evaluate("el => el.scrollWidth <= el.clientWidth"), "the zoom note is cut off"
    readout = card.locator(".readout")
    page.mouse.move(box["x"] + box["width"] / 2 + 1, y)
    page.mouse.move(box["x"] + box["width"] / 2, y)
    expect(readout).to_contain_text("step ")
    hovered = int(re.search(r"step (\d+)", readout.inner_text()).group(1))  # type: ignore[union-attr]
    assert lo <= hovered <= hi  # the readout follows the zoomed data, not what was drawn before
    card.locator(".reset-zoom").click()
    expect(caption).not_to_contain_text("steps ")


def test_time_axis_reads_out_wall_clock_time(page: Any, server: Server, stored_run: tuple[str, int]) -> None:
    """With x: time, hovering a point reads out its step and its wall-clock date and time (24-hour, as on the axes)."""
    run, t0 = stored_run
    card, box = loss_chart(page, server, run)
    page.locator("select.x-axis").select_option("time")
    readout = card.locator(".readout")
    pattern = re.compile(r"step (\d+) \((.+)\): ")

    def hovered() -> bool:
        page.mouse.move(box["x"] + box["width"] / 2 + 1, box["y"] + box["height"] / 2)
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        return bool(pattern.search(readout.inner_text()))

    wait_until(hovered, "the time readout")
    found = pattern.search(readout.inner_text())
    assert found is not None
    step, shown = int(found.group(1)), found.group(2)
    # The page's one date-time format (24-hour, year first), in the browser's time zone.
    expected = page.evaluate(
        """(ms) => {
            const d = new Date(ms), p = (n) => String(n).padStart(2, "0");
            return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} `
                + `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
        }""",
        (t0 + step * S) // 1_000_000,
    )
    assert shown == expected


def test_log_scale_draws_the_chart_without_script_errors(
    page: Any, server: Server, stored_run: tuple[str, int]
) -> None:
    """Switching to log scale (losses spanning four decades) redraws the chart and raises no error in the page."""
    run, _ = stored_run
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    card, box = loss_chart(page, server, run)
    page.locator("#logscale").check()
    readout = card.locator(".readout")

    def hovered() -> bool:
        page.mouse.move(box["x"] + box["width"] / 2 + 1, box["y"] + box["height"] / 2)
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        return readout.inner_text().startswith("step ")

    wait_until(hovered, "the log-scale chart's readout")
    assert errors == []
