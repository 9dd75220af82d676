"""The metric rollup (migration 003) on real chDB: it also covers points stored before it existed.

Its own module: chDB holds one data directory per process, and this test
needs a store migrated in two steps while no other store is open.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from sinks.migrate import MIGRATIONS_DIR, migrate
from sinks.queries import Queries
from sinks.store import Store
from tests.sinks.test_metric_queries import SERIES, _block_reference, _insert_metrics


def test_rollup_covers_points_stored_before_its_migration(tmp_path: Path) -> None:
    """Points inserted before migration 003 are in the rollup, so a coarse chart still keeps their extremes."""
    early = tmp_path / "early"
    early.mkdir()
    for path in MIGRATIONS_DIR.iterdir():
        if path.name < "003":
            (early / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    store = Store(f"chdb://{(tmp_path / 'ch').resolve()}", f"t_{uuid.uuid4().hex[:12]}")
    try:
        migrate(store, early)
        _insert_metrics(store, "old", "loss", SERIES)
        assert 3 in migrate(store)
        got = Queries(store).metric_series("old", "loss", points=100)
        assert got["points"] == _block_reference(SERIES, 100)
    finally:
        store.close()
