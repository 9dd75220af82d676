"""Metric series and summaries on real chDB: downsampling never loses an extreme."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

import pytest

from runstream import tables
from runstream.errors import QueryError
from sinks.queries import Queries, json_number
from sinks.rows import ColumnBuffer
from sinks.store import Store
from tests.sinks.conftest import BASE_NS, envelope, open_temp_store

N = 20_000
SPIKE_STEP = 12_345


def _series() -> list[tuple[int, float]]:
    rng = random.Random(7)
    value, out = 1.0, []
    for step in range(N):
        value += rng.gauss(0, 0.01)
        out.append((step, value))
    out[SPIKE_STEP] = (SPIKE_STEP, 1e9)  # a single-point spike
    out[777] = (777, -1e9)
    out[5000] = (5000, math.nan)
    out[15000] = (15000, math.inf)
    out[15001] = (15001, -math.inf)
    return out


SERIES = _series()


def _insert_metrics(store: Store, run: str, name: str, points: list[tuple[int, float]], rank: int = 0) -> None:
    buf = ColumnBuffer()
    chunk = 5_000
    for start in range(0, len(points), chunk):
        recs = [
            {"ts_ns": BASE_NS + step * 1_000_000, "step": step, "values": {name: v}}
            for step, v in points[start : start + chunk]
        ]
        buf.add_envelope(envelope("metrics", recs, run=run, rank=rank, producer=f"p{rank}"))
    store.insert_arrow(tables.METRICS, buf.to_arrow(tables.METRICS))


@pytest.fixture(scope="module")
def queries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Queries]:
    store = open_temp_store(tmp_path_factory.mktemp("metrics"))
    try:
        _insert_metrics(store, "big", "loss", SERIES)
        _insert_metrics(store, "small", "acc", [(s, s / 10) for s in range(500)])
        _insert_metrics(store, "ranks", "loss", [(s, 1.0) for s in range(3_000)], rank=0)
        _insert_metrics(store, "ranks", "loss", [(s, 1.0) for s in range(3_000)], rank=1)
        _insert_metrics(store, "ranks", "grad", [(0, math.nan), (1, math.nan)])
        yield Queries(store)
    finally:
        store.close()


def _buckets(points: list[tuple[int, float]], budget: int) -> dict[int, list[tuple[int, float]]]:
    has_nan = any(math.isnan(v) for _, v in points)
    nb = budget // 3 if has_nan else budget // 2
    lo, hi = min(s for s, _ in points), max(s for s, _ in points)
    out: dict[int, list[tuple[int, float]]] = {}
    for s, v in points:
        out.setdefault((s - lo) * nb // (hi - lo + 1), []).append((s, v))
    return out


def _as_json(points: list[tuple[int, float]]) -> list[list[Any]]:
    return [[s, json_number(v)] for s, v in points]


@pytest.mark.parametrize("budget", [1000, 301, 3])
def test_downsampling_keeps_every_bucket_extreme(queries: Queries, budget: int) -> None:
    """Each bucket's lowest and highest value and its NaN appear; at most `points` come back."""
    got = queries.metric_series("big", "loss", points=budget)
    assert got["downsampled"] is True and got["total"] == N
    assert 0 < len(got["points"]) <= budget
    steps = [p[0] for p in got["points"]]
    assert steps == sorted(steps)
    returned = {(s, str(v)) for s, v in got["points"]}
    for bucket in _buckets(SERIES, budget).values():
        finite = [(s, v) for s, v in bucket if not math.isnan(v)]
        low = min(v for _, v in finite)
        high = max(v for _, v in finite)
        assert any(
            str(json_number(v)) == str(json_number(low)) and (s, str(json_number(v))) in returned for s, v in finite
        )
        assert any((s, str(json_number(v))) in returned for s, v in finite if v == high)
        if len(finite) < len(bucket):
            assert any(v == "NaN" for s, v in got["points"] if s in {s for s, _ in bucket})


def test_downsampling_keeps_single_point_spikes_and_nonfinite_values(queries: Queries) -> None:
    """The one-point spikes, NaN, +Inf and -Inf all survive a 1M:1000-like reduction."""
    points = queries.metric_series("big", "loss", points=100)["points"]
    assert [SPIKE_STEP, 1e9] in points and [777, -1e9] in points
    assert [5000, "NaN"] in points and [15000, "Infinity"] in points and [15001, "-Infinity"] in points


def test_all_points_in_step_order_when_there_are_few(queries: Queries) -> None:
    """A series shorter than `points` comes back whole and in step order."""
    got = queries.metric_series("small", "acc", points=1000)
    assert got == {
        "name": "acc",
        "points": [[s, s / 10] for s in range(500)],
        "total": 500,
        "downsampled": False,
    }


def test_series_time_range_filters_points(queries: Queries) -> None:
    """since/until (inclusive) keep only points logged in that time range."""
    got = queries.metric_series("small", "acc", since_ns=BASE_NS + 100 * 1_000_000, until_ns=BASE_NS + 199 * 1_000_000)
    assert [p[0] for p in got["points"]] == list(range(100, 200))


def test_identical_extremes_from_two_ranks_are_reported_once(queries: Queries) -> None:
    """Two ranks logging the same value at the same step do not double the answer."""
    got = queries.metric_series("ranks", "loss", points=100)
    assert got["total"] == 6_000 and len(got["points"]) <= 100
    assert len({tuple(p) for p in got["points"]}) == len(got["points"])


def test_points_outside_the_allowed_range_are_refused(queries: Queries) -> None:
    """points below 3 is a QueryError that says the range."""
    with pytest.raises(QueryError, match="points must be between 3"):
        queries.metric_series("big", "loss", points=2)


def test_unknown_series_is_empty(queries: Queries) -> None:
    """A metric that does not exist answers no points, total 0."""
    assert queries.metric_series("big", "nope") == {
        "name": "nope",
        "points": [],
        "total": 0,
        "downsampled": False,
    }


def test_metric_names_are_sorted_and_distinct(queries: Queries) -> None:
    """metric_names lists each of a run's metrics once, sorted."""
    assert queries.metric_names("ranks") == ["grad", "loss"]


def test_summary_last_min_max_ignore_nan(queries: Queries) -> None:
    """Summary last is the value at the highest step; min/max skip NaN (None when only NaN)."""
    queries.store.command(
        f"INSERT INTO {queries.store.database}.run_events (run_id, ts, event, project) "
        "SELECT arrayJoin(['big', 'ranks']), now64(6), 'start', 'sum'"
    )
    runs = {r["id"]: r for r in queries.list_runs(project="sum")}
    assert runs["big"]["summary"]["loss"] == {
        "last": SERIES[-1][1],
        "min": "-Infinity",
        "max": "Infinity",
    }
    assert runs["ranks"]["summary"]["grad"] == {"last": "NaN", "min": None, "max": None}


def _block_reference(points: list[tuple[int, float]], budget: int) -> list[list[Any]]:
    """What the rollup path must answer: buckets of whole 256-step blocks, each its low, high and first NaN."""
    nb = budget // 3 if any(math.isnan(v) for _, v in points) else budget // 2
    lo_block = min(s for s, _ in points) >> 8
    blocks = (max(s for s, _ in points) >> 8) - lo_block + 1
    per_bucket = -(-blocks // nb)
    buckets: dict[int, list[tuple[int, float]]] = {}
    for s, v in points:
        buckets.setdefault(((s >> 8) - lo_block) // per_bucket, []).append((s, v))
    out: list[list[Any]] = []
    for key in sorted(buckets):
        finite = [(v, s) for s, v in buckets[key] if not math.isnan(v)]
        picked = [min(finite)[::-1], max(finite)[::-1]] if finite else []
        nans = [s for s, v in buckets[key] if math.isnan(v)]
        if nans:
            picked.append((min(nans), math.nan))
        for s, v in sorted(picked, key=lambda p: p[0]):
            if [s, json_number(v)] not in out[-3:]:
                out.append([s, json_number(v)])
    return out


@pytest.mark.parametrize("budget", [100, 30, 3])
def test_coarse_whole_run_chart_is_made_of_whole_rollup_blocks(queries: Queries, budget: int) -> None:
    """A coarse whole-run chart gives, per bucket of whole 256-step blocks, exactly its low, high and first NaN."""
    got = queries.metric_series("big", "loss", points=budget)
    assert got["total"] == N and got["downsampled"] is True
    assert got["points"] == _block_reference(SERIES, budget)
    assert len(got["points"]) <= budget


def _in_range(points: list[tuple[int, float]], since_ns: int | None, until_ns: int | None) -> list[tuple[int, float]]:
    """The points of SERIES-like data (step s logged at BASE_NS + s ms) in a time range, as a scan finds them."""
    return [
        (s, v)
        for s, v in points
        if (since_ns is None or BASE_NS + s * 1_000_000 >= since_ns)
        and (until_ns is None or BASE_NS + s * 1_000_000 <= until_ns)
    ]


@pytest.mark.parametrize("budget", [100, 30])
@pytest.mark.parametrize(
    ("since_ms", "until_ms"),
    [(1000.3, 17777.6), (1000.3, None), (None, 17777.6), (0, 19_999)],
    ids=["both-bounds", "since-only", "until-only", "whole-run-as-range"],
)
def test_time_ranged_coarse_chart_equals_a_scan_of_the_range(
    queries: Queries, budget: int, since_ms: float | None, until_ms: float | None
) -> None:
    """With since/until, each bucket of whole blocks gives exactly the low, high and first NaN of its points."""
    since_ns = None if since_ms is None else BASE_NS + int(since_ms * 1_000_000)
    until_ns = None if until_ms is None else BASE_NS + int(until_ms * 1_000_000)
    expected = _in_range(SERIES, since_ns, until_ns)
    got = queries.metric_series("big", "loss", points=budget, since_ns=since_ns, until_ns=until_ns)
    assert got["total"] == len(expected) and got["downsampled"] is True
    assert got["points"] == _block_reference(expected, budget)


def test_time_ranged_chart_of_steps_logged_again_later_equals_a_scan(queries: Queries) -> None:
    """A run resumed from a checkpoint logs steps 5000.. again later: a range over the second pass is still exact."""
    first = [(s, math.sin(s / 50)) for s in range(10_000)]
    again = [(s, 2 + math.cos(s / 70)) for s in range(5_000, 15_000)]
    again[1234] = (again[1234][0], -7.0)  # the resumed pass's own extreme
    later_ns = BASE_NS + 20_000 * 1_000_000
    buf = ColumnBuffer()
    for offset_ns, points in ((BASE_NS, first), (later_ns, again)):
        recs = [
            {"ts_ns": offset_ns + i * 1_000_000, "step": s, "values": {"loss": v}} for i, (s, v) in enumerate(points)
        ]
        for start in range(0, len(recs), 5_000):
            buf.add_envelope(envelope("metrics", recs[start : start + 5_000], run="resumed"))
    queries.store.insert_arrow(tables.METRICS, buf.to_arrow(tables.METRICS))
    since_ns = later_ns + 777 * 1_000_000 + 1
    expected = [p for i, p in enumerate(again) if later_ns + i * 1_000_000 >= since_ns]
    got = queries.metric_series("resumed", "loss", points=60, since_ns=since_ns)
    assert got["total"] == len(expected)
    assert got["points"] == _block_reference(expected, 60)
