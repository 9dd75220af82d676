"""The read side: what the UI and the CLI ask of ClickHouse.

Every value is bound server-side (``{name:Type}`` parameters); identifiers
come only from :mod:`runstream.tables`.  Every query runs under cost limits
(:class:`QueryLimits`), so that no search can take the service down; a query
over a limit raises :class:`~runstream.errors.QueryLimitExceeded`.  Methods
are synchronous: async callers run them through :meth:`Store.call`.
Answers are JSON-ready: times RFC 3339 UTC, NaN/±Inf as ``"NaN"``,
``"Infinity"``, ``"-Infinity"``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
import time
from dataclasses import dataclass
from typing import Any

from runstream import tables
from runstream.errors import QueryError
from runstream.timeparse import format_ns
from sinks.store import Store

_CURSOR = struct.Struct(">qQI")


@dataclass(frozen=True)
class QueryLimits:
    """Cost limits applied to every query."""

    max_execution_time_s: float = 10.0
    max_rows_to_read: int = 200_000_000
    max_result_rows: int = 200_000
    max_memory_usage_bytes: int = 2 * 1024**3
    max_runs: int = 1_000
    max_log_limit: int = 10_000

    def settings(self) -> dict[str, Any]:
        return {
            "max_execution_time": self.max_execution_time_s,
            "max_rows_to_read": self.max_rows_to_read,
            "max_result_rows": self.max_result_rows,
            "result_overflow_mode": "throw",
            "max_memory_usage": self.max_memory_usage_bytes,
            "readonly": 2,
        }


def json_value(x: float) -> float | str:
    """A float as JSON allows: NaN and ±Inf become strings."""
    if math.isfinite(x):
        return x
    return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")


def encode_cursor(ts_us: int, producer: str, seq: int, idx: int) -> str:
    """An opaque cursor for the row (ts, producer, seq, idx)."""
    raw = _CURSOR.pack(ts_us, seq, idx) + producer.encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str, int, int]:
    """The row a cursor points at; raises QueryError for anything malformed."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts_us, seq, idx = _CURSOR.unpack(raw[: _CURSOR.size])
        producer = raw[_CURSOR.size :].decode()
    except (binascii.Error, struct.error, UnicodeDecodeError, ValueError):
        raise QueryError("cursor is not one this server returned") from None
    if len(producer) > 128:
        raise QueryError("cursor is not one this server returned")
    return ts_us, producer, seq, idx


def _since_us(ns: int) -> int:
    return -((-ns) // 1000)


def _until_us(ns: int) -> int:
    return ns // 1000


class Queries:
    """Read-only queries over one store."""

    def __init__(self, store: Store, limits: QueryLimits | None = None, crashed_after_s: float = 60.0) -> None:
        self.store = store
        self.db = store.database
        self.limits = limits or QueryLimits()
        self.crashed_after_s = crashed_after_s

    def _rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return self.store.query_rows(sql.replace("{db}", self.db), params, self.limits.settings())

    def ping(self) -> bool:
        """True when ClickHouse answers a trivial query."""
        try:
            return self._rows("SELECT 1") == [(1,)]
        except Exception:  # noqa: BLE001 - health reports, never raises
            return False

    # -- runs ------------------------------------------------------------

    def list_runs(self, project: str | None = None, status: str | None = None,
                  now_ns: int | None = None) -> list[dict[str, Any]]:
        """Runs, newest first, with derived status and last/min/max per metric."""
        where, params = "", {"limit": self.limits.max_runs}
        if project:
            where = "HAVING project = {project:String}"
            params["project"] = project
        runs = self._runs(where, params, now_ns)
        if status:
            runs = [r for r in runs if r["status"] == status]
        self._attach_summaries(runs)
        return runs

    def get_run(self, run_id: str, now_ns: int | None = None) -> dict[str, Any] | None:
        """One run in full, or None when nothing of it is stored."""
        found = self._runs("HAVING run_id = {run:String}", {"run": run_id, "limit": 1}, now_ns)
        if not found:
            if not self._has_data(run_id):
                return None
            found = [{"id": run_id, "project": "", "name": "", "status": "running", "started_at": None,
                      "ended_at": None, "duration_s": None, "config": {}, "tags": [], "exit_code": None,
                      "reason": "", "world_size": 0, "argv": []}]
        run = found[0]
        self._attach_summaries([run])
        run["metrics"] = self.metric_names(run_id)
        run["nodes"] = [
            {"node": node, "rank": rank, "host": host, "pid": pid, "last_seen": format_ns(last * 1000)}
            for node, rank, host, pid, last in self._rows(
                "SELECT node, rank, argMaxIf(host, ts, event = 'start'), argMaxIf(pid, ts, event = 'start'), "
                "toUnixTimestamp64Micro(max(ts)) FROM {db}.run_events WHERE run_id = {run:String} "
                "GROUP BY node, rank ORDER BY rank, node", {"run": run_id})
        ]
        run["resources"] = {
            f"{device}/{name}": {"avg": json_value(avg), "max": json_value(mx)}
            for device, name, avg, mx in self._rows(
                "SELECT device, name, avg(value), max(value) FROM {db}.resources WHERE run_id = {run:String} "
                "GROUP BY device, name ORDER BY device, name", {"run": run_id})
        }
        return run

    def _has_data(self, run_id: str) -> bool:
        for table in (tables.LOGS, tables.METRICS):
            if self._rows(f"SELECT 1 FROM {{db}}.{table} WHERE run_id = {{run:String}} LIMIT 1", {"run": run_id}):
                return True
        return False

    def _runs(self, having: str, params: dict[str, Any], now_ns: int | None) -> list[dict[str, Any]]:
        now_us = (time.time_ns() if now_ns is None else now_ns) // 1000
        heads = self._rows(
            "SELECT run_id, argMinIf(project, ts, event = 'start') AS project, "
            "argMinIf(name, ts, event = 'start'), argMinIf(config, ts, event = 'start'), "
            "argMinIf(tags, ts, event = 'start'), toUnixTimestamp64Micro(minIf(ts, event = 'start')), "
            "toUnixTimestamp64Micro(min(ts)), argMaxIf(world_size, ts, event = 'start'), "
            "argMinIf(argv, ts, event = 'start') "
            f"FROM {{db}}.{tables.RUN_EVENTS} GROUP BY run_id {having} "
            "ORDER BY min(ts) DESC LIMIT {limit:UInt32}", params)
        if not heads:
            return []
        ranks: dict[str, list[tuple[Any, ...]]] = {}
        for row in self._rows(
            "SELECT run_id, node, rank, countIf(event = 'start'), countIf(event = 'finish'), "
            "argMaxIf(status, ts, event = 'finish'), argMaxIf(exit_code, ts, event = 'finish'), "
            "argMaxIf(reason, ts, event = 'finish'), toUnixTimestamp64Micro(max(ts)), "
            "toUnixTimestamp64Micro(maxIf(ts, event = 'finish')) "
            f"FROM {{db}}.{tables.RUN_EVENTS} WHERE run_id IN {{ids:Array(String)}} GROUP BY run_id, node, rank",
            {"ids": [h[0] for h in heads]},
        ):
            ranks.setdefault(row[0], []).append(row[1:])
        out = []
        for run_id, project, name, config, tags, started, first, world, argv in heads:
            status, ended, exit_code, reason, last_seen = self._status(ranks.get(run_id, []), now_us)
            start_us = started if started > 0 else first
            end_us = ended if ended else (last_seen if status == "crashed" else now_us)
            out.append({
                "id": run_id, "project": project, "name": name, "status": status,
                "started_at": format_ns(start_us * 1000), "ended_at": format_ns(ended * 1000) if ended else None,
                "duration_s": round(max(0, end_us - start_us) / 1e6, 3), "config": _parse_json(config),
                "tags": list(tags), "exit_code": exit_code, "reason": reason, "world_size": world,
                "argv": list(argv), "last_seen": format_ns(last_seen * 1000),
            })
        return out

    def _status(self, ranks: list[tuple[Any, ...]], now_us: int) -> tuple[str, int, int | None, str, int]:
        """The run's status from its ranks: (status, ended_us, exit_code, reason, last_seen_us)."""
        last_seen = max((r[7] for r in ranks), default=0)
        finals = [(r[4], r[5], r[6], r[8]) for r in ranks if r[3] > 0]
        started = [r for r in ranks if r[2] > 0]
        for wanted in ("failed", "killed"):
            hits = [f for f in finals if f[0] == wanted]
            if hits:
                first = min(hits, key=lambda f: f[3])
                return wanted, max(f[3] for f in finals), first[1], first[2], last_seen
        if started and len(finals) >= len(started) and all(r[3] > 0 for r in started):
            return "finished", max(f[3] for f in finals), finals[-1][1], "", last_seen
        if now_us - last_seen > self.crashed_after_s * 1e6:
            return "crashed", 0, None, "no heartbeat", last_seen
        return "running", 0, None, "", last_seen

    def _attach_summaries(self, runs: list[dict[str, Any]]) -> None:
        if not runs:
            return
        by_id = {r["id"]: r for r in runs}
        for r in runs:
            r["summary"] = {}
        for run_id, name, last, low, high in self._rows(
            "SELECT run_id, name, argMax(value, (step, ts, seq, idx, sub)), min(value), max(value) "
            f"FROM {{db}}.{tables.METRICS} WHERE run_id IN {{ids:Array(String)}} GROUP BY run_id, name "
            "ORDER BY run_id, name", {"ids": list(by_id)},
        ):
            by_id[run_id]["summary"][name] = {"last": json_value(last), "min": json_value(low),
                                              "max": json_value(high)}

    # -- metrics ---------------------------------------------------------

    def metric_names(self, run_id: str) -> list[str]:
        """The names of a run's metrics, sorted."""
        return [r[0] for r in self._rows(
            f"SELECT DISTINCT name FROM {{db}}.{tables.METRICS} WHERE run_id = {{run:String}} ORDER BY name",
            {"run": run_id})]

    def metric_series(self, run_id: str, name: str, points: int = 1000, since_ns: int | None = None,
                      until_ns: int | None = None) -> dict[str, Any]:
        """``{"name", "points": [[step, value]], "total", "downsampled"}`` in step order.

        All points when there are at most ``points``; otherwise the step range
        is cut into buckets and each bucket gives its lowest and highest finite
        point and its first NaN/Inf point, so that no extreme is lost.
        """
        if points < 3:
            raise QueryError("points must be at least 3")
        cond, params = self._series_filter(run_id, name, since_ns, until_ns)
        total, s0, s1 = self._rows(
            f"SELECT count(), min(step), max(step) FROM {{db}}.{tables.METRICS} WHERE {cond}", params)[0]
        if total <= points:
            rows = self._rows(
                f"SELECT step, value FROM {{db}}.{tables.METRICS} WHERE {cond} "
                "ORDER BY step, ts, producer, seq, idx, sub", params)
            return {"name": name, "points": [[s, json_value(v)] for s, v in rows], "total": total,
                    "downsampled": False}
        buckets = max(1, points // 3)
        params.update(s0=s0, span=s1 - s0 + 1, nb=buckets)
        rows = self._rows(
            "SELECT intDiv(toInt128(step - {s0:Int64}) * {nb:UInt32}, toInt128({span:Int64})) AS b, "
            "argMinIf(step, value, isFinite(value)), minIf(value, isFinite(value)), "
            "argMaxIf(step, value, isFinite(value)), maxIf(value, isFinite(value)), countIf(isFinite(value)), "
            "minIf(step, NOT isFinite(value)), argMinIf(value, step, NOT isFinite(value)), "
            "countIf(NOT isFinite(value)) "
            f"FROM {{db}}.{tables.METRICS} WHERE {cond} GROUP BY b ORDER BY b", params)
        out: list[list[Any]] = []
        for _, lo_s, lo, hi_s, hi, finite, nf_s, nf, nonfinite in rows:
            picked: dict[int, float] = {}
            if finite:
                picked[lo_s] = lo
                picked[hi_s] = hi
            if nonfinite:
                picked.setdefault(nf_s, nf)
            out += [[s, json_value(v)] for s, v in sorted(picked.items())]
        return {"name": name, "points": out, "total": total, "downsampled": True}

    def _series_filter(self, run_id: str, name: str, since_ns: int | None,
                       until_ns: int | None) -> tuple[str, dict[str, Any]]:
        cond = ["run_id = {run:String}", "name = {name:String}"]
        params: dict[str, Any] = {"run": run_id, "name": name}
        if since_ns is not None:
            cond.append("ts >= fromUnixTimestamp64Micro({since:Int64})")
            params["since"] = _since_us(since_ns)
        if until_ns is not None:
            cond.append("ts <= fromUnixTimestamp64Micro({until:Int64})")
            params["until"] = _until_us(until_ns)
        return " AND ".join(cond), params

    # -- logs ------------------------------------------------------------

    def search_logs(self, run_id: str, q: str | None = None, regex: str | None = None,
                    level: str | list[str] | None = None, node: str | None = None, rank: int | None = None,
                    stream: str | None = None, since_ns: int | None = None, until_ns: int | None = None,
                    limit: int = 500, cursor: str | None = None, order: str = "asc") -> dict[str, Any]:
        """A page of a run's log lines in time order, and the cursor of the next page.

        ``q`` matches lines containing it, case-insensitively, in their text
        without ANSI codes; ``regex`` is RE2 over the same text; ``level``
        is one level or a comma-separated list.
        """
        if order not in ("asc", "desc"):
            raise QueryError("order must be asc or desc")
        if not 1 <= limit <= self.limits.max_log_limit:
            raise QueryError(f"limit must be between 1 and {self.limits.max_log_limit}")
        cond = ["run_id = {run:String}"]
        params: dict[str, Any] = {"run": run_id, "limit": limit + 1}
        if q:
            cond.append("positionCaseInsensitiveUTF8(text, {q:String}) > 0")
            params["q"] = q
        if regex:
            cond.append("match(text, {re:String})")
            params["re"] = regex
        if level:
            levels = level.split(",") if isinstance(level, str) else list(level)
            cond.append("level IN {levels:Array(String)}")
            params["levels"] = [lv.strip().upper() for lv in levels]
        if node:
            cond.append("node = {node:String}")
            params["node"] = node
        if rank is not None:
            cond.append("rank = {rank:Int32}")
            params["rank"] = rank
        if stream:
            cond.append("stream = {stream:String}")
            params["stream"] = stream
        if since_ns is not None:
            cond.append("ts >= fromUnixTimestamp64Micro({since:Int64})")
            params["since"] = _since_us(since_ns)
        if until_ns is not None:
            cond.append("ts <= fromUnixTimestamp64Micro({until:Int64})")
            params["until"] = _until_us(until_ns)
        if cursor:
            c_ts, c_p, c_s, c_i = decode_cursor(cursor)
            op = ">" if order == "asc" else "<"
            cond.append(f"(ts, producer, seq, idx) {op} (fromUnixTimestamp64Micro({{c_ts:Int64}}), "
                        "{c_p:String}, {c_s:UInt64}, {c_i:UInt32})")
            params.update(c_ts=c_ts, c_p=c_p, c_s=c_s, c_i=c_i)
        direction = "ASC" if order == "asc" else "DESC"
        rows = self._rows(
            "SELECT toUnixTimestamp64Micro(ts), node, rank, stream, level, logger, line, producer, seq, idx "
            f"FROM {{db}}.{tables.LOGS} WHERE {' AND '.join(cond)} "
            f"ORDER BY ts {direction}, producer {direction}, seq {direction}, idx {direction} "
            "LIMIT {limit:UInt32}", params)
        more = len(rows) > limit
        rows = rows[:limit]
        lines = [{"ts": format_ns(r[0] * 1000), "node": r[1], "rank": r[2], "stream": r[3], "level": r[4],
                  "logger": r[5], "line": r[6]} for r in rows]
        next_cursor = encode_cursor(rows[-1][0], rows[-1][7], rows[-1][8], rows[-1][9]) if more else None
        return {"lines": lines, "next_cursor": next_cursor}

    # -- dead letters ----------------------------------------------------

    def dead_letters(self, limit: int = 100) -> dict[str, Any]:
        """The newest dead letters."""
        rows = self._rows(
            "SELECT toUnixTimestamp64Micro(ts), topic, reason, sample, partition, offset, producer, seq, idx, "
            f"run_id FROM {{db}}.{tables.DEAD_LETTERS} ORDER BY ts DESC LIMIT {{limit:UInt32}}",
            {"limit": limit})
        keys = ("ts", "topic", "reason", "sample", "partition", "offset", "producer", "seq", "index", "run_id")
        items = [dict(zip(keys, r)) for r in rows]
        for item in items:
            item["ts"] = format_ns(item["ts"] * 1000)
        return {"items": items}


def _parse_json(text: str) -> Any:
    if not text:
        return {}
    try:
        return json.loads(text)
    except ValueError:
        return {"_raw": text}
