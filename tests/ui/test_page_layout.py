"""What the run list and the run page look like with awkward real data, in a real browser.

Long config keys, unbroken alert text, wide axis labels, a config key that is also a metric name,
and a tab the feed had to coalesce. Real server (``python -m ui.serve``, a feed queue bound of 500
records) over the real broker and chDB.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from tests.conftest import scaled
from tests.ui.browser import needs_chromium, sync_api
from tests.ui.conftest import Server
from tests.ui.test_live_page import api, emit, open_run, wait_until
from tests.ui.test_views import emit_to, stored

expect = sync_api.expect

pytestmark = needs_chromium

#: uPlot's default axis font, tick length and gap (uplot/dist/uPlot.esm.js): what its labels are drawn with.
UPLOT_FONT = (
    '12px system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "Noto Sans", sans-serif, '
    '"Apple Color Emoji", "Segoe UI Emoji", "Segoe UI Symbol", "Noto Color Emoji"'
)
UPLOT_TICK_PX, UPLOT_GAP_PX = 10, 5


def start(server: Server, run: str, project: str, config: dict[str, Any]) -> None:
    emit(server, run, "runs", [{"event": "start", "project": project, "name": run, "config": config, "world_size": 1}])


def test_a_long_config_key_leaves_its_value_readable(page: Any, server: Server) -> None:
    """A 60-character config key wraps in its own column: its value keeps its width instead of one character a line."""
    run = f"cfg-{uuid.uuid4().hex[:8]}"
    start(server, run, "layout", {"k" * 60: "value-of-the-long-key", "lr": 0.1})
    stored(server, "/api/runs?project=layout", "runs")
    open_run(page, server, run)
    config = page.locator(".panel", has=page.locator("h3", has_text="config"))
    value = config.locator("td", has_text="value-of-the-long-key")
    lines = value.evaluate(
        "td => { const r = document.createRange(); r.selectNodeContents(td); return r.getClientRects().length; }"
    )
    assert lines <= 2


def test_an_unbroken_alert_message_wraps_inside_its_panel(page: Any, server: Server) -> None:
    """An alert whose message is one 300-character word wraps within the alerts panel instead of running past it."""
    run = f"alert-{uuid.uuid4().hex[:8]}"
    start(server, run, "layout", {})
    word = "PYTORCH_CUDA_ALLOC_CONF=" + "x" * 276
    emit_to(
        server,
        run,
        "alerts",
        [{"key": f"{run}:oom", "kind": "oom", "severity": "error", "message": word}],
        server.topics.alerts,
    )
    stored(server, f"/api/runs/{run}/alerts", "alerts")
    open_run(page, server, run)
    item = page.locator(".alert-list li").first
    expect(item.locator(".message")).to_have_text(word, timeout=scaled(10) * 1000)
    assert item.evaluate("li => li.scrollWidth <= li.clientWidth")


def test_the_y_axis_is_as_wide_as_its_labels(page: Any, server: Server) -> None:
    """A chart of values near -1.5e6 leaves its y axis room for labels like "-1.5e+6", ticks and gap included."""
    run = f"axis-{uuid.uuid4().hex[:8]}"
    emit(server, run, "metrics", [{"step": s, "values": {"offset": -1.5e6 + s * 1e4}} for s in range(50)])
    stored(server, f"/api/runs/{run}/metrics?name=offset", "points")
    open_run(page, server, run)
    over = page.locator("figure.card[data-metric='offset'] .u-over")
    expect(over).to_have_count(1, timeout=scaled(10) * 1000)
    label_px = page.evaluate(
        "([font, text]) => { const c = document.createElement('canvas').getContext('2d');"
        " c.font = font; return c.measureText(text).width; }",
        [UPLOT_FONT, "-1.5e+6"],
    )
    assert over.evaluate("el => el.offsetLeft") >= label_px + UPLOT_TICK_PX + UPLOT_GAP_PX


def test_the_run_list_says_which_columns_are_config_and_which_metrics(page: Any, server: Server) -> None:
    """A key that is both a config value and a metric (lr) sits under a "config" and a "metrics" group heading."""
    project = f"groups-{uuid.uuid4().hex[:8]}"
    run = f"{project}-run"
    start(server, run, project, {"lr": 0.1, "batch": 64})
    emit(server, run, "metrics", [{"step": 0, "values": {"lr": 0.1, "loss": 1.0}}])
    stored(server, f"/api/runs?project={project}", "runs")
    stored(server, f"/api/runs/{run}/metrics?name=lr", "points")
    page.goto(f"{server.url}/?project={project}")
    page.wait_for_selector("table.runs tbody tr")
    groups = page.locator("table.runs tr.groups th.group")
    expect(groups).to_have_text(["config", "metrics: last, min – max"])
    assert [groups.nth(i).get_attribute("colspan") for i in range(2)] == ["2", "2"]


def test_points_the_feed_coalesced_are_re_read_and_the_page_says_so(page: Any, server: Server) -> None:
    """800 points at once overflow the tab's feed queue (500): a note says so and the chart re-reads them all."""
    run = f"coalesce-{uuid.uuid4().hex[:8]}"
    emit(server, run, "metrics", [{"step": 0, "values": {"loss": 1.0}}])
    stored(server, f"/api/runs/{run}/metrics?name=loss", "points")
    open_run(page, server, run)
    caption = page.locator("figure.card[data-metric='loss'] figcaption")
    expect(caption).to_contain_text(re.compile(r"\b1 point(?!s)"), timeout=scaled(10) * 1000)
    emit(server, run, "metrics", [{"step": s, "values": {"loss": 1.0 / (1 + s)}} for s in range(1, 801)])
    expect(page.locator(".coalesced-note")).to_contain_text("live points skipped", timeout=scaled(10) * 1000)
    expect(caption).to_contain_text("801 points", timeout=scaled(20) * 1000)
    assert api(server, f"/api/runs/{run}/metrics?name=loss&points=10000")["points"][-1][0] == 800


def test_axis_labels_gain_decimals_until_no_two_ticks_read_the_same(page: Any, server: Server) -> None:
    """Byte ticks 20 MiB apart around 1.3 GiB are labelled with enough decimals to tell them apart."""
    page.goto(f"{server.url}/")
    labels = page.evaluate("""async () => {
        const { distinctLabels } = await import("/static/plot.js");
        const { fmtBytes } = await import("/static/dom.js");
        const ticks = [0, 1, 2, 3].map((k) => 1.3 * 2 ** 30 + k * 20 * 2 ** 20);
        return distinctLabels([null, ...ticks], fmtBytes);
    }""")
    assert labels == ["", "1.30 GiB", "1.32 GiB", "1.34 GiB", "1.36 GiB"]


def test_a_lone_sample_gets_a_minute_wide_time_axis(page: Any, server: Server) -> None:
    """A time axis holding one sample spans 30 s either side of it (uPlot's default spanned years); two keep theirs."""
    page.goto(f"{server.url}/")
    ranges = page.evaluate("""async () => {
        const { xRange } = await import("/static/plot.js");
        const shown = (xs) => ({ data: [xs] });
        return [xRange(true)(shown([1000]), 1000, 1000 + 86400000), xRange(true)(shown([1000, 1060]), 1000, 1060),
            xRange(false)(shown([5, 5]), 5, 5)];
    }""")
    assert ranges == [[970, 1030], [1000, 1060], [4, 6]]


def test_many_alerts_scroll_inside_their_panel(page: Any, server: Server) -> None:
    """Sixty alerts are listed in a scrolling alerts panel that stays shorter than the window."""
    run = f"alerts-{uuid.uuid4().hex[:8]}"
    start(server, run, "layout", {})
    alerts = [
        {"key": f"{run}:spike:{i}", "kind": "loss_spike", "severity": "warning", "message": f"loss jumped at step {i}"}
        for i in range(60)
    ]
    emit_to(server, run, "alerts", alerts, server.topics.alerts)
    stored(server, f"/api/runs/{run}/alerts", "alerts")
    open_run(page, server, run)
    expect(page.locator(".panel.alerts h3")).to_have_text("alerts (60)", timeout=scaled(10) * 1000)
    listed = page.locator(".panel.alerts .alert-list")
    assert listed.evaluate("el => el.scrollHeight > el.clientHeight")
    assert page.locator(".panel.alerts").bounding_box()["height"] < page.viewport_size["height"]


def test_counts_of_one_read_in_the_singular(page: Any, server: Server) -> None:
    """One point, one line, one match and one run are counted as "1 point", "1 line", "1 matching line", "1 run"."""
    project = f"one-{uuid.uuid4().hex[:8]}"
    run = f"{project}-run"
    start(server, run, project, {})
    emit(server, run, "metrics", [{"step": 0, "values": {"loss": 1.0}}])
    emit(server, run, "logs", [{"line": "the only line", "level": "INFO"}])
    stored(server, f"/api/runs/{run}/metrics?name=loss", "points")
    stored(server, f"/api/runs/{run}/logs", "lines")
    open_run(page, server, run)
    singular = scaled(10) * 1000
    expect(page.locator("figure.card[data-metric='loss'] figcaption")).to_contain_text(
        re.compile(r"· 1 point(?!s)"), timeout=singular
    )
    expect(page.locator(".bar .status")).to_have_text("1 line · live", timeout=singular)
    expect(page.locator(".hist-note")).to_contain_text(re.compile(r"^1 matching line(?!s)"), timeout=singular)
    page.goto(f"{server.url}/?project={project}")
    expect(page.locator(".bar > .muted")).to_contain_text(re.compile(r"^1 run ·"), timeout=singular)


def edge_ink(canvas: Any) -> dict[str, bool]:
    """Whether anything is drawn in the two pixel columns at each side of a chart's canvas, and anywhere at all."""
    return canvas.evaluate("""c => {
        const ctx = c.getContext("2d"), cols = Math.ceil(2 * (window.devicePixelRatio || 1));
        const inked = (x, w) => ctx.getImageData(x, 0, w, c.height).data.some((v, i) => i % 4 === 3 && v > 0);
        return { left: inked(0, cols), right: inked(c.width - cols, cols), any: inked(0, c.width) };
    }""")


def test_a_time_axis_draws_its_first_date_label_whole(page: Any, server: Server) -> None:
    """On the time axis, the date under a first tick at the plot's left edge is drawn inside the canvas, not cut off."""
    run = f"timeaxis-{uuid.uuid4().hex[:8]}"
    minute = (time.time_ns() // 60_000_000_000 - 1) * 60_000_000_000  # a whole minute: a tick at the first point
    emit(server, run, "metrics", [{"step": s, "ts_ns": minute + s * 10**9, "values": {"acc": s / 8}} for s in range(9)])
    stored(server, f"/api/runs/{run}/metrics?name=acc", "points")
    open_run(page, server, run)
    by_step = page.locator("figure.card[data-metric='acc'] canvas")
    expect(by_step).to_have_count(1, timeout=scaled(10) * 1000)
    by_step.evaluate("c => { c.dataset.byStep = '1'; }")
    page.select_option("select.x-axis", "time")
    canvas = page.locator("figure.card[data-metric='acc'] canvas:not([data-by-step])")
    expect(canvas).to_have_count(1, timeout=scaled(10) * 1000)
    wait_until(lambda: edge_ink(canvas)["any"], "the time axis chart to be drawn")
    assert edge_ink(canvas) == {"left": False, "right": False, "any": True}
