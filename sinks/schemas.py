"""Arrow schemas of the tables the sink writes (column types as in ``sinks/migrations``)."""

from __future__ import annotations

import pyarrow as pa

from runstream import tables

_TS = pa.timestamp("us", tz="UTC")
_STR = pa.string()

#: Arrow schema of every table the sink writes, column order as in the migrations.
SCHEMAS: dict[str, pa.Schema] = {
    tables.RUN_EVENTS: pa.schema(
        [
            ("run_id", _STR),
            ("ts", _TS),
            ("event", _STR),
            ("project", _STR),
            ("name", _STR),
            ("node", _STR),
            ("rank", pa.int32()),
            ("status", _STR),
            ("exit_code", pa.int32()),
            ("reason", _STR),
            ("config", _STR),
            ("tags", pa.list_(_STR)),
            ("host", _STR),
            ("pid", pa.uint32()),
            ("world_size", pa.uint32()),
            ("argv", pa.list_(_STR)),
            ("producer", _STR),
            ("seq", pa.uint64()),
            ("idx", pa.uint32()),
            ("ingest_ts", _TS),
        ]
    ),
    tables.METRICS: pa.schema(
        [
            ("run_id", _STR),
            ("name", _STR),
            ("step", pa.int64()),
            ("ts", _TS),
            ("value", pa.float64()),
            ("source", _STR),
            ("node", _STR),
            ("rank", pa.int32()),
            ("producer", _STR),
            ("seq", pa.uint64()),
            ("idx", pa.uint32()),
            ("sub", pa.uint16()),
            ("ingest_ts", _TS),
        ]
    ),
    tables.LOGS: pa.schema(
        [
            ("run_id", _STR),
            ("ts", _TS),
            ("node", _STR),
            ("rank", pa.int32()),
            ("stream", _STR),
            ("level", _STR),
            ("logger", _STR),
            ("line", _STR),
            ("tags", pa.list_(_STR)),
            ("group", _STR),
            ("orig_bytes", pa.uint32()),
            ("producer", _STR),
            ("seq", pa.uint64()),
            ("idx", pa.uint32()),
            ("ingest_ts", _TS),
        ]
    ),
    tables.RESOURCES: pa.schema(
        [
            ("run_id", _STR),
            ("ts", _TS),
            ("node", _STR),
            ("rank", pa.int32()),
            ("device", _STR),
            ("name", _STR),
            ("value", pa.float64()),
            ("producer", _STR),
            ("seq", pa.uint64()),
            ("idx", pa.uint32()),
            ("sub", pa.uint16()),
            ("ingest_ts", _TS),
        ]
    ),
    tables.EVALS: pa.schema(
        [
            ("run_id", _STR),
            ("ts", _TS),
            ("node", _STR),
            ("rank", pa.int32()),
            ("name", _STR),
            ("type", _STR),
            ("data", _STR),
            ("producer", _STR),
            ("seq", pa.uint64()),
            ("idx", pa.uint32()),
            ("ingest_ts", _TS),
        ]
    ),
    tables.ALERTS: pa.schema(
        [
            ("run_id", _STR),
            ("key", _STR),
            ("ts", _TS),
            ("kind", _STR),
            ("severity", _STR),
            ("message", _STR),
            ("node", _STR),
            ("rank", pa.int32()),
            ("metric", _STR),
            ("value", pa.float64()),
            ("producer", _STR),
            ("seq", pa.uint64()),
            ("idx", pa.uint32()),
            ("ingest_ts", _TS),
        ]
    ),
    tables.DEAD_LETTERS: pa.schema(
        [
            ("ts", _TS),
            ("topic", _STR),
            ("partition", pa.int32()),
            ("offset", pa.int64()),
            ("reason", _STR),
            ("sample", _STR),
            ("producer", _STR),
            ("seq", pa.int64()),
            ("idx", pa.int32()),
            ("run_id", _STR),
        ]
    ),
}

#: Columns stored as ``LowCardinality(String)`` (sinks/migrations).  When every row of such a column came
#: from runs (one value per envelope: node, stream, a logger, a metric source), it is handed over
#: dictionary-encoded (``dictionary<int32, string>``): no per-row string is made, and ClickHouse takes the
#: dictionary as it is instead of hashing every value (bench: a log insert ~9 % less CPU).
LOW_CARDINALITY: dict[str, frozenset[str]] = {
    tables.RUN_EVENTS: frozenset({"event", "project", "node", "status"}),
    tables.METRICS: frozenset({"name", "source", "node"}),
    tables.LOGS: frozenset({"node", "stream", "level", "logger"}),
    tables.RESOURCES: frozenset({"node", "device", "name"}),
    tables.EVALS: frozenset({"node", "type"}),
    tables.ALERTS: frozenset({"kind", "severity", "node", "metric"}),
}
