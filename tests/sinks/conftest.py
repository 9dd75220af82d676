"""Fixtures for the sink: real chDB stores in temporary directories, envelope builders.

chDB holds one data directory per process at a time, so every store fixture
closes its store when its test (or module) is done.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from runstream import wire
from sinks.store import Store, open_store

#: A recent time (TTL drops rows older than the retention), whole seconds.
BASE_NS = (time.time_ns() // 1_000_000_000 - 3 * 3600) * 1_000_000_000

_seq = itertools.count()


def open_temp_store(directory: Path) -> Store:
    """A migrated store in ``directory`` with a database name unique to the caller."""
    return open_store(f"chdb://{directory.resolve()}", f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A fresh, migrated store for one test."""
    s = open_temp_store(tmp_path / "ch")
    try:
        yield s
    finally:
        s.close()


def envelope(
    kind: str,
    records: list[dict[str, Any]],
    *,
    run: str = "run-1",
    node: str = "node-0",
    rank: int = 0,
    producer: str = "prod-a",
    seq: int | None = None,
    ingest_ns: int | None = None,
) -> wire.Envelope:
    """A clean envelope: each record gets ``"i"``, its index, unless it has one."""
    recs = [dict(r, i=r.get("i", i)) for i, r in enumerate(records)]
    return wire.Envelope(
        kind=kind,
        producer=producer,
        seq=next(_seq) if seq is None else seq,
        run=run,
        node=node,
        rank=rank,
        sent_ns=BASE_NS,
        records=recs,
        ingest_ns=BASE_NS + 1_000 if ingest_ns is None else ingest_ns,
    )


def log_records(
    lines: list[str],
    *,
    start_ns: int = BASE_NS,
    step_ns: int = 1_000_000,
    level: str = "",
    stream: str = "stdout",
) -> list[dict[str, Any]]:
    """Log records, one per line, ``step_ns`` apart."""
    return [
        {
            "ts_ns": start_ns + i * step_ns,
            "line": line,
            "stream": stream,
            "level": level,
            "logger": "",
        }
        for i, line in enumerate(lines)
    ]


def plain(table: pa.Table) -> pa.Table:
    """``table`` with its dictionary-encoded columns decoded (``ColumnBuffer.to_arrow`` sends some so)."""
    columns = [c.cast(c.type.value_type) if pa.types.is_dictionary(c.type) else c for c in table.columns]
    return pa.table(columns, names=table.column_names)
