"""Migration 006 (log text and line stored LZ4) on a data directory made before it, on real chDB.

Its own module, as test_metric_rollup: the store is migrated in two steps
while no other store is open (chDB holds one data directory per process).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from runstream import tables
from sinks.migrate import MIGRATIONS_DIR, migrate
from sinks.queries import Queries
from sinks.rows import ColumnBuffer
from sinks.store import Store
from tests.sinks.conftest import BASE_NS, envelope, log_records

ANSI_LINE = "\x1b[31mCUDA error: out of memory\x1b[0m on rank 3"
LINES = ["step 1 loss=2.5", ANSI_LINE, "NCCL WARN timeout", "step 2 loss=2.4"]


def _codecs(store: Store) -> dict[str, str]:
    rows = store.query_rows(
        "SELECT name, compression_codec FROM system.columns "
        "WHERE database = {db:String} AND table = {t:String} AND name IN ('line', 'text')",
        {"db": store.database, "t": tables.LOGS},
    )
    return dict(rows)


def _insert(store: Store, lines: list[str], start_ns: int) -> None:
    buf = ColumnBuffer()
    buf.add_envelope(envelope("logs", log_records(lines, start_ns=start_ns)))
    store.insert_arrow(tables.LOGS, buf.to_arrow(tables.LOGS))


def test_upgrade_stores_log_text_lz4_and_keeps_every_answer(tmp_path: Path) -> None:
    """Lines stored before 006 and after it are found alike; new parts and merges write LZ4, no mutation runs."""
    early = tmp_path / "early"
    early.mkdir()
    for path in MIGRATIONS_DIR.iterdir():
        if path.name < "006":
            (early / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    store = Store(f"chdb://{(tmp_path / 'ch').resolve()}", f"t_{uuid.uuid4().hex[:12]}")
    try:
        migrate(store, early)
        assert _codecs(store) == {"line": "CODEC(ZSTD(1))", "text": "CODEC(ZSTD(1))"}
        _insert(store, LINES, BASE_NS)
        assert 6 in migrate(store)
        assert _codecs(store) == {"line": "CODEC(LZ4)", "text": "CODEC(LZ4)"}
        mutations = store.query_rows(
            "SELECT count() FROM system.mutations WHERE database = {db:String}", {"db": store.database}
        )
        assert mutations == [(0,)]
        _insert(store, LINES, BASE_NS + 10**9)
        queries = Queries(store)

        def found(**filters: Any) -> list[str]:
            return [ln["line"] for ln in queries.search_logs("run-1", limit=100, **filters)["lines"]]

        before_merge = {q: found(q=q) for q in ("loss", "error: out of", "nccl")}
        store.command(f"OPTIMIZE TABLE {store.database}.{tables.LOGS} FINAL")
        # The ANSI line is found by its text without escapes: `text` is still materialized the same way.
        assert before_merge == {
            "loss": [LINES[0], LINES[3]] * 2,
            "error: out of": [ANSI_LINE] * 2,
            "nccl": [LINES[2]] * 2,
        }
        assert {q: found(q=q) for q in before_merge} == before_merge
        assert found(regex="^CUDA error") == [ANSI_LINE] * 2
    finally:
        store.close()
