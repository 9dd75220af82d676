"""The metric and resource fast path (whole columns per pass) stores what the per-record path stores."""

from __future__ import annotations

from typing import Any

from runstream import tables
from sinks.rows import ColumnBuffer
from tests.sinks.conftest import BASE_NS, envelope, plain


def _mixed() -> list[dict[str, Any]]:
    """Records of one, several and no values; steps missing or None; int and float values; some with a source."""
    records: list[dict[str, Any]] = []
    for i in range(30):
        values = {f"m{j}": (i + j if j % 2 else 0.5 * i) for j in range(i % 4)}
        record: dict[str, Any] = {"ts_ns": BASE_NS + i * 1000, "values": values, "i": i}
        if i % 5:
            record["step"] = None if i % 7 == 0 else i
        if i % 3 == 0:
            record["source"] = "log"
        records.append(record)
    return records


def test_mixed_metric_records_store_the_rows_of_the_per_record_path() -> None:
    """Mixed value counts, steps and sources give the rows the per-record path gives (forced by one bad record)."""
    records = _mixed()
    fast, slow = ColumnBuffer(), ColumnBuffer()
    fast.add_envelope(envelope("metrics", records, seq=1))
    slow.add_envelope(envelope("metrics", [*records, {"ts_ns": BASE_NS, "values": {"x": "bad"}, "i": 99}], seq=1))
    assert fast.rows_in(tables.DEAD_LETTERS) == 0 and slow.rows_in(tables.DEAD_LETTERS) == 1
    assert fast.rows_in(tables.METRICS) == sum(len(r["values"]) for r in records)
    assert plain(slow.to_arrow(tables.METRICS)).equals(plain(fast.to_arrow(tables.METRICS)))


def test_mixed_resource_records_store_the_rows_of_the_per_record_path() -> None:
    """Resource records of one, several and no values give the rows the per-record path gives."""
    records = [
        {"ts_ns": BASE_NS + i, "device": f"gpu{i % 2}", "values": {f"v{j}": float(j) for j in range(i % 3)}, "i": i}
        for i in range(12)
    ]
    fast, slow = ColumnBuffer(), ColumnBuffer()
    fast.add_envelope(envelope("resources", records, seq=1))
    slow.add_envelope(
        envelope("resources", [*records, {"ts_ns": BASE_NS, "device": 3, "values": {"v": 1.0}, "i": 0}], seq=1)
    )
    assert slow.rows_in(tables.DEAD_LETTERS) == 1
    assert plain(slow.to_arrow(tables.RESOURCES)).equals(plain(fast.to_arrow(tables.RESOURCES)))


def test_record_without_values_adds_no_row_and_no_dead_letter() -> None:
    """A metric record with an empty values map adds nothing, even with a time no column could hold."""
    records = [
        {"ts_ns": BASE_NS, "step": 1, "values": {"loss": 1.0}, "i": 0},
        {"ts_ns": "not a time", "step": 2, "values": {}, "i": 1},
    ]
    buf = ColumnBuffer()
    assert buf.add_envelope(envelope("metrics", records)) == 1
    assert buf.rows_in(tables.DEAD_LETTERS) == 0
