"""The live page in a real browser (Chromium via Playwright) against the real server, broker and chDB."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest

from tests.conftest import scaled
from tests.ui.browser import needs_chromium, sync_api
from tests.ui.conftest import TOKEN, XSS_LINE, XSS_NAME, Server, run_async
from tests.ui.feedclient import Emitter

expect = sync_api.expect

pytestmark = needs_chromium


def emit(server: Server, run: str, kind: str, records: list[dict[str, Any]], topic: str | None = None) -> None:
    async def go() -> None:
        async with Emitter(server, run) as e:
            await e.send(kind, records, topic=topic)

    run_async(go())  # Playwright's sync API keeps an event loop running in this thread


def api(server: Server, path: str) -> Any:
    """GET an API path with the token; ``None`` for a 404 (nothing of the run stored yet)."""
    request = urllib.request.Request(f"{server.url}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=scaled(10)) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def wait_until(check: Any, what: str, timeout_s: float = 20) -> None:
    """Poll ``check()`` until it is true; fail after ``timeout_s`` (scaled)."""
    deadline = time.monotonic() + scaled(timeout_s)
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def open_run(page: Any, server: Server, run: str) -> None:
    page.goto(f"{server.url}/runs/{run}")
    page.wait_for_selector(".bar .status:text('live')", timeout=scaled(20) * 1000)


def test_line_printed_after_opening_appears_in_the_tail(page: Any, server: Server) -> None:
    """A log line emitted after the run page opened shows up in the live tail."""
    run = f"live-{uuid.uuid4().hex[:8]}"
    emit(server, run, "logs", [{"line": "before opening", "level": "INFO"}])
    open_run(page, server, run)
    page.wait_for_selector(".logview .text:text('before opening')", timeout=scaled(20) * 1000)
    emit(server, run, "logs", [{"line": "printed \x1b[32mafter\x1b[0m opening", "level": "INFO"}])
    expect(page.locator(".logview .text", has_text="printed after opening")).to_have_count(1, timeout=scaled(5) * 1000)
    assert page.locator(".logview .text .ansi-fg-2").all_inner_texts() == ["after"]


def test_metric_point_appears_in_the_chart(page: Any, server: Server) -> None:
    """A metric point logged after the page opened is drawn: its chart appears and counts it."""
    run = f"live-{uuid.uuid4().hex[:8]}"
    emit(server, run, "logs", [{"line": "started", "level": "INFO"}])
    open_run(page, server, run)
    emit(server, run, "metrics", [{"step": 3, "values": {"loss": 0.75}}])
    page.wait_for_selector("figure.card[data-metric='loss']", timeout=scaled(10) * 1000)
    expect(page.locator("figure.card[data-metric='loss'] figcaption")).to_contain_text(
        re.compile(r"last 0\.75 · 1 point(?!s)"), timeout=scaled(10) * 1000
    )


def test_search_finds_exactly_the_matching_lines_with_hits_marked(page: Any, server: Server) -> None:
    """A deep-linked search lists exactly the lines containing the phrase and marks each hit."""
    run = f"live-{uuid.uuid4().hex[:8]}"
    lines = ["CUDA out of memory on rank 3", "epoch 1 done", "retrying: cuda OUT OF MEMORY", "out of time"]
    emit(server, run, "logs", [{"line": line, "level": "ERROR"} for line in lines])
    wait_until(
        lambda: len((api(server, f"/api/runs/{run}/logs") or {"lines": []})["lines"]) == 4, "the lines to be stored"
    )
    page.goto(f"{server.url}/runs/{run}/logs?q=out+of+memory")
    page.wait_for_selector(".logview .line")
    assert page.locator(".logview .text").all_inner_texts() == [lines[0], lines[2]]
    assert page.locator(".logview mark").all_inner_texts() == ["out of memory", "OUT OF MEMORY"]


def test_markup_in_lines_names_and_config_renders_as_text(page: Any, server: Server) -> None:
    """HTML in a run's name, config and log lines (stored and live) is shown literally, creating no element."""
    run = f"xss-{uuid.uuid4().hex[:8]}"
    emit(
        server,
        run,
        "runs",
        [{"event": "start", "project": "xss", "name": XSS_NAME, "config": {XSS_NAME: XSS_LINE}, "world_size": 1}],
    )
    emit(server, run, "logs", [{"line": XSS_LINE, "level": "INFO"}])
    wait_until(lambda: api(server, "/api/runs?project=xss")["runs"], "the run to be stored")
    open_run(page, server, run)
    page.wait_for_selector(".logview .line")
    emit(server, run, "logs", [{"line": XSS_NAME, "level": "INFO"}])
    expect(page.locator(".logview .line")).to_have_count(2, timeout=scaled(5) * 1000)
    assert page.locator(".logview .text").all_inner_texts() == [XSS_LINE, XSS_NAME]
    assert page.locator("h1").inner_text().endswith(XSS_NAME)
    assert XSS_LINE in page.locator(".panel table.kv").first.inner_text()
    assert page.locator("main script, main img, main b").count() == 0


def test_tail_adds_rows_for_new_lines_and_keeps_the_ones_shown(page: Any, server: Server) -> None:
    """A live line adds its row without re-creating the rows already shown (the same elements stay)."""
    run = f"tail-{uuid.uuid4().hex[:8]}"
    emit(server, run, "logs", [{"line": "tail 0", "level": "INFO"}])
    open_run(page, server, run)
    page.wait_for_selector(".logview .text:text('tail 0')", timeout=scaled(20) * 1000)
    page.evaluate("document.querySelector('.logview .line').dataset.probe = 'kept'")
    emit(server, run, "logs", [{"line": "tail 1", "level": "INFO"}])
    expect(page.locator(".logview .text")).to_have_text(["tail 0", "tail 1"], timeout=scaled(5) * 1000)
    assert page.locator(".logview .line[data-probe='kept'] .text").all_inner_texts() == ["tail 0"]


def test_tail_past_the_rows_on_screen_shows_the_newest_lines_in_order(page: Any, server: Server) -> None:
    """Many more live lines than fit: the rows are contiguous and end with the newest; scrolling up shows the first."""
    run = f"tail-{uuid.uuid4().hex[:8]}"
    total = 400
    emit(server, run, "logs", [{"line": "tail 0", "level": "INFO"}])
    open_run(page, server, run)
    page.wait_for_selector(".logview .text:text('tail 0')", timeout=scaled(20) * 1000)
    for start in range(1, total, 50):
        batch = range(start, min(start + 50, total))
        emit(server, run, "logs", [{"line": f"tail {i}", "level": "INFO"} for i in batch])
    expect(page.locator(".logview .line").last).to_contain_text(f"tail {total - 1}", timeout=scaled(10) * 1000)
    shown = [int(t.split()[1]) for t in page.locator(".logview .text").all_inner_texts()]
    assert shown == list(range(shown[0], total)) and shown[0] > 0, shown[:5]
    page.locator(".logview").evaluate("el => { el.scrollTop = 0; }")
    expect(page.locator(".logview .text").first).to_have_text("tail 0", timeout=scaled(5) * 1000)
    shown = [int(t.split()[1]) for t in page.locator(".logview .text").all_inner_texts()]
    assert shown == list(range(0, len(shown))) and len(shown) < total, shown[-5:]


def test_live_points_past_the_chart_width_are_thinned_keeping_spikes(page: Any, server: Server) -> None:
    """The page's thinning of live points keeps each bucket's extremes, its first NaN and the newest point."""
    page.goto(f"{server.url}/")
    kept = page.evaluate("""async () => {
        const { thin } = await import("/static/charts.js");
        const points = [];
        for (let s = 0; s < 10000; s++) points.push([s, s === 4321 ? 99 : s === 777 ? "NaN" : 1 / (1 + s)]);
        return thin(points, 100);
    }""")
    assert len(kept) <= 3 * 100 + 1
    assert [4321, 99] in kept and [777, "NaN"] in kept and kept[-1] == [9999, 1 / 10000]
    assert [p[0] for p in kept] == sorted({p[0] for p in kept})


def test_logs_tab_is_the_log_panel_alone(page: Any, server: Server) -> None:
    """/runs/{id}/logs shows the live tail under the tabs, with "logs" active and no charts or overview."""
    run = f"tab-{uuid.uuid4().hex[:8]}"
    emit(server, run, "logs", [{"line": "on the logs tab", "level": "INFO"}])
    page.goto(f"{server.url}/runs/{run}/logs")
    page.wait_for_selector(".logview .text:text('on the logs tab')", timeout=scaled(20) * 1000)
    assert page.locator("nav.tabs a.active").inner_text() == "logs"
    assert page.locator("section.metrics, section.overview").count() == 0


def test_the_overview_shows_the_run_ending_without_a_reload(page: Any, server: Server) -> None:
    """A run that fails while its page is open turns "failed" there, with its exit code and reason."""
    run = f"ends-{uuid.uuid4().hex[:8]}"
    emit(server, run, "runs", [{"event": "start", "project": "live", "name": "ends", "world_size": 1}])
    wait_until(lambda: api(server, f"/api/runs/{run}") is not None, "the run to be stored")
    open_run(page, server, run)
    expect(page.locator("h1 .badge")).to_have_text("running", timeout=scaled(10) * 1000)
    emit(server, run, "runs", [{"event": "finish", "status": "failed", "exit_code": 3, "reason": "RuntimeError: boom"}])
    expect(page.locator("h1 .badge")).to_have_text("failed", timeout=scaled(10) * 1000)
    expect(page.locator("dl.facts dd.bad")).to_have_text("3 (RuntimeError: boom)")


def test_a_new_alert_appears_in_the_overview_without_a_reload(page: Any, server: Server) -> None:
    """An alert raised while the run page is open is listed in its overview."""
    run = f"alerted-{uuid.uuid4().hex[:8]}"
    emit(server, run, "runs", [{"event": "start", "project": "live", "name": "alerted", "world_size": 1}])
    wait_until(lambda: api(server, f"/api/runs/{run}") is not None, "the run to be stored")
    open_run(page, server, run)
    expect(page.locator(".panel.alerts h3")).to_have_text("alerts (0)", timeout=scaled(10) * 1000)
    alert = {"key": f"{run}:nan", "kind": "nan_loss", "severity": "error", "message": "loss is NaN at step 7"}
    emit(server, run, "alerts", [alert], topic=server.topics.alerts)
    expect(page.locator(".alert-list .message")).to_have_text(["loss is NaN at step 7"], timeout=scaled(10) * 1000)
