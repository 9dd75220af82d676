"""Summaries and rollup charts on edge values (real chDB): negative steps, signed zeros, ±Inf, NaN, ties.

The rollup's low/high and the summary's last are packed integers (migration
008); these series check that what they give is what a scan of the points
gives: ties of equal values go to the lowest step for a low and the highest
for a high, -0.0 and +0.0 compare equal but keep their sign, and the last
value is the one at the highest step, then the latest time.  The charts'
step ranges do not start on a block boundary, so an answer made of raw-point
buckets would differ from the per-block reference.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest

from runstream import tables
from sinks.queries import Queries
from sinks.rows import ColumnBuffer
from sinks.store import Store
from tests.sinks.conftest import BASE_NS, envelope, open_temp_store
from tests.sinks.test_metric_queries import _block_reference

RUN = "edges"

#: A point: (step, value, milliseconds after BASE_NS it was logged at).
Point = tuple[int, float, int]


def _timed(points: list[tuple[int, float]]) -> list[Point]:
    """Points logged 1 ms apart in list order."""
    return [(s, v, i) for i, (s, v) in enumerate(points)]


def _negative_steps() -> list[Point]:
    """Steps -700..599 (blocks -3..2) with ties of equal lows and of equal highs at different steps."""
    values = {s: math.sin(s / 37) for s in range(-700, 600)}
    values[-300] = values[-400] = -5.0  # block -2's low: step -400
    values[-500] = values[-260] = 9.0  # block -2's high: step -260
    values[-10] = values[-200] = -6.0  # block -1's low, and the series' min: step -200
    return _timed(sorted(values.items()))


def _signed_zeros() -> list[Point]:
    """Steps 0..1099 (blocks 0..4): tied zeros of both signs as lows (positive blocks) or highs (negative ones)."""
    values = {s: (1 + s / 1000 if s < 512 else -1 - s / 1000) for s in range(1100)}
    values[10], values[5] = 0.0, -0.0  # block 0's low: (-0.0, 5)
    values[300], values[400] = 0.0, -0.0  # block 1's low: (0.0, 300)
    values[600], values[700] = -0.0, 0.0  # block 2's high: (0.0, 700)
    values[800], values[900] = 0.0, -0.0  # block 3's high: (-0.0, 900)
    return _timed(sorted(values.items()))


def _infinities() -> list[Point]:
    """Steps 0..799 (blocks 0..3): tied +Inf highs and -Inf lows, NaN, a block of nearly only +Inf."""
    values = {s: math.cos(s / 20) for s in range(800)}
    values[20] = values[40] = math.inf  # block 0's high: step 40
    values[30] = values[50] = -math.inf  # block 0's low: step 30
    values[300] = values[280] = math.nan  # block 1's first NaN: step 280
    for s in range(512, 768):
        values[s] = math.inf
    values[600] = -1e308
    return _timed(sorted(values.items()))


SERIES: dict[str, list[Point]] = {
    "neg_steps": _negative_steps(),
    "zeros": _signed_zeros(),
    "infs": _infinities(),
    "nan_only": _timed([(s, math.nan) for s in range(1000)]),
    # The highest step twice: the later time wins, whatever the order of the rows.
    "last_tie": [(100, 1.0, 1000), (100, 2.0, 500), (50, 3.0, 9999), (-5, 4.0, 20000)],
    "last_neg": [(-10, 1.5, 0), (-3, 2.5, -50), (-7, 3.5, 100)],
}

#: Chart budgets that make one bucket per rollup block.
BUDGETS = {"neg_steps": 12, "zeros": 10, "infs": 12, "nan_only": 12}


def insert_series(store: Store, series: dict[str, list[Point]], run: str = RUN) -> None:
    """Store every series of ``series`` under ``run``, and a start event for the run list."""
    buf = ColumnBuffer()
    for name, points in series.items():
        recs = [{"ts_ns": BASE_NS + ms * 1_000_000, "step": s, "values": {name: v}} for s, v, ms in points]
        buf.add_envelope(envelope("metrics", recs, run=run))
    buf.add_envelope(envelope("runs", [{"ts_ns": BASE_NS, "event": "start", "project": "edges"}], run=run))
    for table in buf.tables():
        store.insert_arrow(table, buf.to_arrow(table))


def summary_reference(points: list[Point]) -> dict[str, Any]:
    """What the run list must say of a series: last at the highest (step, time); min/max without NaN."""
    finite = [v for _, v, _ in points if not math.isnan(v)]
    last = max(points, key=lambda p: (p[0], p[2]))[1]

    def number(x: float | None) -> Any:
        if x is None or math.isfinite(x):
            return x
        return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")

    return {
        "last": number(last),
        "min": number(min(finite)) if finite else None,
        "max": number(max(finite)) if finite else None,
    }


def chart_reference(name: str) -> list[list[Any]]:
    """The coarse chart a scan of the series' points gives, one bucket per block."""
    return _block_reference([(s, v) for s, v, _ in SERIES[name]], BUDGETS[name])


def signed(points: list[list[Any]]) -> str:
    """Points as JSON text, where -0.0 and 0.0 differ (they compare equal as floats)."""
    return json.dumps(points)


@pytest.fixture(scope="module")
def queries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Queries]:
    store = open_temp_store(tmp_path_factory.mktemp("edges"))
    try:
        insert_series(store, SERIES)
        yield Queries(store)
    finally:
        store.close()


def _summary(queries: Queries) -> dict[str, Any]:
    (run,) = [r for r in queries.list_runs(project="edges") if r["id"] == RUN]
    summary: dict[str, Any] = run["summary"]
    return summary


def test_summary_last_is_at_the_highest_step_then_the_latest_time(queries: Queries) -> None:
    """last is the value at the highest step (negative steps too), and of two rows at that step the later one."""
    summary = _summary(queries)
    assert summary["last_tie"]["last"] == 1.0
    assert summary["last_neg"]["last"] == 2.5


def test_summary_of_a_nan_only_series_has_last_nan_and_no_min_or_max(queries: Queries) -> None:
    """A series of only NaN summarises as last NaN, min and max None."""
    assert _summary(queries)["nan_only"] == {"last": "NaN", "min": None, "max": None}


def test_every_summary_equals_a_scan_of_its_points(queries: Queries) -> None:
    """Each edge series' last, min and max (±Inf included) are what a scan of its points gives."""
    assert _summary(queries) == {name: summary_reference(points) for name, points in SERIES.items()}


def test_chart_with_negative_steps_breaks_ties_by_step(queries: Queries) -> None:
    """Negative steps: each block's tied lows give the lowest step, tied highs the highest."""
    got = queries.metric_series(RUN, "neg_steps", points=BUDGETS["neg_steps"])
    assert got["downsampled"] is True
    assert [-400, -5.0] in got["points"] and [-260, 9.0] in got["points"] and [-200, -6.0] in got["points"]
    assert signed(got["points"]) == signed(chart_reference("neg_steps"))


def test_chart_keeps_the_sign_of_the_zero_at_the_tied_step(queries: Queries) -> None:
    """-0.0 and +0.0 tie as equal values; the point at the winning step comes back with its own sign."""
    got = queries.metric_series(RUN, "zeros", points=BUDGETS["zeros"])
    text = signed(got["points"])
    for pair in ([5, -0.0], [300, 0.0], [700, 0.0], [900, -0.0]):
        assert signed([pair])[1:-1] in text
    assert text == signed(chart_reference("zeros"))


def test_chart_keeps_tied_infinities_and_the_first_nan(queries: Queries) -> None:
    """Tied +Inf highs give the highest step, tied -Inf lows the lowest, a block's first NaN its lowest step."""
    got = queries.metric_series(RUN, "infs", points=BUDGETS["infs"])
    assert [40, "Infinity"] in got["points"] and [30, "-Infinity"] in got["points"] and [280, "NaN"] in got["points"]
    assert got["points"] == chart_reference("infs")


def test_chart_of_a_nan_only_series_is_each_blocks_first_nan(queries: Queries) -> None:
    """A NaN-only series charts as the first NaN of each bucket of blocks, nothing else."""
    got = queries.metric_series(RUN, "nan_only", points=BUDGETS["nan_only"])
    assert got["points"] == [[0, "NaN"], [256, "NaN"], [512, "NaN"], [768, "NaN"]]


def test_time_ranged_chart_with_negative_steps_equals_a_scan(queries: Queries) -> None:
    """A time range cutting through blocks of negative steps gives the low, high and first NaN of its points."""
    since_ms, until_ms = 150, 1100  # steps -550..400: cuts blocks -3 and 1
    expected = [(s, v) for s, v, ms in SERIES["neg_steps"] if since_ms <= ms <= until_ms]
    got = queries.metric_series(
        RUN, "neg_steps", points=10, since_ns=BASE_NS + since_ms * 1_000_000, until_ns=BASE_NS + until_ms * 1_000_000
    )
    assert got["total"] == len(expected) and got["downsampled"] is True
    assert signed(got["points"]) == signed(_block_reference(expected, 10))


def test_ties_stored_by_a_later_insert_merge_as_a_scan_would(queries: Queries) -> None:
    """A later insert into rolled-up blocks: a tie at a lower step takes the low, one at a higher step does not."""
    more: list[Point] = [(-450, -5.0, 5000), (-1, -6.0, 5001)]
    insert_series(queries.store, {"neg_steps": SERIES["neg_steps"]}, run="edges-2")
    insert_series(queries.store, {"neg_steps": more}, run="edges-2")
    points = [(s, v) for s, v, _ in SERIES["neg_steps"] + more]
    got = queries.metric_series("edges-2", "neg_steps", points=12)
    assert [-450, -5.0] in got["points"] and [-200, -6.0] in got["points"]
    assert signed(got["points"]) == signed(_block_reference(points, 12))


def test_metrics_table_holds_every_edge_point(queries: Queries) -> None:
    """The edge series are stored whole (so the checks above are over every point)."""
    rows = queries.store.query_rows(
        f"SELECT name, count() FROM {queries.store.database}.{tables.METRICS} "
        "WHERE run_id = {run:String} GROUP BY name",
        {"run": RUN},
    )
    counts = dict(rows)
    assert {name: counts[name] for name in SERIES} == {name: len(points) for name, points in SERIES.items()}
