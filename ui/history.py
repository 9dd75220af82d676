"""The live feed's history reads: stored records *with their identity*, for the hand-off.

``sinks.queries.Queries`` answers the HTTP API, whose answers leave out a
record's identity ``(producer, seq, idx, sub)``; the feed needs it to join
history and live records with no duplicate, so these few reads live here.
They run on the store's read lane (through ``call``, ``store.read_call``), bind every value
server-side and run under the query layer's cost limits.  Methods block;
they raise what the store raises (``QueryError``, ``QueryLimitExceeded``,
``StorageUnavailable``).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any, Protocol

from runstream import tables
from runstream.timeparse import format_ns
from ui.filters import Filters
from ui.hub import Rec

#: At most this many records come back for a resumed subscription (the rest follows by cursor).
MAX_RESUME_ROWS = 100_000
_NUMBER = {float("inf"): "Infinity", float("-inf"): "-Infinity"}


class RowStore(Protocol):
    """The store's read method (``sinks.store.Store``)."""

    database: str

    def query_rows(
        self, sql: str, params: dict[str, Any] | None = None, settings: dict[str, Any] | None = None
    ) -> list[tuple[Any, ...]]: ...


def json_number(x: float) -> float | str:
    """NaN and ±Inf as the strings the API uses, other floats unchanged."""
    if x != x:
        return "NaN"
    return _NUMBER.get(x, x)


def like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def log_item(ts_us: int, node: str, rank: int, stream: str, level: str, logger: str, line: str) -> dict[str, Any]:
    return {
        "ts": format_ns(ts_us * 1000),
        "node": node,
        "rank": rank,
        "stream": stream,
        "level": level,
        "logger": logger,
        "line": line,
    }


def alert_rec(ts_us: int, kind: str, message: str, node: str, rank: int) -> Rec:
    """An alert as a feed record; alerts have no producer, so their identity is their time and content."""
    digest = zlib.crc32(f"{kind}\x00{node}\x00{rank}\x00{message}".encode())
    return Rec(
        ("~alerts", ts_us, digest, 0),
        ts_us,
        {"ts": format_ns(ts_us * 1000), "kind": kind, "message": message, "node": node, "rank": rank},
    )


class History:
    """Reads of one store: the newest records of a run, or those since a resume point."""

    def __init__(self, store: RowStore, settings: dict[str, Any], max_resume_rows: int = MAX_RESUME_ROWS) -> None:
        self.store = store
        self.settings = settings
        #: At most this many records come back for a resumed subscription (the rest follows by cursor).
        self.max_resume_rows = max_resume_rows
        db = store.database
        self._t = {t: f"{db}.{t}" for t in (tables.LOGS, tables.METRICS, tables.RESOURCES, tables.ALERTS)}

    def read(self, run: str, stream: str, f: Filters, since_us: int | None) -> tuple[list[Rec], bool]:
        """Records of ``run``'s ``stream`` in time order, and whether more were left out.

        ``since_us`` None: the newest ``f.limit`` records.  Otherwise: every
        record from ``since_us`` on, up to ``max_resume_rows``.
        """
        if stream == "logs":
            return self._logs(run, f, since_us)
        if stream in ("metrics", "resources"):
            return self._values(run, stream, f, since_us)
        if stream == "alerts":
            return self._alerts(run, f, since_us)
        raise ValueError(f"no stored history for stream {stream!r}")

    def _page(
        self, table: str, columns: str, cond: list[str], params: dict[str, Any], since_us: int | None, limit: int
    ) -> tuple[list[tuple[Any, ...]], bool]:
        order = "ts, producer, seq, idx" + (", sub" if table != self._t[tables.LOGS] else "")
        if since_us is None:
            params["limit"] = limit
            desc = ", ".join(f"{c.strip()} DESC" for c in order.split(","))
            rows = self.store.query_rows(
                f"SELECT {columns} FROM {table} WHERE {' AND '.join(cond)} ORDER BY {desc} LIMIT {{limit:UInt32}}",
                params,
                self.settings,
            )
            rows.reverse()
            return rows, len(rows) >= limit
        cond.append("ts >= fromUnixTimestamp64Micro({since:Int64}, 'UTC')")
        params.update(since=since_us, limit=self.max_resume_rows + 1)
        rows = self.store.query_rows(
            f"SELECT {columns} FROM {table} WHERE {' AND '.join(cond)} ORDER BY {order} LIMIT {{limit:UInt32}}",
            params,
            self.settings,
        )
        return rows[: self.max_resume_rows], len(rows) > self.max_resume_rows

    def _logs(self, run: str, f: Filters, since_us: int | None) -> tuple[list[Rec], bool]:
        cond = ["run_id = {run:String}"]
        params: dict[str, Any] = {"run": run}
        if f.q:
            if f.q.isascii():
                cond.append("lower(text) LIKE {q_like:String}")
                params["q_like"] = like_pattern(f.q.lower())
            else:
                cond.append("positionCaseInsensitiveUTF8(text, {q:String}) > 0")
                params["q"] = f.q
        if f.regex:
            cond.append("match(text, {re:String})")
            params["re"] = f.regex
        if f.levels:
            cond.append("level IN {levels:Array(String)}")
            params["levels"] = list(f.levels)
        if f.stream:
            cond.append("stream = {stream:String}")
            params["stream"] = f.stream
        _where_node_rank(cond, params, f)
        if f.since_us is not None:
            cond.append("ts >= fromUnixTimestamp64Micro({since_filter:Int64}, 'UTC')")
            params["since_filter"] = f.since_us
        rows, more = self._page(
            self._t[tables.LOGS],
            "toUnixTimestamp64Micro(ts), node, rank, stream, level, logger, line, producer, seq, idx",
            cond,
            params,
            since_us,
            f.limit,
        )
        return [Rec((r[7], r[8], r[9], 0), r[0], log_item(*r[:7])) for r in rows], more

    def _values(self, run: str, stream: str, f: Filters, since_us: int | None) -> tuple[list[Rec], bool]:
        cond = ["run_id = {run:String}"]
        params: dict[str, Any] = {"run": run}
        if f.names:
            cond.append("name IN {names:Array(String)}")
            params["names"] = list(f.names)
        label = "step" if stream == "metrics" else "device"
        if stream == "resources" and f.device:
            cond.append("device = {device:String}")
            params["device"] = f.device
        _where_node_rank(cond, params, f)
        table = self._t[tables.METRICS if stream == "metrics" else tables.RESOURCES]
        rows, more = self._page(
            table,
            f"toUnixTimestamp64Micro(ts), name, {label}, value, node, rank, producer, seq, idx, sub",
            cond,
            params,
            since_us,
            f.limit,
        )
        return [
            Rec(
                (r[6], r[7], r[8], r[9]),
                r[0],
                {
                    "ts": format_ns(r[0] * 1000),
                    "name": r[1],
                    label: r[2],
                    "value": json_number(r[3]),
                    "node": r[4],
                    "rank": r[5],
                },
            )
            for r in rows
        ], more

    def step_times(self, run: str, name: str, points: int = 1000) -> dict[str, Any]:
        """``{"name", "steps": [[step, ts], ...]}``: when each step range of a metric was first logged.

        At most ``points`` rows (the step span cut into equal buckets, each giving
        its lowest step and that bucket's earliest time), in step order.  The
        page maps steps to wall-clock time with it (time axis, zoom, click to
        logs); metric answers themselves carry steps only.
        """
        points = max(2, min(int(points), 10_000))
        rows = self.store.query_rows(
            "WITH (SELECT (min(step), max(step) - min(step) + 1) FROM "
            f"{self._t[tables.METRICS]} WHERE run_id = {{run:String}} AND name = {{name:String}}) AS st "
            "SELECT min(step) AS s, toUnixTimestamp64Micro(min(ts)) "
            f"FROM {self._t[tables.METRICS]} WHERE run_id = {{run:String}} AND name = {{name:String}} "
            "GROUP BY intDiv((toInt128(step) - st.1) * {points:UInt32}, st.2) ORDER BY s",
            {"run": run, "name": name, "points": points},
            self.settings,
        )
        return {"name": name, "steps": [[int(step), format_ns(ts_us * 1000)] for step, ts_us in rows]}

    def _alerts(self, run: str, f: Filters, since_us: int | None) -> tuple[list[Rec], bool]:
        cond = ["run_id = {run:String}"]
        params: dict[str, Any] = {"run": run, "limit": f.limit if since_us is None else self.max_resume_rows + 1}
        if since_us is not None:
            cond.append("ts >= fromUnixTimestamp64Micro({since:Int64}, 'UTC')")
            params["since"] = since_us
        rows = self.store.query_rows(
            "SELECT toUnixTimestamp64Micro(ts), kind, message, node, rank FROM "
            f"{self._t[tables.ALERTS]} WHERE {' AND '.join(cond)} ORDER BY ts DESC LIMIT {{limit:UInt32}}",
            params,
            self.settings,
        )
        rows.reverse()
        more = len(rows) >= params["limit"] if since_us is None else len(rows) > self.max_resume_rows
        return [alert_rec(*r) for r in rows[: self.max_resume_rows]], more


def _where_node_rank(cond: list[str], params: dict[str, Any], f: Filters) -> None:
    if f.node:
        cond.append("node = {node:String}")
        params["node"] = f.node
    if f.rank is not None:
        cond.append("rank = {rank:Int32}")
        params["rank"] = f.rank


__all__: Sequence[str] = ["History", "MAX_RESUME_ROWS", "RowStore", "alert_rec", "log_item"]
