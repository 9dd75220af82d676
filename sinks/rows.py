"""Clean envelopes to table columns: pure, no I/O.

:class:`ColumnBuffer` accumulates the rows of one table as column lists and
turns them into an Arrow table (the fastest insert path into ClickHouse).
Times go in as integer microseconds; config and evaluation data as JSON text
in which NaN and ±Inf are the strings ``"NaN"``, ``"Infinity"``,
``"-Infinity"`` (so that stored JSON stays valid).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pyarrow as pa

from runstream import tables
from runstream.wire import Envelope

_TS = pa.timestamp("us", tz="UTC")

SCHEMAS: dict[str, pa.Schema] = {
    tables.RUN_EVENTS: pa.schema([
        ("run_id", pa.string()), ("ts", _TS), ("event", pa.string()), ("project", pa.string()),
        ("name", pa.string()), ("node", pa.string()), ("rank", pa.int32()), ("status", pa.string()),
        ("exit_code", pa.int32()), ("reason", pa.string()), ("config", pa.string()),
        ("tags", pa.list_(pa.string())), ("host", pa.string()), ("pid", pa.uint32()),
        ("world_size", pa.uint32()), ("argv", pa.list_(pa.string())), ("producer", pa.string()),
        ("seq", pa.uint64()), ("idx", pa.uint32()), ("ingest_ts", _TS),
    ]),
    tables.METRICS: pa.schema([
        ("run_id", pa.string()), ("name", pa.string()), ("step", pa.int64()), ("ts", _TS),
        ("value", pa.float64()), ("node", pa.string()), ("rank", pa.int32()), ("producer", pa.string()),
        ("seq", pa.uint64()), ("idx", pa.uint32()), ("sub", pa.uint16()), ("ingest_ts", _TS),
    ]),
    tables.LOGS: pa.schema([
        ("run_id", pa.string()), ("ts", _TS), ("node", pa.string()), ("rank", pa.int32()),
        ("stream", pa.string()), ("level", pa.string()), ("logger", pa.string()), ("line", pa.string()),
        ("orig_bytes", pa.uint32()), ("producer", pa.string()), ("seq", pa.uint64()),
        ("idx", pa.uint32()), ("ingest_ts", _TS),
    ]),
    tables.RESOURCES: pa.schema([
        ("run_id", pa.string()), ("ts", _TS), ("node", pa.string()), ("rank", pa.int32()),
        ("device", pa.string()), ("name", pa.string()), ("value", pa.float64()), ("producer", pa.string()),
        ("seq", pa.uint64()), ("idx", pa.uint32()), ("sub", pa.uint16()), ("ingest_ts", _TS),
    ]),
    tables.EVALS: pa.schema([
        ("run_id", pa.string()), ("ts", _TS), ("node", pa.string()), ("rank", pa.int32()),
        ("name", pa.string()), ("type", pa.string()), ("data", pa.string()), ("producer", pa.string()),
        ("seq", pa.uint64()), ("idx", pa.uint32()), ("ingest_ts", _TS),
    ]),
    tables.DEAD_LETTERS: pa.schema([
        ("ts", _TS), ("topic", pa.string()), ("partition", pa.int32()), ("offset", pa.int64()),
        ("reason", pa.string()), ("sample", pa.string()), ("producer", pa.string()), ("seq", pa.int64()),
        ("idx", pa.int32()), ("run_id", pa.string()),
    ]),
}


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def json_text(value: Any) -> str:
    """JSON for stored config/data: NaN/Inf as strings, bytes as text, never invalid."""
    return json.dumps(_finite(value), ensure_ascii=False, separators=(",", ":"), default=str)


class ColumnBuffer:
    """Rows of one table, as column lists, until :meth:`to_arrow`."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.schema = SCHEMAS[table]
        self.columns: dict[str, list[Any]] = {name: [] for name in self.schema.names}
        self.rows = 0
        self.bytes = 0

    def to_arrow(self) -> pa.Table:
        """The buffered rows as an Arrow table with the table's column types."""
        arrays = [pa.array(self.columns[f.name], type=f.type) for f in self.schema]
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def clear(self) -> None:
        for col in self.columns.values():
            col.clear()
        self.rows = 0
        self.bytes = 0


class Batch:
    """Buffers for every table, filled from clean envelopes and dead letters."""

    def __init__(self) -> None:
        self.buffers = {name: ColumnBuffer(name) for name in SCHEMAS}

    @property
    def rows(self) -> int:
        return sum(b.rows for b in self.buffers.values())

    @property
    def bytes(self) -> int:
        return sum(b.bytes for b in self.buffers.values())

    def clear(self) -> None:
        for buf in self.buffers.values():
            buf.clear()

    def add_envelope(self, env: Envelope) -> int:
        """Fan a clean envelope's records out to table rows; return the rows added."""
        ingest = (env.ingest_ns or env.sent_ns) // 1000
        add = _ADDERS[env.kind]
        return add(self.buffers, env, ingest)

    def add_dead_letter(self, doc: dict[str, Any]) -> None:
        """Add one dead letter (as parsed by :func:`runstream.deadletter.parse`)."""
        buf = self.buffers[tables.DEAD_LETTERS]
        c = buf.columns
        c["ts"].append(int(doc.get("ts_ns", 0)) // 1000)
        c["topic"].append(str(doc.get("topic", "")))
        c["partition"].append(int(doc.get("partition", -1)))
        c["offset"].append(int(doc.get("offset", -1)))
        c["reason"].append(str(doc.get("reason", "")))
        c["sample"].append(str(doc.get("sample", "")))
        c["producer"].append(str(doc.get("producer", "")))
        c["seq"].append(int(doc.get("seq", -1)))
        c["idx"].append(int(doc.get("index", -1)))
        c["run_id"].append(str(doc.get("run", "")))
        buf.rows += 1
        buf.bytes += 200 + len(c["sample"][-1]) + len(c["reason"][-1])


def _add_logs(buffers: dict[str, ColumnBuffer], env: Envelope, ingest: int) -> int:
    buf = buffers[tables.LOGS]
    c = buf.columns
    n = len(env.records)
    c["run_id"].extend([env.run] * n)
    c["node"].extend([env.node] * n)
    c["rank"].extend([env.rank] * n)
    c["producer"].extend([env.producer] * n)
    c["seq"].extend([env.seq] * n)
    c["ingest_ts"].extend([ingest] * n)
    size = 0
    ts, stream, level, logger, line, orig, idx = (c["ts"], c["stream"], c["level"], c["logger"], c["line"],
                                                  c["orig_bytes"], c["idx"])
    for r in env.records:
        ts.append(r["ts_ns"] // 1000)
        stream.append(r["stream"])
        level.append(r["level"])
        logger.append(r["logger"])
        text = r["line"]
        line.append(text)
        size += len(text)
        orig.append(r.get("orig_bytes", 0))
        idx.append(r["i"])
    buf.rows += n
    buf.bytes += size + 64 * n
    return n


def _add_values(table: str, key: str) -> Any:
    def add(buffers: dict[str, ColumnBuffer], env: Envelope, ingest: int) -> int:
        buf = buffers[table]
        c = buf.columns
        n = 0
        for r in env.records:
            ts = r["ts_ns"] // 1000
            label = r.get(key)
            for sub, (name, value) in enumerate(r["values"].items()):
                c["name"].append(name)
                c["value"].append(value)
                c["ts"].append(ts)
                c["idx"].append(r["i"])
                c["sub"].append(sub)
                if key == "step":
                    c["step"].append(label)
                else:
                    c["device"].append(label)
                n += 1
        for col, value in (("run_id", env.run), ("node", env.node), ("rank", env.rank),
                           ("producer", env.producer), ("seq", env.seq), ("ingest_ts", ingest)):
            c[col].extend([value] * n)
        buf.rows += n
        buf.bytes += 48 * n
        return n

    return add


def _add_runs(buffers: dict[str, ColumnBuffer], env: Envelope, ingest: int) -> int:
    buf = buffers[tables.RUN_EVENTS]
    c = buf.columns
    for r in env.records:
        row = {
            "run_id": env.run, "ts": r["ts_ns"] // 1000, "event": r["event"],
            "project": r.get("project", ""), "name": r.get("name", ""), "node": env.node, "rank": env.rank,
            "status": r.get("status", ""), "exit_code": r.get("exit_code"), "reason": r.get("reason", ""),
            "config": json_text(r["config"]) if "config" in r else "", "tags": r.get("tags", []),
            "host": r.get("host", ""), "pid": max(0, min(int(r.get("pid", 0)), 2**32 - 1)),
            "world_size": r.get("world_size", 0), "argv": r.get("argv", []), "producer": env.producer,
            "seq": env.seq, "idx": r["i"], "ingest_ts": ingest,
        }
        code = row["exit_code"]
        if code is not None and not -(2**31) <= code < 2**31:
            row["exit_code"] = None
        for name, value in row.items():
            c[name].append(value)
        buf.bytes += 200 + len(row["config"])
    buf.rows += len(env.records)
    return len(env.records)


def _add_evals(buffers: dict[str, ColumnBuffer], env: Envelope, ingest: int) -> int:
    buf = buffers[tables.EVALS]
    c = buf.columns
    for r in env.records:
        data = json_text(r["data"])
        for name, value in (("run_id", env.run), ("ts", r["ts_ns"] // 1000), ("node", env.node),
                            ("rank", env.rank), ("name", r["name"]), ("type", r["type"]), ("data", data),
                            ("producer", env.producer), ("seq", env.seq), ("idx", r["i"]),
                            ("ingest_ts", ingest)):
            c[name].append(value)
        buf.bytes += 100 + len(data)
    buf.rows += len(env.records)
    return len(env.records)


_ADDERS = {
    "logs": _add_logs,
    "metrics": _add_values(tables.METRICS, "step"),
    "resources": _add_values(tables.RESOURCES, "device"),
    "runs": _add_runs,
    "evals": _add_evals,
}
