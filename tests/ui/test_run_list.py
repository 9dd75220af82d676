"""The run list keeps up with the runs in a real browser: prompt refreshes that keep what the user chose.

Real server (``python -m ui.serve``: sink, API, live feed) over the real broker and chDB. The feed has
no stream across runs, so the list re-reads ``/api/runs``: every few seconds while a listed run is
running, less often otherwise, and at once when its tab is shown again.
"""

from __future__ import annotations

import uuid
from typing import Any

from tests.conftest import scaled
from tests.ui.browser import needs_chromium, sync_api
from tests.ui.conftest import Server
from tests.ui.test_live_page import api, emit, wait_until

expect = sync_api.expect

pytestmark = needs_chromium

#: The list's refresh while a run is running (runlist.js RUNNING_REFRESH_MS), with room for storage.
RUNNING_REFRESH_S = 3


def start(server: Server, run: str, project: str, config: dict[str, Any] | None = None) -> None:
    emit(server, run, "runs", [{"event": "start", "project": project, "name": run, "config": config or {}}])


def listed(server: Server, project: str, count: int) -> None:
    """Wait until the API lists ``count`` runs of ``project``."""
    wait_until(lambda: len((api(server, f"/api/runs?project={project}") or {"runs": []})["runs"]) == count, "the runs")


def set_hidden(page: Any, hidden: bool) -> None:
    """Make the tab hidden or shown again, as switching tabs does (with its visibilitychange event)."""
    page.evaluate(
        """hidden => {
            Object.defineProperty(document, "hidden", { configurable: true, get: () => hidden });
            document.dispatchEvent(new Event("visibilitychange"));
        }""",
        hidden,
    )


def test_a_refresh_keeps_rows_ticks_and_sort(page: Any, server: Server) -> None:
    """A refresh keeps the unchanged rows' elements, their ticked boxes and the chosen sort; only changes redraw."""
    project = f"keep-{uuid.uuid4().hex[:8]}"
    for name in ("b-run", "a-run", "c-run"):
        start(server, f"{project}-{name}", project, {"lr": 0.1})
    listed(server, project, 3)
    page.goto(f"{server.url}/?project={project}")
    expect(page.locator("table.runs tbody tr")).to_have_count(3, timeout=scaled(10) * 1000)
    page.click("th[data-sort='name']")
    page.check(f"tr[data-run='{project}-b-run'] input.pick")
    page.evaluate("() => document.querySelectorAll('tr[data-run], td').forEach((el) => { el.kept = true; })")
    note = page.locator(".bar > .muted")
    before = note.inner_text()
    emit(server, f"{project}-c-run", "runs", [{"event": "finish", "status": "failed", "exit_code": 1}])
    wait_until(
        lambda: {r["status"] for r in api(server, f"/api/runs?project={project}")["runs"]} == {"running", "failed"},
        "the finish",
    )
    set_hidden(page, False)  # as when the tab is shown again: read now
    expect(note).not_to_have_text(before, timeout=scaled(10) * 1000)
    rows = page.locator("table.runs tbody tr")
    expect(rows.nth(2).locator(".badge")).to_have_text("failed")
    assert [rows.nth(i).get_attribute("data-run") for i in range(3)] == [
        f"{project}-{n}" for n in ("a-run", "b-run", "c-run")
    ]
    assert page.evaluate("() => [...document.querySelectorAll('tr[data-run]')].every((tr) => tr.kept)")
    # Every cell but the changed status (and durations, which grow while runs run) is the same element.
    assert page.evaluate("""() => [...document.querySelectorAll('tbody td')]
        .filter((td) => !td.kept).every((td) => td.querySelector('.badge') || td.classList.contains('num'))""")
    assert page.is_checked(f"tr[data-run='{project}-b-run'] input.pick")
    expect(page.locator("th[data-sort='name']")).to_have_text("name ▴")


def test_a_status_change_shows_within_seconds_while_a_run_runs(page: Any, server: Server) -> None:
    """While a listed run is running, its finish shows in the list within a few seconds, without a reload."""
    project = f"prompt-{uuid.uuid4().hex[:8]}"
    run = f"{project}-run"
    start(server, run, project)
    listed(server, project, 1)
    page.goto(f"{server.url}/?project={project}")
    badge = page.locator(f"tr[data-run='{run}'] .badge")
    expect(badge).to_have_text("running", timeout=scaled(10) * 1000)
    emit(server, run, "runs", [{"event": "finish", "status": "finished", "exit_code": 0}])
    expect(badge).to_have_text("finished", timeout=scaled(RUNNING_REFRESH_S + 5) * 1000)


def test_showing_the_tab_again_lists_a_new_run_at_once(page: Any, server: Server) -> None:
    """A hidden tab reads nothing; shown again, it lists a run started meanwhile at once."""
    project = f"shown-{uuid.uuid4().hex[:8]}"
    first = f"{project}-first"
    start(server, first, project)
    emit(server, first, "runs", [{"event": "finish", "status": "finished", "exit_code": 0}])
    wait_until(
        lambda: [r["status"] for r in api(server, f"/api/runs?project={project}")["runs"]] == ["finished"], "the finish"
    )
    page.goto(f"{server.url}/?project={project}")
    expect(page.locator("table.runs tbody tr")).to_have_count(1, timeout=scaled(10) * 1000)
    set_hidden(page, True)
    start(server, f"{project}-second", project)
    listed(server, project, 2)
    expect(page.locator("table.runs tbody tr")).to_have_count(1)
    set_hidden(page, False)
    expect(page.locator("table.runs tbody tr")).to_have_count(2, timeout=scaled(2) * 1000)
