"""The logs' full-text index on real chDB: built when parts merge, never changing an answer."""

from __future__ import annotations

import os
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
    paths = store.query_rows(
        "SELECT path FROM system.parts WHERE database = {db:String} AND table = {t:String} AND active",
        {"db": store.database, "t": tables.LOGS},
    )
    return [[f for f in os.listdir(p) if f.startswith("skp_idx_text_idx")] for (p,) in paths]


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
