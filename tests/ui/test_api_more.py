"""The API's resource, alert, evaluation, histogram, context, project-search and compare endpoints on real chDB."""

from __future__ import annotations

import time
from typing import Any

import pytest
from starlette.applications import Starlette

from runstream import tables
from sinks.store import Store
from tests.ui.conftest import Seeded, _dt, _insert
from tests.ui.test_api import api, error


@pytest.fixture(scope="module")
def more(store: Store, seeded: Seeded) -> Seeded:
    """Resources, alerts (one key twice), an evaluation and a second run of the project."""
    t0 = time.time_ns() // 1000 - 3600 * 1_000_000
    rows = []
    for i in range(200):
        for device, name, value in (
            ("gpu0", "util_pct", 90.0 if i == 123 else 40.0),
            ("gpu0", "mem_used_bytes", 1e9 + i),
            ("host", "cpu_pct", 10.0),
        ):
            rows.append(
                {
                    "run_id": seeded.run_id,
                    "ts": _dt(t0 + i * 1_000_000),
                    "node": "node-0",
                    "rank": 0,
                    "device": device,
                    "name": name,
                    "value": value,
                    "producer": "p",
                    "seq": i,
                    "idx": 0,
                    "sub": 0,
                    "ingest_ts": _dt(t0),
                }
            )
    _insert(store, tables.RESOURCES, rows)
    alert = {
        "run_id": seeded.run_id,
        "key": "nan-1",
        "ts": _dt(t0),
        "kind": "nan_loss",
        "severity": "error",
        "message": "loss is NaN",
        "node": "node-0",
        "rank": 0,
        "metric": "loss",
        "value": None,
        "producer": "streams-a",
        "seq": 0,
        "idx": 0,
        "ingest_ts": _dt(t0),
    }
    _insert(store, tables.ALERTS, [alert, dict(alert, producer="streams-b")])
    _insert(
        store,
        tables.EVALS,
        [
            {
                "run_id": seeded.run_id,
                "ts": _dt(t0),
                "node": "node-0",
                "rank": 0,
                "name": "val",
                "type": "confusion_matrix",
                "data": '{"labels":["a","b"],"matrix":[[1,0],[0,1]]}',
                "producer": "p",
                "seq": 0,
                "idx": 0,
                "ingest_ts": _dt(t0),
            }
        ],
    )
    return seeded


async def test_resources_keep_the_peak(app: Starlette, more: Seeded) -> None:
    """/resources answers one series per node, device and measurement, bounded, peak kept."""
    body = await api(app, f"/api/runs/{more.run_id}/resources", {"points": 20})
    util = next(s for s in body["series"] if s["device"] == "gpu0" and s["name"] == "util_pct")
    assert len(util["points"]) <= 20 and max(v for _, v in util["points"]) == 90.0
    assert {(s["device"], s["name"]) for s in body["series"]} == {
        ("gpu0", "util_pct"),
        ("gpu0", "mem_used_bytes"),
        ("host", "cpu_pct"),
    }


async def test_alerts_one_per_key(app: Starlette, more: Seeded) -> None:
    """/alerts lists an alert delivered twice once, with the contract's fields."""
    alerts = (await api(app, f"/api/runs/{more.run_id}/alerts"))["alerts"]
    assert len(alerts) == 1
    assert {"ts", "kind", "message", "node", "rank"} <= set(alerts[0]) and alerts[0]["kind"] == "nan_loss"


async def test_evals_answer_parsed_data(app: Starlette, more: Seeded) -> None:
    """/evals answers each evaluation with its data as JSON, not text."""
    evals = (await api(app, f"/api/runs/{more.run_id}/evals"))["evals"]
    assert evals[0]["data"]["matrix"] == [[1, 0], [0, 1]] and evals[0]["type"] == "confusion_matrix"


async def test_run_detail_has_summary_alerts_and_evals(app: Starlette, more: Seeded) -> None:
    """/runs/{id} includes the resource summary, alerts and evaluations."""
    run = await api(app, f"/api/runs/{more.run_id}")
    summary = run["resource_summary"]
    assert summary["gpu_util_max"] == 90.0 and summary["gpu_mem_peak_bytes"] == 1e9 + 199
    assert len(run["alerts"]) == 1 and len(run["evals"]) == 1


async def test_histogram_total_equals_search(app: Starlette, seeded: Seeded) -> None:
    """The histogram of a keyword counts as many lines as the search returns."""
    path = f"/api/runs/{seeded.run_id}/logs"
    hist = await api(app, path + "/histogram", {"q": "checkpoint", "buckets": 7})
    lines = (await api(app, path, {"q": "checkpoint"}))["lines"]
    assert len(hist["buckets"]) == 7 and hist["total"] == len(lines) > 0


async def test_context_around_a_hit(app: Starlette, seeded: Seeded) -> None:
    """/logs/context?at=ID answers the lines just before and after the hit."""
    path = f"/api/runs/{seeded.run_id}/logs"
    hit = (await api(app, path, {"q": "checkpoint saved at step 18"}))["lines"][0]
    body = await api(app, path + "/context", {"at": hit["id"], "before": 2, "after": 3})
    got = [ln["line"] for ln in body["before"] + [body["line"]] + body["after"]]
    assert got == seeded.lines[16:22]


async def test_project_wide_search(app: Starlette, seeded: Seeded) -> None:
    """/api/logs searches every run of a project, newest first, naming each line's run."""
    body = await api(app, "/api/logs", {"project": seeded.project, "q": "checkpoint"})
    assert [ln["line"] for ln in body["lines"]] == [ln for ln in seeded.lines if "Checkpoint" in ln][::-1]
    assert {ln["run"] for ln in body["lines"]} == {seeded.run_id}


async def test_compare_metrics_of_several_runs(app: Starlette, seeded: Seeded) -> None:
    """/api/metrics?runs=a,b&name= answers one series per run."""
    body = await api(app, "/api/metrics", {"runs": f"{seeded.run_id},{seeded.xss_run_id}", "name": "loss"})
    assert [s["run"] for s in body["series"]] == [seeded.run_id, seeded.xss_run_id]
    assert len(body["series"][0]["points"]) == 300 and body["series"][1]["points"] == []


async def test_run_list_sorted_by_metric(app: Starlette, seeded: Seeded) -> None:
    """sort=metric:loss:max orders runs by that value, runs without it last."""
    runs = (await api(app, "/api/runs", {"sort": "metric:loss:max", "order": "desc"}))["runs"]
    assert runs[0]["id"] == seeded.run_id


async def test_run_list_name_filter(app: Starlette, seeded: Seeded) -> None:
    """name= keeps runs whose name contains it, case-insensitively."""
    runs = (await api(app, "/api/runs", {"name": "LR-3E"}))["runs"]
    assert [r["id"] for r in runs] == [seeded.run_id]


@pytest.mark.parametrize(
    ("path", "params", "needle"),
    [
        ("/api/runs", {"sort": "secret"}, "sort must be one of"),
        ("/api/metrics", {"name": "loss"}, "runs"),
        ("/api/runs/RUN/logs/context", {}, "at is required"),
        ("/api/runs/RUN/logs/context", {"at": "garbage"}, "cursor"),
        ("/api/runs/RUN/logs/histogram", {"buckets": "0"}, "buckets"),
        ("/api/runs/RUN/logs/histogram", {"regex": "(x"}, "regex"),
    ],
)
async def test_bad_parameters_are_400(
    app: Starlette, seeded: Seeded, path: str, params: dict[str, Any], needle: str
) -> None:
    """A bad parameter on the new endpoints is a 400 that says what was wrong."""
    assert needle in await error(app, path.replace("RUN", seeded.run_id), params)


@pytest.mark.parametrize("value", ["' OR 1=1 --", "x'); DROP TABLE logs; --", "\\' UNION SELECT 1", "{run:String}"])
async def test_injection_finds_nothing(app: Starlette, seeded: Seeded, value: str) -> None:
    """Hostile values in every text parameter are plain values: no error, no rows of other runs."""
    assert (await api(app, "/api/logs", {"project": value, "q": value, "node": value, "tag": value}))["lines"] == []
    assert (await api(app, "/api/runs", {"name": value, "tag": value, "project": value}))["runs"] == []
    body = await api(app, f"/api/runs/{seeded.run_id}/logs/histogram", {"q": value, "tag": value, "node": value})
    assert body["total"] == 0
    assert (await api(app, "/api/metrics", {"runs": value, "name": value}))["series"][0]["points"] == []


@pytest.mark.parametrize("suffix", ["/resources", "/alerts", "/evals", "/logs/histogram"])
async def test_unknown_run_is_404(app: Starlette, suffix: str) -> None:
    """The new per-run paths answer 404 for a run that does not exist."""
    assert "no-such-run" in await error(app, f"/api/runs/no-such-run{suffix}", None, 404)
