"""The logs' full-text index on real chDB: built when parts merge, never changing an answer."""

from __future__ import annotations

import os
import time
from pathlib import Path

from runstream import tables
from sinks.queries import Queries
from sinks.rows import ColumnBuffer
from sinks.store import Store
from tests.sinks.conftest import BASE_NS, envelope, log_records

TERMS = ("error", "nccl", "out of memory", "Traceback (most recent", "zzqx never here", "rank")


def _real_lines(real_logs_dir: Path, limit: int = 4000) -> list[str]:
    lines: list[str] = []
    for path in sorted(real_logs_dir.iterdir()):
        if path.suffix in (".log", ".out", ".txt"):
            lines += path.read_text(encoding="utf-8", errors="replace").split("\n")
    return [line for line in lines if "\x1b" not in line][:limit]


def _insert(store: Store, lines: list[str], parts: int) -> None:
    size = -(-len(lines) // parts)
    for first in range(0, len(lines), size):
        buf = ColumnBuffer()
        records = log_records(lines[first : first + size], start_ns=BASE_NS + first * 1_000_000)
        buf.add_envelope(envelope("logs", records))
        store.insert_arrow(tables.LOGS, buf.to_arrow(tables.LOGS))


def _text_index_files(store: Store) -> list[list[str]]:
    """For each active logs part, the text index it holds: its files, or for a packed part (all files in one,
    migration 009) the part's skip-index bytes while the table's text index has any; [] when it has none."""
    parts = store.query_rows(
        "SELECT path, part_storage_type, secondary_indices_compressed_bytes FROM system.parts "
        "WHERE database = {db:String} AND table = {t:String} AND active",
        {"db": store.database, "t": tables.LOGS},
    )
    ((text_bytes,),) = store.query_rows(
        "SELECT data_compressed_bytes FROM system.data_skipping_indices "
        "WHERE database = {db:String} AND table = {t:String} AND name = 'text_idx'",
        {"db": store.database, "t": tables.LOGS},
    )
    return [
        [f for f in os.listdir(path) if f.startswith("skp_idx_text_idx")]
        if storage != "Packed"
        else ([f"packed:{index_bytes}"] if index_bytes and text_bytes else [])
        for path, storage, index_bytes in parts
    ]


def test_text_index_is_built_at_merge_not_at_insert(store: Store, real_logs_dir: Path) -> None:
    """Inserted log parts carry no text index; the merge of those parts writes it."""
    _insert(store, _real_lines(real_logs_dir, 2000), parts=2)
    assert _text_index_files(store) == [[], []]
    store.command(f"OPTIMIZE TABLE {store.database}.{tables.LOGS} FINAL")
    merged = _text_index_files(store)
    assert len(merged) == 1 and merged[0]


def test_search_answers_are_the_same_before_and_after_the_index_exists(store: Store, real_logs_dir: Path) -> None:
    """Each term finds exactly the grep -i -F lines, on unindexed parts and on the merged, indexed part."""
    lines = _real_lines(real_logs_dir)
    _insert(store, lines, parts=3)
    queries = Queries(store)

    def found(term: str) -> list[str]:
        return [line["line"] for line in queries.search_logs("run-1", q=term, limit=10_000)["lines"]]

    before = {term: found(term) for term in TERMS}
    store.command(f"OPTIMIZE TABLE {store.database}.{tables.LOGS} FINAL")
    assert all(_text_index_files(store))
    for term in TERMS:
        expected = [line for line in lines if term.lower() in line.lower()]
        assert before[term] == expected and found(term) == expected, term


def test_an_idle_partition_is_merged_so_its_last_parts_get_the_index(store: Store, real_logs_dir: Path) -> None:
    """Parts the merge selector leaves alone (a big one and a small one) are merged, indexed, once idle."""
    table = f"{store.database}.{tables.LOGS}"
    (create,) = store.query_rows(f"SHOW CREATE TABLE {table}")[0]
    assert "min_age_to_force_merge_on_partition_only = 1" in create
    # The deployment waits 30 s of idleness; the test waits 1 s (same mechanism, shorter age).
    store.command(f"ALTER TABLE {table} MODIFY SETTING min_age_to_force_merge_seconds = 1")
    lines = _real_lines(real_logs_dir, 4000)
    day_ns = 86_400 * 10**9
    start_ns = BASE_NS - BASE_NS % day_ns + 3600 * 10**9  # both parts in one daily partition
    for chunk, first_ns in ((lines[:3990], start_ns), (lines[3990:], start_ns + 10**12)):
        buf = ColumnBuffer()
        buf.add_envelope(envelope("logs", log_records(chunk, start_ns=first_ns)))
        store.insert_arrow(tables.LOGS, buf.to_arrow(tables.LOGS))
    deadline = time.monotonic() + 60
    while len(files := _text_index_files(store)) > 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(files) == 1 and files[0]
