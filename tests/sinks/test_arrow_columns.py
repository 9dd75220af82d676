"""ColumnBuffer.to_arrow: the shortcut for one-value columns gives the same table as a plain conversion."""

from __future__ import annotations

import pyarrow as pa

from runstream import tables
from sinks.rows import ColumnBuffer
from sinks.schemas import SCHEMAS
from tests.sinks.conftest import envelope, log_records


def _plain(buf: ColumnBuffer, table: str) -> pa.Table:
    schema = SCHEMAS[table]
    cols = buf._columns[table]
    return pa.Table.from_arrays([pa.array(cols[f.name], type=f.type) for f in schema], schema=schema)


def test_one_value_columns_convert_like_a_plain_list_conversion() -> None:
    """Constant stream/level/tags/run columns and varying ones give exactly pa.array's table."""
    buf = ColumnBuffer()
    buf.add_envelope(envelope("logs", log_records(["a", "b", "c"])))
    buf.add_envelope(envelope("logs", log_records(["d", "e"]), rank=3, node="node-1"))
    got = buf.to_arrow(tables.LOGS)
    assert got.equals(_plain(buf, tables.LOGS))
    assert got.column("tags").to_pylist() == [[]] * 5


def test_constant_non_empty_tags_and_mixed_columns_convert_like_a_plain_list_conversion() -> None:
    """The same tags list on every line, and columns that differ per line, convert unchanged."""
    buf = ColumnBuffer()
    levels = ["INFO", "ERROR"]
    records = [dict(r, tags=["oom"], level=lvl) for r, lvl in zip(log_records(["x", "y"]), levels, strict=True)]
    buf.add_envelope(envelope("logs", records))
    got = buf.to_arrow(tables.LOGS)
    assert got.equals(_plain(buf, tables.LOGS))
    assert got.column("tags").to_pylist() == [["oom"], ["oom"]]
