"""Log retention as a deployment setting, applied to the logs TTL by the store on real chDB."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from runstream import tables
from sinks.migrate import apply_log_retention, log_retention_days
from sinks.rows import ColumnBuffer
from sinks.store import Store, open_store
from tests.conftest import scaled
from tests.sinks.conftest import envelope, log_records

DAY_NS = 86_400 * 10**9


def _dsn(path: Path) -> str:
    return f"chdb://{path.resolve()}"


def _wait_mutations(store: Store) -> None:
    """Block until the database's mutations (the TTL recomputation) are done, or fail."""
    deadline = time.monotonic() + scaled(30)
    sql = "SELECT count() FROM system.mutations WHERE database = {db:String} AND NOT is_done"
    while store.query_rows(sql, {"db": store.database})[0][0]:
        assert time.monotonic() < deadline, "TTL mutation did not finish"
        time.sleep(0.05)


def test_logs_are_kept_30_days_by_default(store: Store) -> None:
    """Without a configured retention the logs TTL is the migration's 30 days."""
    assert log_retention_days(store) == 30


def test_configured_retention_becomes_the_logs_ttl(tmp_path: Path) -> None:
    """open_store with log_retention_days=7 sets the TTL to 7 days; opening again changes nothing."""
    db = f"t_{uuid.uuid4().hex[:12]}"
    store = open_store(_dsn(tmp_path), db, log_retention_days=7)
    try:
        assert log_retention_days(store) == 7
        assert apply_log_retention(store, 7) is False
    finally:
        store.close()


def test_retention_is_kept_when_the_setting_is_not_given(tmp_path: Path) -> None:
    """A store opened without the setting keeps the retention configured before (the API server's open)."""
    db = f"t_{uuid.uuid4().hex[:12]}"
    open_store(_dsn(tmp_path), db, log_retention_days=90).close()
    store = open_store(_dsn(tmp_path), db)
    try:
        assert log_retention_days(store) == 90
    finally:
        store.close()


def test_shorter_retention_drops_lines_older_than_it(tmp_path: Path) -> None:
    """Lines 10 days old survive the default 30 days and are gone once retention is 7 days; recent ones stay."""
    db = f"t_{uuid.uuid4().hex[:12]}"
    now_ns = time.time_ns()
    store = open_store(_dsn(tmp_path), db)
    try:
        buf = ColumnBuffer()
        buf.add_envelope(envelope("logs", log_records(["ten days ago"], start_ns=now_ns - 10 * DAY_NS)))
        buf.add_envelope(envelope("logs", log_records(["an hour ago"], start_ns=now_ns - 3600 * 10**9)))
        store.insert_arrow(tables.LOGS, buf.to_arrow(tables.LOGS))
        sql = f"SELECT line FROM {db}.{tables.LOGS} ORDER BY ts"
        assert store.query_rows(sql) == [("ten days ago",), ("an hour ago",)]
    finally:
        store.close()
    store = open_store(_dsn(tmp_path), db, log_retention_days=7)
    try:
        _wait_mutations(store)
        store.command(f"OPTIMIZE TABLE {db}.{tables.LOGS} FINAL")
        assert store.query_rows(sql) == [("an hour ago",)]
    finally:
        store.close()


@pytest.mark.parametrize("days", [0, -1, True])
def test_retention_below_one_day_is_refused(store: Store, days: int) -> None:
    """A retention that is not a whole number of days >= 1 raises ValueError and leaves the TTL alone."""
    with pytest.raises(ValueError):
        apply_log_retention(store, days)
    assert log_retention_days(store) == 30
