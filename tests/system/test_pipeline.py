"""End to end through the real system: SDK -> broker -> faust -> chDB -> HTTP API."""

from __future__ import annotations

import asyncio
import math
import time
import urllib.error
import uuid
from pathlib import Path
from typing import Any

import pytest

from runstream import kafka, wire
from runstream.timeparse import format_ns
from tests.system.conftest import System, all_lines, run_trainer, start_system, wait_for

pytestmark = pytest.mark.system


def _status(system: System, run_id: str) -> str:
    try:
        return str(system.api(f"/api/runs/{run_id}")["status"])
    except Exception:  # noqa: BLE001 - not stored yet
        return ""


def _series(system: System, run_id: str, name: str) -> list[list[Any]]:
    try:
        return system.api(f"/api/runs/{run_id}/metrics", {"name": name, "points": 10000})["points"]
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return []
        raise


@pytest.fixture(scope="module")
def finished_run(system: System, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 400-step torch run that finished normally, and its ground truth."""
    tag = uuid.uuid4().hex[:8]
    code, truth, output = run_trainer(system, tmp_path_factory.mktemp("trainer"), "--steps", "400", "--tag", tag)
    assert code == 0, output
    run_id = truth["run_id"]
    wait_for(lambda: _status(system, run_id) == "finished", 60, "run status finished")
    expected = len(truth["lines"])
    wait_for(lambda: len(all_lines(system, run_id)) >= expected, 60, "all log lines stored")
    truth["tag"] = tag
    return truth


def test_every_metric_point_arrives_exactly_once_with_exact_values(
    system: System, finished_run: dict[str, Any]
) -> None:
    """Each metric's stored series equals what the trainer logged, point for point."""
    run_id = finished_run["run_id"]
    for name, points in finished_run["metrics"].items():
        stored = wait_for(
            lambda n=name, p=points: (s := _series(system, run_id, n)) and len(s) >= len(p) and s, 30, f"metric {name}"
        )
        assert stored == points, name


def test_every_line_arrives_exactly_once_in_order_with_level_and_stream(
    system: System, finished_run: dict[str, Any]
) -> None:
    """The run's log equals the lines printed and logged, in order, with level and stream."""
    stored = all_lines(system, finished_run["run_id"])
    got = [(ln["line"], ln["level"], ln["stream"]) for ln in stored]
    want = [(ln["line"], ln["level"], ln["stream"]) for ln in finished_run["lines"]]
    assert got == want


def test_line_times_are_when_they_were_emitted(system: System, finished_run: dict[str, Any]) -> None:
    """Each stored timestamp lies within the window in which the trainer emitted the line."""
    stored = all_lines(system, finished_run["run_id"])
    for line, truth in zip(stored, finished_run["lines"], strict=True):
        low = format_ns(truth["after"] // 1000 * 1000)
        high = format_ns(truth["before"])
        assert low <= line["ts"] <= high, (line, truth)


def test_keyword_search_returns_exactly_the_matching_lines(system: System, finished_run: dict[str, Any]) -> None:
    """q= finds every line containing the phrase (case-insensitive), and nothing else."""
    for query in ("plateau suspected", "CHECKPOINT SAVED", "step 1", finished_run["tag"]):
        got = [ln["line"] for ln in all_lines(system, finished_run["run_id"], q=query)]
        want = [ln["line"] for ln in finished_run["lines"] if query.lower() in ln["line"].lower()]
        assert got == want and want, query


def test_level_filter_returns_exactly_the_lines_of_that_level(system: System, finished_run: dict[str, Any]) -> None:
    """level=WARNING,ERROR returns those logging records only."""
    got = [ln["line"] for ln in all_lines(system, finished_run["run_id"], level="WARNING,ERROR")]
    want = [ln["line"] for ln in finished_run["lines"] if ln["level"] in ("WARNING", "ERROR")]
    assert got == want and want


def test_time_range_returns_exactly_the_lines_inside_it(system: System, finished_run: dict[str, Any]) -> None:
    """since/until select the lines stored between them, bounds included."""
    stored = all_lines(system, finished_run["run_id"])
    lo, hi = stored[len(stored) // 4]["ts"], stored[len(stored) // 2]["ts"]
    got = all_lines(system, finished_run["run_id"], since=lo, until=hi)
    assert got == [ln for ln in stored if lo <= ln["ts"] <= hi]
    assert len(got) >= 2


def test_run_list_shows_the_finished_run_with_summary(system: System, finished_run: dict[str, Any]) -> None:
    """The run table has status, config, duration and last/min/max per metric."""
    runs = system.api("/api/runs", {"project": "system-tests"})["runs"]
    run = next(r for r in runs if r["id"] == finished_run["run_id"])
    assert run["status"] == "finished" and run["config"]["tag"] == finished_run["tag"]
    assert run["duration_s"] > 0
    losses = [v for _, v in finished_run["metrics"]["loss"]]
    assert run["summary"]["loss"] == {"last": losses[-1], "min": min(losses), "max": max(losses)}


def test_failing_script_is_failed_with_its_traceback_logged(system: System, tmp_path: Path) -> None:
    """An uncaught exception marks the run failed and stores the traceback lines."""
    tag = uuid.uuid4().hex[:8]
    code, truth, output = run_trainer(system, tmp_path, "--steps", "200", "--fail-at", "120", "--tag", tag)
    assert code != 0, output
    run_id = truth["run_id"]
    wait_for(lambda: _status(system, run_id) == "failed", 60, "run status failed")
    lines = wait_for(
        lambda: (ls := all_lines(system, run_id, q=f"boom at step 120 {tag}")) and ls, 30, "the exception line"
    )
    assert any(f"RuntimeError: boom at step 120 {tag}" in ln["line"] for ln in lines)
    tb = all_lines(system, run_id, q="Traceback (most recent call last)")
    assert tb and tb[0]["stream"] == "stderr"


async def _produce(bootstrap: str, topic: str, values: list[bytes], key: bytes) -> None:
    producer = kafka.make_producer(bootstrap)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def _batch(run_id: str, seq: int, records: list[Any]) -> bytes:
    return wire.encode(
        wire.Envelope(
            kind="logs",
            producer=f"raw-{run_id}",
            seq=seq,
            run=run_id,
            node="manual",
            rank=0,
            sent_ns=time.time_ns(),
            records=records,
        )
    )


def test_garbage_and_malformed_batches_go_to_dlq_and_good_ones_are_stored(system: System) -> None:
    """Bad bytes and bad records end in dlq with a reason; good batches around them are stored."""
    run_id = f"dlq-{uuid.uuid4().hex[:8]}"
    now = time.time_ns()
    good1 = _batch(run_id, 0, [{"ts_ns": now, "line": "good line one"}])
    garbage = b"\x93\x01garbage-" + run_id.encode()
    mixed = _batch(
        run_id,
        1,
        [
            {"ts_ns": now + 1, "line": "good line two"},
            {"ts_ns": "yesterday", "line": "bad ts " + run_id},
            {"ts_ns": now + 2, "line": "good line three"},
        ],
    )
    good2 = _batch(run_id, 2, [{"ts_ns": now + 3, "line": "good line four"}])
    asyncio.run(_produce(system.kafka, "runstream.logs", [good1, garbage, mixed, good2], run_id.encode()))
    lines = wait_for(lambda: (ls := all_lines(system, run_id)) and len(ls) >= 4 and ls, 60, "good lines")
    assert [ln["line"] for ln in lines] == ["good line one", "good line two", "good line three", "good line four"]

    def dead() -> list[dict[str, Any]]:
        items = system.api("/api/dlq", {"limit": 1000})["items"]
        return [i for i in items if run_id in i["sample"] or i.get("run_id") == run_id]

    items = wait_for(lambda: (d := dead()) and len(d) >= 2 and d, 60, "dead letters")
    reasons = sorted(i["reason"] for i in items)
    assert any("ts_ns" in r for r in reasons) and any("malformed" in r for r in reasons)
    assert all(i["topic"] == "runstream.logs" for i in items)


def test_sigterm_drains_everything_received_into_clickhouse(tmp_path: Path) -> None:
    """Lines acknowledged by the broker before SIGTERM are all stored, counted after a restart."""
    data_dir = tmp_path / "data"
    first = start_system(data_dir)
    try:
        tag = uuid.uuid4().hex[:8]
        code, truth, output = run_trainer(first, tmp_path, "--steps", "1500", "--tag", tag)
        assert code == 0, output
    finally:
        exit_code = first.stop()
    assert exit_code == 0, "".join(first.output)
    second = start_system(data_dir)
    try:
        run_id = truth["run_id"]
        assert len(all_lines(second, run_id)) == len(truth["lines"])
        assert len(_series(second, run_id, "loss")) == 1500
        assert second.api(f"/api/runs/{run_id}")["status"] == "finished"
    finally:
        assert second.stop() == 0


def test_health_needs_no_token_and_other_calls_do(system: System) -> None:
    """Health answers without a token; the run list refuses a wrong one."""
    import urllib.error
    import urllib.request

    with urllib.request.urlopen(f"{system.url}/api/health", timeout=10) as resp:
        assert resp.status == 200
    with pytest.raises(urllib.error.HTTPError) as err:
        system.api("/api/runs", token="wrong")
    assert err.value.code == 401


def test_nan_metric_values_come_back_as_valid_json(system: System) -> None:
    """A NaN logged by a trainer is stored and answered as the string "NaN"."""
    run_id = f"nan-{uuid.uuid4().hex[:8]}"
    now = time.time_ns()
    env = wire.Envelope(
        kind="metrics",
        producer=f"p-{run_id}",
        seq=0,
        run=run_id,
        node="n",
        rank=0,
        sent_ns=now,
        records=[
            {"ts_ns": now, "step": 0, "values": {"loss": 1.0}},
            {"ts_ns": now, "step": 1, "values": {"loss": math.nan}},
            {"ts_ns": now, "step": 2, "values": {"loss": math.inf}},
        ],
    )
    asyncio.run(_produce(system.kafka, "runstream.metrics", [wire.encode(env)], run_id.encode()))
    points = wait_for(lambda: (p := _series(system, run_id, "loss")) and len(p) == 3 and p, 60, "points")
    assert points == [[0, 1.0], [1, "NaN"], [2, "Infinity"]]


def test_embedded_topics_have_one_partition_each(system: System) -> None:
    """``runstream up`` creates every topic and changelog with one partition (its default)."""
    from runstream.embedded import STREAMS_GROUP
    from runstream.topics import Topics, changelog_topics

    names = Topics().all() + changelog_topics(STREAMS_GROUP)
    offsets = asyncio.run(kafka.end_offsets(system.kafka, names))
    per_topic = {name: sorted(tp.partition for tp in offsets if tp.topic == name) for name in names}
    assert per_topic == {name: [0] for name in names}
