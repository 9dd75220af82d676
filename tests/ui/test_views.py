"""The run page's other views in a real browser: resources, evaluation, compare, log histogram, overview.

Real server (``python -m ui.serve``: sink, API, live feed) over the real broker and chDB; the only
fake is a GPU library behind the sampler's ``GpuBackend`` seam (this machine has no NVML).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from producers import evals as evals_mod
from producers.nvml import FieldUnsupported, GpuFacts
from producers.sampler import Sampler
from tests.conftest import scaled
from tests.ui.browser import needs_chromium, sync_api
from tests.ui.conftest import XSS_LINE, XSS_NAME, Server, run_async
from tests.ui.feedclient import Emitter
from tests.ui.test_live_page import api, emit, wait_until

expect = sync_api.expect

pytestmark = needs_chromium


class FakeNvml:
    """One GPU whose readings change with every sample (the seam the real NVML adapter sits behind)."""

    def __init__(self) -> None:
        self.reads = 0

    def open(self) -> GpuFacts:
        return GpuFacts(
            driver_version="550.54.15",
            cuda_driver_version=12040,
            devices=[{"index": 0, "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-test"}],
        )

    def read(self, index: int, group: str) -> dict[str, float]:
        self.reads += 1
        k = self.reads % 7
        readings = {
            "utilization": {"util_pct": 40.0 + 8 * k, "mem_util_pct": 30.0},
            "memory": {"mem_used_bytes": (20 + k) * 2.0**30, "mem_total_bytes": 80 * 2.0**30},
            "power": {"power_w": 250.0 + 10 * k},
            "temperature": {"temp_c": 55.0 + k},
        }
        if group not in readings:
            raise FieldUnsupported(group)
        return readings[group]

    def process_memory(self, index: int) -> dict[int, int]:
        raise FieldUnsupported("processes")

    def close(self) -> None:
        pass


def emit_to(server: Server, run: str, kind: str, records: list[dict[str, Any]], topic: str) -> None:
    async def go() -> None:
        async with Emitter(server, run) as e:
            await e.send(kind, records, topic=topic)

    run_async(go())


def stored(server: Server, path: str, key: str) -> Any:
    """Wait until ``GET path`` answers a non-empty ``key``; return the answer."""
    found: list[Any] = []

    def check() -> bool:
        body = api(server, path)
        if body and body.get(key):
            found.append(body)
            return True
        return False

    wait_until(check, f"{path} to be stored")
    return found[-1]


def test_resources_tab_charts_sampled_gpu_and_host_series(page: Any, server: Server) -> None:
    """Samples taken by the real sampler (psutil host, GPU library faked) become GPU and host charts."""
    run = f"res-{uuid.uuid4().hex[:8]}"
    sampler = Sampler(gpu=FakeNvml())
    sampler.open()
    records = []
    for _ in range(5):
        records += sampler.sample()
        time.sleep(0.15)
    sampler.close()
    assert {r["device"] for r in records} == {"host", "gpu0"}
    emit(server, run, "resources", records)
    body = stored(server, f"/api/runs/{run}/resources", "series")
    names = {(s["device"], s["name"]) for s in body["series"]}
    assert {("gpu0", "util_pct"), ("gpu0", "temp_c"), ("host", "mem_used_bytes")} <= names

    page.goto(f"{server.url}/runs/{run}/resources")
    for chart in (
        "gpu:util_pct",
        "gpu:mem_used_bytes",
        "gpu:power_w",
        "gpu:temp_c",
        "host:cpu_pct",
        "host:mem_used_bytes",
    ):
        card = page.locator(f"figure.card[data-resource='{chart}']")
        expect(card.locator("canvas")).not_to_have_count(0, timeout=scaled(10) * 1000)
        expect(card.locator(".legend")).to_have_text(f"node-0/{chart.split(':')[0].replace('gpu', 'gpu0')}")
    assert page.locator(".tabs a.active").inner_text() == "resources"


def test_evaluation_tab_draws_the_matrix_and_the_slider_moves_precision_recall(page: Any, server: Server) -> None:
    """A confusion matrix is drawn cell by cell; moving the PR threshold changes the shown precision/recall."""
    run = f"eval-{uuid.uuid4().hex[:8]}"
    labels = ["cat", "dog", XSS_NAME]
    matrix = evals_mod.confusion_matrix([0, 1, 1, 2, 2, 2, 0], [0, 1, 2, 2, 2, 1, 0], labels)
    scores = [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3], [0.45, 0.55], [0.1, 0.9]]
    curve = evals_mod.pr_curve([0, 1, 1, 0, 1, 1], scores, ["a", "b"], 11)
    ts = time.time_ns()
    emit(
        server,
        run,
        "evals",
        [
            {"ts_ns": ts, "name": "val confusion", "type": "confusion_matrix", "data": matrix},
            {"ts_ns": ts, "name": "val pr", "type": "pr_curve", "data": curve},
        ],
    )
    stored(server, f"/api/runs/{run}/evals", "evals")
    page.goto(f"{server.url}/runs/{run}/evaluation")

    cells = page.locator("table.confusion tbody td.cell")
    expect(cells).to_have_count(9, timeout=scaled(10) * 1000)
    assert [int(c) for c in cells.all_inner_texts()] == [n for row in matrix["matrix"] for n in row]
    assert page.locator("table.confusion thead th.pred").all_inner_texts() == labels
    f1 = page.locator("table.per-label").first.locator("tbody tr").nth(1).locator("td").nth(2)
    assert f1.inner_text() == f"{matrix['per_label']['f1'][1]:.3f}"

    slider = page.locator("input.threshold")
    row_b = page.locator("tr[data-label='b']")
    for k in (2, 8):
        slider.fill(str(k))
        b = curve["curves"][1]
        expect(page.locator(".threshold-value")).to_have_text(f"threshold {curve['thresholds'][k]:.3f}")
        expect(row_b.locator("td.precision")).to_have_text(f"{b['precision'][k]:.3f}")
        expect(row_b.locator("td.recall")).to_have_text(f"{b['recall'][k]:.3f}")
    assert curve["curves"][1]["recall"][2] != curve["curves"][1]["recall"][8]
    assert page.locator("main script, main img").count() == 0


def test_compare_overlays_two_selected_runs(page: Any, server: Server) -> None:
    """Two runs selected in the list open one chart holding both runs' loss, with their last values."""
    project = f"cmp-{uuid.uuid4().hex[:8]}"
    runs = {f"{project}-a": [1.0, 0.5, 0.25], f"{project}-b": [2.0, 1.5, 1.25, 1.0]}
    for run, losses in runs.items():
        emit(
            server,
            run,
            "runs",
            [
                {
                    "event": "start",
                    "project": project,
                    "name": run[-1] + "-run",
                    "config": {"lr": 0.1 if run.endswith("a") else 0.01},
                    "world_size": 1,
                }
            ],
        )
        emit(server, run, "metrics", [{"step": s, "values": {"loss": v}} for s, v in enumerate(losses)])
    wait_until(
        lambda: (
            all(
                (r.get("summary") or {}).get("loss", {}).get("last") is not None
                for r in api(server, f"/api/runs?project={project}")["runs"]
            )
            and len(api(server, f"/api/runs?project={project}")["runs"]) == 2
        ),
        "both runs' summaries",
    )

    page.goto(f"{server.url}/?project={project}")
    page.wait_for_selector("table.runs tbody tr")
    assert sorted(page.locator("th.config").all_inner_texts()) == ["lr"]
    for run in runs:
        page.check(f"tr[data-run='{run}'] input.pick")
    page.click("button.compare")
    page.wait_for_url("**/compare?runs=*")
    card = page.locator(".compare-chart figure.card")
    expect(card.locator("canvas")).not_to_have_count(0, timeout=scaled(10) * 1000)
    assert sorted(card.locator(".legend .key").all_inner_texts()) == sorted(
        f"{run[-1]}-run ({run[:8]})" for run in runs
    )
    lasts = {r: page.locator(f"tr[data-run='{r}'] td.num").first.inner_text() for r in runs}
    assert lasts == {f"{project}-a": "0.25", f"{project}-b": "1"}
    assert page.locator("tr[data-run] td.num").nth(3).inner_text() == "3"


def test_log_histogram_counts_the_matching_lines(page: Any, server: Server) -> None:
    """A search's histogram has one bar per time bucket and its counts add up to the matches."""
    run = f"hist-{uuid.uuid4().hex[:8]}"
    now = time.time_ns()
    lines = [
        {
            "line": f"step {i} {'ERROR nan loss' if i % 4 == 0 else 'ok'}",
            "level": "INFO",
            "ts_ns": now - (20 - i) * 1_000_000_000,
        }
        for i in range(20)
    ]
    emit(server, run, "logs", lines)
    wait_until(lambda: len((api(server, f"/api/runs/{run}/logs") or {"lines": []})["lines"]) == 20, "the lines")
    page.goto(f"{server.url}/runs/{run}/logs?q=nan+loss")
    expect(page.locator(".hist-note")).to_contain_text("5 matching lines", timeout=scaled(10) * 1000)
    counts = [int(c) for c in page.locator(".histogram .hbar").evaluate_all("bars => bars.map(b => b.dataset.count)")]
    assert sum(counts) == 5 and len(counts) > 1 and max(counts) == 1
    expect(page.locator(".logview .text")).to_have_count(5)


def test_markup_in_config_tags_and_alerts_renders_as_text(page: Any, server: Server) -> None:
    """HTML in a run's config, tags and alert messages is shown literally in the list and the overview."""
    project = f"xss-{uuid.uuid4().hex[:8]}"
    run = f"{project}-run"
    emit(
        server,
        run,
        "runs",
        [
            {
                "event": "start",
                "project": project,
                "name": "xss-run",
                "config": {"note": XSS_LINE},
                "tags": [XSS_NAME],
                "world_size": 1,
            }
        ],
    )
    emit_to(
        server,
        run,
        "alerts",
        [{"key": f"{run}:nan", "kind": "nan_loss", "severity": "error", "message": XSS_LINE, "metric": "loss"}],
        server.topics.alerts,
    )
    stored(server, f"/api/runs/{run}/alerts", "alerts")
    page.goto(f"{server.url}/?project={project}")
    page.wait_for_selector("table.runs tbody tr")
    assert page.locator("td .tag").all_inner_texts() == [XSS_NAME]
    assert page.locator("td.config").all_inner_texts() == [XSS_LINE]
    page.click("td.name a")
    expect(page.locator(".alert-list .message")).to_have_text([XSS_LINE], timeout=scaled(10) * 1000)
    assert page.locator(".alert-list .badge").inner_text() == "nan_loss"
    assert page.locator("main script, main img, main b").count() == 0


def emit_ranks(server: Server, run: str, kind: str, by_node: dict[str, list[dict[str, Any]]]) -> None:
    """Each node's records from its own producer (rank = its position)."""

    async def go() -> None:
        for rank, (node, records) in enumerate(by_node.items()):
            async with Emitter(server, run, node=node, rank=rank) as e:
                await e.send(kind, records)

    run_async(go())


def test_log_histogram_of_a_week_spreads_a_short_run_over_its_bars(page: Any, server: Server) -> None:
    """A "last 7 days" search of a run whose lines span 40 s spreads its matches over many bars, not one."""
    run = f"hist7d-{uuid.uuid4().hex[:8]}"
    first = time.time_ns() - 60 * 10**9
    lines = [
        {"line": f"step {i} {'nan loss' if i % 2 else 'ok'}", "level": "INFO", "ts_ns": first + i * 10**9}
        for i in range(40)
    ]
    emit(server, run, "logs", lines)
    wait_until(lambda: len((api(server, f"/api/runs/{run}/logs") or {"lines": []})["lines"]) == 40, "the lines")
    page.goto(f"{server.url}/runs/{run}/logs?q=nan+loss&since=7d")
    expect(page.locator(".hist-note")).to_contain_text("20 matching lines", timeout=scaled(10) * 1000)
    bars = page.locator(".histogram .hbar")
    counts = [int(c) for c in bars.evaluate_all("bars => bars.map(b => b.dataset.count)")]
    assert sum(counts) == 20 and sum(1 for c in counts if c) >= 10 and max(counts) <= 2


def test_clicking_a_histogram_bar_searches_its_time_slice(page: Any, server: Server) -> None:
    """A click on a "last 7 days" histogram's last bar lists exactly the lines it counts, the run's last included."""
    run = f"histclick-{uuid.uuid4().hex[:8]}"
    first = time.time_ns() - 60 * 10**9
    lines = [{"line": f"step {i} nan loss", "level": "INFO", "ts_ns": first + i * 10**9} for i in range(40)]
    emit(server, run, "logs", lines)
    wait_until(lambda: len((api(server, f"/api/runs/{run}/logs") or {"lines": []})["lines"]) == 40, "the lines")
    page.goto(f"{server.url}/runs/{run}/logs?q=nan+loss&since=7d")
    expect(page.locator(".hist-note")).to_contain_text("40 matching lines", timeout=scaled(10) * 1000)
    bar = page.locator(".histogram .hbar").last
    wanted = int(bar.get_attribute("data-count") or 0)
    assert wanted >= 1
    bar.click()
    expect(page.locator("select.since")).to_have_value("custom")
    expect(page.locator(".bar .status")).to_have_text(f"{wanted} line" + ("" if wanted == 1 else "s"))
    expect(page.locator(".logview .text")).to_have_count(wanted)
    expect(page.locator(".logview .text").last).to_have_text("step 39 nan loss")


def test_overview_says_which_memory_each_resource_peak_is(page: Any, server: Server) -> None:
    """The overview lists each node's GPUs (peak GPU memory used) apart from its host (peak RAM used), each with
    the run's own peak (its processes' GPU memory, their RSS), in the panel."""
    run = f"ressum-{uuid.uuid4().hex[:8]}"
    emit(server, run, "runs", [{"event": "start", "project": "ressum", "name": run, "world_size": 2}])
    now = time.time_ns()
    samples = {
        node: [
            {"ts_ns": now - k * 10**9, "device": device, "values": values}
            for k in range(3)
            for device, values in (
                ("gpu0", {"util_pct": 50.0 + k, "mem_used_bytes": (40 + k) * 2.0**30}),
                (
                    "gpu1",
                    {
                        "util_pct": 60.0 + k,
                        "mem_used_bytes": (70 + k) * 2.0**30,
                        "proc_mem_used_bytes": (30 + k) * 2.0**30,
                    },
                ),
                ("host", {"cpu_pct": 20.0 + k, "mem_used_bytes": (100 + k) * 2.0**30, "proc_rss_bytes": 2.0**33}),
            )
        ]
        for node in ("node-a", "node-b")
    }
    emit_ranks(server, run, "resources", samples)
    wait_until(
        lambda: len(((api(server, f"/api/runs/{run}") or {}).get("resource_summary") or {}).get("devices", [])) == 6,
        "the resource summary",
    )
    page.goto(f"{server.url}/runs/{run}")
    panel = page.locator(".panel.resource-summary")
    gpus, hosts = panel.locator("table.gpus"), panel.locator("table.hosts")
    expect(gpus.locator("tbody tr")).to_have_count(4, timeout=scaled(10) * 1000)
    assert gpus.locator("thead th").all_inner_texts()[-2:] == ["peak memory used", "run's peak"]
    assert gpus.locator("tbody tr").nth(1).locator("td").all_inner_texts() == [
        "node-a/gpu1",
        "61 %",
        "62 %",
        "72.0 GiB",
        "32.0 GiB",
    ]
    assert gpus.locator("tbody tr").first.locator("td").last.inner_text() == "—"  # gpu0: no process memory sampled
    assert hosts.locator("thead th").all_inner_texts() == [
        "node",
        "CPU avg",
        "CPU max",
        "peak RAM used",
        "run's peak RSS",
    ]
    assert hosts.locator("tbody tr").first.locator("td").all_inner_texts() == [
        "node-a",
        "21 %",
        "22 %",
        "102 GiB",
        "8.0 GiB",
    ]
    expect(panel).to_contain_text("RAM used is the whole machine's")
    assert panel.evaluate("p => p.scrollWidth <= p.clientWidth")
