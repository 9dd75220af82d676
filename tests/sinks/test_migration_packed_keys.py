"""Migration 008 (packed summary and rollup keys) on a store with data, on real chDB: the same answers after it.

Its own module, as test_metric_rollup: chDB holds one data directory per
process, and the store here is migrated up to 007, given points, then
migrated to 008 while no other store is open.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from sinks.metric_views import rollup_point
from sinks.migrate import MIGRATIONS_DIR, discover, migrate
from sinks.queries import Queries
from sinks.store import Store
from tests.sinks.test_metric_edges import BUDGETS, RUN, SERIES, chart_reference, insert_series, summary_reference

#: The per-block rows of the rollup as schema 007 stored them ((value, step) tuples).
_BLOCKS_007 = (
    "SELECT name, block, minIfMerge(low), maxIfMerge(high), minIfMerge(nan_step), sum(finite), sum(nans), "
    "min(first_ts), max(last_ts) FROM {db}.metric_rollup GROUP BY name, block ORDER BY name, block"
)
#: The same rows from schema 008's packed keys, decoded as the chart queries decode them.
_BLOCKS_008 = (
    f"SELECT name, block, {rollup_point('minIfMerge(low)')}, {rollup_point('maxIfMerge(high)')}, "
    "minIfMerge(nan_step), sum(finite), sum(nans), min(first_ts), max(last_ts) "
    "FROM {db}.metric_rollup GROUP BY name, block ORDER BY name, block"
)


@dataclass(frozen=True)
class Migrated:
    """A store migrated to 008 over data, and what it answered at 007."""

    queries: Queries
    applied: list[int]
    summary_007: dict[str, Any]
    blocks_007: str


def _summary(queries: Queries) -> dict[str, Any]:
    (run,) = [r for r in queries.list_runs(project="edges") if r["id"] == RUN]
    summary: dict[str, Any] = run["summary"]
    return summary


def _blocks(store: Store, sql: str) -> str:
    """Rollup rows as JSON text, so -0.0 and 0.0 differ; no low or high where a block has no finite point."""
    out = []
    rows = store.query_rows(sql.replace("{db}", store.database))
    for name, block, low, high, s_nan, finite, nans, first, last in rows:
        extremes = [low, high] if finite else [None, None]  # a state that saw no row holds the type's default
        out.append([name, block, *extremes, s_nan if nans else None, finite, nans, str(first), str(last)])
    return json.dumps(out)


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Migrated]:
    tmp = tmp_path_factory.mktemp("mig008")
    early = tmp / "early"
    early.mkdir()
    for path in MIGRATIONS_DIR.iterdir():
        if path.name < "008":
            (early / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    store = Store(f"chdb://{(tmp / 'ch').resolve()}", f"t_{uuid.uuid4().hex[:12]}")
    try:
        migrate(store, early)
        insert_series(store, SERIES)
        queries = Queries(store)
        summary, blocks = _summary(queries), _blocks(store, _BLOCKS_007)
        yield Migrated(queries, migrate(store), summary, blocks)
    finally:
        store.close()


def test_only_migrations_after_007_are_applied_on_a_store_at_007(migrated: Migrated) -> None:
    """A store migrated up to 007 gets exactly 008 and the later migrations on the next start."""
    assert migrated.applied == [m.version for m in discover() if m.version >= 8]
    assert migrated.applied[0] == 8


def test_run_summaries_are_the_same_after_migration_008(migrated: Migrated) -> None:
    """Last, min and max of points stored before 008 are what they were at 007 (and what a scan gives)."""
    after = _summary(migrated.queries)
    assert json.dumps(after) == json.dumps(migrated.summary_007)
    assert after == {name: summary_reference(points) for name, points in SERIES.items()}


def test_rollup_blocks_are_the_same_after_migration_008(migrated: Migrated) -> None:
    """Every block's low and high (value with its sign, step), first NaN, counts and times are what 007 stored."""
    after = _blocks(migrated.queries.store, _BLOCKS_008)
    assert len(json.loads(after)) > 10
    assert after == migrated.blocks_007


@pytest.mark.parametrize("name", sorted(BUDGETS))
def test_coarse_charts_of_points_stored_before_008_equal_a_scan(migrated: Migrated, name: str) -> None:
    """Charts made from the backfilled rollup give each block's exact low, high and first NaN."""
    got = migrated.queries.metric_series(RUN, name, points=BUDGETS[name])
    assert got["downsampled"] is True
    assert json.dumps(got["points"]) == json.dumps(chart_reference(name))
