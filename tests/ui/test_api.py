"""The HTTP API against a real chDB store: answer shapes per the contract, and errors."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from starlette.applications import Starlette

from sinks.queries import Queries, QueryLimits
from sinks.store import Store
from tests.ui.asgi import get
from tests.ui.conftest import TOKEN, XSS_LINE, XSS_NAME, Seeded, make_app

AUTH = {"Authorization": f"Bearer {TOKEN}"}
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
RUN_KEYS = {"id", "project", "name", "status", "started_at", "ended_at", "duration_s", "config", "tags", "summary"}
LINE_KEYS = {"ts", "node", "rank", "stream", "level", "line"}


async def api(app: Starlette, path: str, params: Any = None, status: int = 200) -> Any:
    answer = await get(app, path, params, headers=AUTH)
    assert answer.status == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    return answer.json()


async def error(app: Starlette, path: str, params: Any = None, status: int = 400) -> str:
    body = await api(app, path, params, status)
    assert set(body) == {"error"}
    return str(body["error"])


# ---------------------------------------------------------------- runs


async def test_run_list_shape(app: Starlette, seeded: Seeded) -> None:
    """/api/runs answers {"runs": [...]} with the contract's fields and last/min/max summaries."""
    runs = (await api(app, "/api/runs", {"project": seeded.project}))["runs"]
    run = next(r for r in runs if r["id"] == seeded.run_id)
    assert RUN_KEYS <= set(run)
    assert run["status"] == "finished" and run["name"] == "lr-3e-4"
    assert run["config"] == {"lr": 0.0003, "batch": 64} and run["tags"] == ["baseline"]
    assert RFC3339.match(run["started_at"]) and RFC3339.match(run["ended_at"])
    assert run["duration_s"] > 0
    assert run["summary"]["loss"] == {"last": seeded.losses[-1], "min": min(seeded.losses), "max": max(seeded.losses)}


async def test_run_list_filters_by_project(app: Starlette, seeded: Seeded) -> None:
    """project= keeps only that project's runs."""
    runs = (await api(app, "/api/runs", {"project": seeded.project}))["runs"]
    assert {r["project"] for r in runs} == {seeded.project}


async def test_run_list_filters_by_status(app: Starlette, seeded: Seeded) -> None:
    """status= keeps only runs in that status."""
    runs = (await api(app, "/api/runs", {"status": "running"}))["runs"]
    assert seeded.xss_run_id in {r["id"] for r in runs}
    assert {r["status"] for r in runs} == {"running"}


async def test_run_list_refuses_unknown_status(app: Starlette) -> None:
    """An unknown status is a 400 listing the statuses."""
    message = await error(app, "/api/runs", {"status": "done"})
    assert "status must be one of running, finished, failed, killed, crashed" in message


async def test_run_detail_has_nodes(app: Starlette, seeded: Seeded) -> None:
    """/api/runs/{id} answers the run with its nodes."""
    run = await api(app, f"/api/runs/{seeded.run_id}")
    assert RUN_KEYS <= set(run) and "nodes" in run
    assert run["id"] == seeded.run_id
    assert "node-1" in repr(run["nodes"])


@pytest.mark.parametrize("suffix", ["", "/metrics", "/metrics?name=loss", "/logs"])
async def test_unknown_run_is_404(app: Starlette, suffix: str) -> None:
    """Every per-run path answers 404 with an error for a run that does not exist."""
    path, _, query = f"/api/runs/no-such-run{suffix}".partition("?")
    message = await error(app, path, dict([query.split("=")]) if query else None, 404)
    assert "no-such-run" in message


# ---------------------------------------------------------------- metrics


async def test_metric_names(app: Starlette, seeded: Seeded) -> None:
    """/metrics without parameters lists the run's metric names."""
    body = await api(app, f"/api/runs/{seeded.run_id}/metrics")
    assert set(body) == {"names"}
    assert {"loss", "acc", "grad_norm"} <= set(body["names"])


async def test_metric_series_all_points_when_few(app: Starlette, seeded: Seeded) -> None:
    """A series with fewer points than asked for comes back whole, in step order."""
    body = await api(app, f"/api/runs/{seeded.run_id}/metrics", {"name": "loss", "points": 10000})
    assert body["name"] == "loss"
    assert body["points"] == [[step, value] for step, value in enumerate(seeded.losses)]


async def test_metric_series_downsampled_keeps_the_spike(app: Starlette, seeded: Seeded) -> None:
    """points= bounds the answer and the extreme value survives downsampling."""
    body = await api(app, f"/api/runs/{seeded.run_id}/metrics", {"name": "loss", "points": 20})
    assert 2 <= len(body["points"]) <= 20
    assert max(v for _, v in body["points"]) == max(seeded.losses)


async def test_metric_nan_is_valid_json(app: Starlette, seeded: Seeded) -> None:
    """A NaN metric value is answered as valid JSON (no bare NaN token)."""
    body = await api(app, f"/api/runs/{seeded.run_id}/metrics", {"name": "grad_norm"})
    assert body["points"] == [[0, 1.0], [1, "NaN"], [2, 2.0]]


@pytest.mark.parametrize("points", ["2", "10001", "many", "-5"])
async def test_bad_points_is_400(app: Starlette, seeded: Seeded, points: str) -> None:
    """points outside 3..10000 or not an integer is a 400 that says so."""
    message = await error(app, f"/api/runs/{seeded.run_id}/metrics", {"name": "loss", "points": points})
    assert message.startswith("points must be an integer from 3 to 10000")


async def test_metric_parameters_without_name_is_400(app: Starlette, seeded: Seeded) -> None:
    """Asking for points of no metric is a 400 saying name is required."""
    message = await error(app, f"/api/runs/{seeded.run_id}/metrics", {"points": "50"})
    assert "name is required" in message


async def test_unknown_parameter_is_400(app: Starlette, seeded: Seeded) -> None:
    """A misspelt parameter is refused rather than silently ignored."""
    message = await error(app, f"/api/runs/{seeded.run_id}/metrics", {"nmae": "loss"})
    assert "unknown parameter 'nmae'" in message


# ---------------------------------------------------------------- logs


async def test_logs_shape_and_time_order(app: Starlette, seeded: Seeded) -> None:
    """/logs answers {"lines", "next_cursor"}; lines carry the contract's fields, oldest first."""
    body = await api(app, f"/api/runs/{seeded.run_id}/logs", {"limit": 10000})
    assert set(body) >= {"lines", "next_cursor"}
    lines = body["lines"]
    assert [line["line"] for line in lines] == seeded.lines
    assert all(LINE_KEYS <= set(line) and RFC3339.match(line["ts"]) for line in lines)
    assert [line["ts"] for line in lines] == sorted(line["ts"] for line in lines)


async def test_logs_keyword_search(app: Starlette, seeded: Seeded) -> None:
    """q= returns exactly the lines containing the phrase, case-insensitively."""
    body = await api(app, f"/api/runs/{seeded.run_id}/logs", {"q": "CHECKPOINT saved"})
    want = [line for line in seeded.lines if "checkpoint saved" in line.lower()]
    assert [line["line"] for line in body["lines"]] == want and want


async def test_logs_level_list(app: Starlette, seeded: Seeded) -> None:
    """level=WARNING,ERROR returns the lines of those levels only."""
    body = await api(app, f"/api/runs/{seeded.run_id}/logs", {"level": "warning,ERROR"})
    assert body["lines"] and {line["level"] for line in body["lines"]} <= {"WARNING", "ERROR"}


async def test_logs_cursor_pages_cover_every_line_once(app: Starlette, seeded: Seeded) -> None:
    """Following next_cursor with a small limit yields every line exactly once, in order."""
    got: list[str] = []
    cursor = None
    for _ in range(100):
        body = await api(app, f"/api/runs/{seeded.run_id}/logs", {"limit": 7, "cursor": cursor})
        assert len(body["lines"]) <= 7
        got += [line["line"] for line in body["lines"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert got == seeded.lines


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"since": "last tuesday"}, "since: 'last tuesday' is not a time"),
        ({"since": "2020-01-01T00:00:00Z", "limit": "0"}, "limit must be an integer from 1"),
        ({"since": "1h", "until": "2h"}, "since is after until"),
        ({"rank": "-1"}, "rank must be an integer from 0"),
        ({"level": "LOUD"}, "level must be one or more of DEBUG, INFO"),
        ({"stream": "stdin"}, "stream must be one of"),
        ({"order": "sideways"}, "order must be one of asc, desc"),
    ],
)
async def test_bad_log_parameters_are_400(
    app: Starlette, seeded: Seeded, params: dict[str, str], expected: str
) -> None:
    """Each malformed log parameter is a 400 whose message names it."""
    message = await error(app, f"/api/runs/{seeded.run_id}/logs", params)
    assert expected in message


async def test_bad_regex_is_400(app: Starlette, seeded: Seeded) -> None:
    """An invalid regular expression is a 400, not a server error."""
    message = await error(app, f"/api/runs/{seeded.run_id}/logs", {"regex": "(unclosed"})
    assert message.startswith("regex '(unclosed' is not a valid RE2 expression: missing )")


async def test_regex_search(app: Starlette, seeded: Seeded) -> None:
    """regex= returns exactly the lines the RE2 expression matches."""
    body = await api(app, f"/api/runs/{seeded.run_id}/logs", {"regex": r"^step \d*5 "})
    want = [line for line in seeded.lines if re.match(r"^step \d*5 ", line)]
    assert [line["line"] for line in body["lines"]] == want and want


async def test_bad_cursor_is_400(app: Starlette, seeded: Seeded) -> None:
    """A cursor this server did not hand out is a 400."""
    message = await error(app, f"/api/runs/{seeded.run_id}/logs", {"cursor": "garbage!"})
    assert "cursor" in message


async def test_query_over_its_cost_limit_is_422(store: Store, seeded: Seeded) -> None:
    """A query that exceeds the store's limits is a 422 that says so and how to narrow it."""
    app = make_app(Queries(store, QueryLimits(max_rows_to_read=5)), store.call)
    answer = await get(app, f"/api/runs/{seeded.run_id}/logs", headers=AUTH)
    assert answer.status == 422
    message = answer.json()["error"]
    assert "cost limit" in message and "narrow since/until" in message


async def test_logs_node_and_rank_filters(app: Starlette, seeded: Seeded) -> None:
    """node= and rank= keep only that process's lines."""
    body = await api(app, f"/api/runs/{seeded.run_id}/logs", {"node": "node-1", "rank": "1"})
    assert [line["line"] for line in body["lines"]] == seeded.lines[1::2]


async def test_logs_newest_first(app: Starlette, seeded: Seeded) -> None:
    """order=desc pages from the newest line backwards."""
    body = await api(app, f"/api/runs/{seeded.run_id}/logs", {"order": "desc", "limit": 3})
    assert [line["line"] for line in body["lines"]] == seeded.lines[::-1][:3]
    assert body["next_cursor"]


# ---------------------------------------------------------------- dead letters


async def test_dead_letters_shape(app: Starlette, seeded: Seeded) -> None:
    """/api/dlq answers {"items": [{"ts", "topic", "reason", "sample"}]}."""
    items = (await api(app, "/api/dlq", {"limit": 5}))["items"]
    assert 1 <= len(items) <= 5
    item = next(i for i in items if seeded.dlq_reason in i["reason"])
    assert {"ts", "topic", "reason", "sample"} <= set(item)


async def test_dead_letters_limit_bounds(app: Starlette) -> None:
    """limit outside 1..10000 is a 400."""
    message = await error(app, "/api/dlq", {"limit": "0"})
    assert "limit must be an integer from 1 to 10000" in message


# ---------------------------------------------------------------- data is data


async def test_markup_in_run_name_is_returned_verbatim(app: Starlette, seeded: Seeded) -> None:
    """A run name holding markup comes back as the same string in JSON, unescaped, untouched."""
    run = await api(app, f"/api/runs/{seeded.xss_run_id}")
    assert run["name"] == XSS_NAME


async def test_markup_in_log_line_is_returned_verbatim(app: Starlette, seeded: Seeded) -> None:
    """A log line holding markup comes back as the same string, as application/json."""
    body = await api(app, f"/api/runs/{seeded.xss_run_id}/logs")
    assert [line["line"] for line in body["lines"]] == [XSS_LINE]


# ---------------------------------------------------------------- health and errors


async def test_health_is_503_when_a_part_fails(queries_app_parts: tuple) -> None:
    """Health answers 503 with the details when ingest does not work."""

    async def health() -> dict[str, Any]:
        return {"ingest": {"ok": False, "error": "broker unreachable"}, "queries": {"ok": True}}

    app = make_app(*queries_app_parts, health=health)
    answer = await get(app, "/api/health")
    assert answer.status == 503
    assert answer.json()["ok"] is False
    assert answer.json()["ingest"]["error"] == "broker unreachable"


async def test_health_reads_boolean_parts(queries_app_parts: tuple) -> None:
    """A report of plain booleans per part works too: any false part is a 503."""

    async def health() -> dict[str, Any]:
        return {"queries": True, "ingest": False, "sink": {"received": 3}}

    answer = await get(make_app(*queries_app_parts, health=health), "/api/health")
    assert answer.status == 503
    assert answer.json() == {"ok": False, "queries": True, "ingest": False, "sink": {"received": 3}}


async def test_health_is_503_when_the_check_raises(queries_app_parts: tuple) -> None:
    """A health check that raises is a 503 naming the failure, not a 500."""

    async def health() -> dict[str, Any]:
        raise OSError("disk gone")

    answer = await get(make_app(*queries_app_parts, health=health), "/api/health")
    assert answer.status == 503
    assert "OSError" in answer.json()["error"]


async def test_health_is_503_when_the_check_hangs(queries_app_parts: tuple) -> None:
    """A health check slower than its timeout is a 503."""

    async def health() -> dict[str, Any]:
        await asyncio.sleep(10)
        return {"ok": True}

    app = make_app(*queries_app_parts, health=health, health_timeout_s=0.05)
    answer = await get(app, "/api/health")
    assert answer.status == 503
    assert "health check took over" in answer.json()["error"]


async def test_unknown_api_path_is_json_404(app: Starlette) -> None:
    """An API path that does not exist is a JSON 404."""
    await error(app, "/api/nothing", status=404)


async def test_security_headers_on_every_answer(app: Starlette, seeded: Seeded) -> None:
    """CSP, nosniff and no-referrer are on answers of every kind: data, errors, pages, assets."""
    answers = [
        await get(app, "/api/runs", headers=AUTH),
        await get(app, "/api/runs"),
        await get(app, "/api/runs/nope", headers=AUTH),
        await get(app, "/api/health", host="attacker.example"),
        await get(app, "/", {"token": TOKEN}),
        await get(app, "/", headers=AUTH),
        await get(app, "/static/app.js"),
    ]
    for answer in answers:
        csp = answer.headers["content-security-policy"]
        for directive in (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "connect-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        ):
            assert directive in csp
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer"
