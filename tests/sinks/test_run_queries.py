"""Run list and run details: status derived from every rank's events."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from runstream.errors import QueryError
from runstream.timeparse import format_ns
from sinks.queries import Queries
from sinks.rows import ColumnBuffer
from sinks.status import derive_status
from tests.sinks.conftest import BASE_NS, envelope, open_temp_store

S = 1_000_000_000
NOW = BASE_NS + 1000 * S


def _start(ts: int, **extra: Any) -> dict[str, Any]:
    return {
        "ts_ns": ts,
        "event": "start",
        "project": "vision",
        "name": "resnet",
        "config": {"lr": 0.1},
        "tags": ["base"],
        "host": "h",
        "pid": 10,
        "world_size": 2,
        "argv": ["train.py"],
        **extra,
    }


def _finish(ts: int, status: str, code: int | None = 0, reason: str = "") -> dict[str, Any]:
    return {"ts_ns": ts, "event": "finish", "status": status, "exit_code": code, "reason": reason}


# run id -> per rank: events (relative seconds); the start times order the runs.
RUNS: dict[str, dict[int, list[dict[str, Any]]]] = {
    "finished": {
        0: [_start(BASE_NS + 10 * S), _finish(BASE_NS + 100 * S, "finished")],
        1: [_start(BASE_NS + 11 * S), _finish(BASE_NS + 120 * S, "finished")],
    },
    "failed": {
        0: [_start(BASE_NS + 20 * S), _finish(BASE_NS + 200 * S, "finished")],
        1: [
            _start(BASE_NS + 20 * S),
            _finish(BASE_NS + 150 * S, "failed", 1, "CUDA out of memory"),
        ],
    },
    "killed": {0: [_start(BASE_NS + 30 * S), _finish(BASE_NS + 300 * S, "killed", -9, "SIGKILL")]},
    "running": {
        0: [_start(BASE_NS + 40 * S, project="nlp"), {"ts_ns": NOW - 5 * S, "event": "heartbeat"}],
        1: [_start(BASE_NS + 40 * S, project="nlp")],
    },
    "crashed": {0: [_start(BASE_NS + 50 * S), {"ts_ns": NOW - 500 * S, "event": "heartbeat"}]},
    "half-done": {
        0: [_start(BASE_NS + 60 * S), _finish(NOW - 300 * S, "finished")],
        1: [_start(BASE_NS + 60 * S), {"ts_ns": NOW - 2 * S, "event": "heartbeat"}],
    },
}


@pytest.fixture(scope="module")
def queries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Queries]:
    store = open_temp_store(tmp_path_factory.mktemp("runs"))
    buf = ColumnBuffer()
    for run, ranks in RUNS.items():
        for rank, events in ranks.items():
            buf.add_envelope(
                envelope(
                    "runs",
                    events,
                    run=run,
                    rank=rank,
                    node=f"node-{rank}",
                    producer=f"{run}-{rank}",
                )
            )
    buf.add_envelope(
        envelope(
            "resources",
            [
                {"ts_ns": BASE_NS + 12 * S, "device": "gpu0", "values": {"util_pct": 50.0}},
                {"ts_ns": BASE_NS + 13 * S, "device": "gpu0", "values": {"util_pct": 100.0}},
            ],
            run="finished",
        )
    )
    for table in buf.tables():
        store.insert_arrow(table, buf.to_arrow(table))
    try:
        yield Queries(store)
    finally:
        store.close()


def test_status_is_derived_per_run(queries: Queries) -> None:
    """finished, failed (any rank), killed, running, crashed (silent 60 s) and unfinished ranks."""
    runs = {r["id"]: r["status"] for r in queries.list_runs(now_ns=NOW)}
    assert runs == {
        "finished": "finished",
        "failed": "failed",
        "killed": "killed",
        "running": "running",
        "crashed": "crashed",
        "half-done": "running",
    }


def test_runs_are_newest_first_with_the_contract_fields(queries: Queries) -> None:
    """The list is ordered by start, newest first, and has the /api/runs fields."""
    runs = queries.list_runs(now_ns=NOW)
    assert [r["id"] for r in runs] == [
        "half-done",
        "crashed",
        "running",
        "killed",
        "failed",
        "finished",
    ]
    first = runs[-1]
    assert {
        "id",
        "project",
        "name",
        "status",
        "started_at",
        "ended_at",
        "duration_s",
        "config",
        "tags",
        "summary",
    } <= set(first)
    assert first["config"] == {"lr": 0.1} and first["tags"] == ["base"]
    assert first["started_at"] == format_ns(BASE_NS + 10 * S)
    assert first["ended_at"] == format_ns(BASE_NS + 120 * S) and first["duration_s"] == 110.0


def test_running_run_has_no_end_and_counts_duration_to_now(queries: Queries) -> None:
    """A running run has ended_at None and its duration runs to now."""
    (run,) = [r for r in queries.list_runs(now_ns=NOW) if r["id"] == "running"]
    assert run["ended_at"] is None and run["duration_s"] == (NOW - BASE_NS - 40 * S) / S


def test_filters_by_project_and_status(queries: Queries) -> None:
    """project= and status= filter the list."""
    assert [r["id"] for r in queries.list_runs(project="nlp", now_ns=NOW)] == ["running"]
    assert [r["id"] for r in queries.list_runs(status="failed", now_ns=NOW)] == ["failed"]
    with pytest.raises(QueryError, match="status must be one of"):
        queries.list_runs(status="done")


def test_get_run_explains_a_failure(queries: Queries) -> None:
    """A failed run gives the failing rank's exit code and reason, and its nodes."""
    run = queries.get_run("failed", now_ns=NOW)
    assert run is not None
    assert (run["status"], run["exit_code"], run["reason"]) == ("failed", 1, "CUDA out of memory")
    assert [(n["node"], n["rank"], n["host"], n["pid"]) for n in run["nodes"]] == [
        ("node-0", 0, "h", 10),
        ("node-1", 1, "h", 10),
    ]
    assert run["world_size"] == 2 and run["argv"] == ["train.py"] and run["metrics"] == []


def test_get_run_summarises_resources(queries: Queries) -> None:
    """Resources are summarised per device and measurement: average and maximum."""
    run = queries.get_run("finished", now_ns=NOW)
    assert run is not None and run["resources"] == [{"device": "gpu0", "name": "util_pct", "avg": 75.0, "max": 100.0}]


def test_unknown_run_is_none(queries: Queries) -> None:
    """get_run answers None for a run with nothing stored."""
    assert queries.get_run("nope") is None


def test_derive_status_precedence() -> None:
    """failed beats killed beats finished; silence turns running into crashed."""
    assert derive_status([(0, "killed", 5, -9, ""), (1, "failed", 3, 1, "")], 5, 6, 60) == (
        "failed",
        5,
    )
    assert derive_status([(0, "killed", 5, -9, ""), (1, "", 0, None, "")], 5, 6, 60) == (
        "killed",
        5,
    )
    assert derive_status([(0, "finished", 5, 0, ""), (1, "", 0, None, "")], 5, 6, 60) == (
        "running",
        None,
    )
    assert derive_status([(0, "", 0, None, "")], 5, 5 + 61_000_000, 60) == ("crashed", 5)
