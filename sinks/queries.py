"""The read side: what the UI and the CLI ask of ClickHouse.

Every value is bound server-side (``{name:Type}`` parameters); identifiers
come only from :mod:`runstream.tables` and the store's checked database
name.  Every query runs under cost limits (:class:`QueryLimits`); one over
them raises :class:`~runstream.errors.QueryLimitExceeded`, a bad parameter
:class:`~runstream.errors.QueryError`.  Methods are synchronous (they block
on the store's read lane); async callers run them with ``store.read_call``.
Answers are JSON-ready: times RFC 3339 UTC, NaN/±Inf as ``"NaN"``,
``"Infinity"``, ``"-Infinity"``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from runstream import tables
from runstream.errors import QueryError, RunstreamError
from runstream.events.runs import STATUSES
from runstream.timeparse import format_ns
from sinks.cursor import decode_cursor, encode_cursor
from sinks.log_views import LogViews, log_line
from sinks.logfilter import bounded, like_pattern, log_filter, time_range
from sinks.metric_views import METRIC_ROLLUP, ROLLUP_STEPS, MetricViews, add_bucket, json_number
from sinks.run_views import RunViews, sort_runs
from sinks.status import RankRow, derive_status, outcome
from sinks.store import Store

METRIC_SUMMARY = tables.METRIC_SUMMARY
MAX_LOG_LIMIT = 10_000
MAX_DLQ_LIMIT = 10_000
MIN_POINTS = 3
MAX_POINTS = 100_000
MAX_RUNS = 1_000


@dataclass(frozen=True)
class QueryLimits:
    """Cost limits applied to every query, so that no request can take the store down."""

    max_execution_time_s: float = 10.0
    max_rows_to_read: int = 200_000_000
    max_result_rows: int = 100_000
    max_memory_usage_bytes: int = 2 * 1024**3

    def settings(self) -> dict[str, Any]:
        """The ClickHouse settings that enforce these limits (over a limit: the query fails)."""
        return {
            "max_execution_time": self.max_execution_time_s,
            "max_rows_to_read": self.max_rows_to_read,
            "read_overflow_mode": "throw",
            "max_result_rows": self.max_result_rows,
            "result_overflow_mode": "throw",
            "max_memory_usage": self.max_memory_usage_bytes,
        }


class Queries(LogViews, RunViews, MetricViews):
    """Read-only queries over one store (synchronous; blocks on the store's read lane)."""

    def __init__(self, store: Store, limits: QueryLimits | None = None, crashed_after_s: float = 60.0) -> None:
        self.store = store
        self.limits = limits or QueryLimits()
        self.crashed_after_s = crashed_after_s
        self._settings = self.limits.settings()
        db = store.database
        self._t = {
            name: f"{db}.{name}"
            for name in (
                tables.RUN_EVENTS,
                tables.METRICS,
                tables.LOGS,
                tables.RESOURCES,
                tables.EVALS,
                tables.ALERTS,
                tables.DEAD_LETTERS,
                METRIC_SUMMARY,
                METRIC_ROLLUP,
            )
        }

    def _rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return self.store.query_rows(sql, params, self._settings)

    def ping(self) -> bool:
        """True when ClickHouse answers a trivial query (never raises)."""
        try:
            return self._rows("SELECT 1") == [(1,)]
        except RunstreamError:
            return False

    # -- runs ------------------------------------------------------------

    def list_runs(
        self,
        project: str | None = None,
        status: str | None = None,
        now_ns: int | None = None,
        limit: int = MAX_RUNS,
        name: str | None = None,
        tag: str | None = None,
        sort: str | None = None,
        order: str | None = None,
    ) -> list[dict[str, Any]]:
        """Runs, newest first: id, project, name, status, times, config, tags, summary.

        ``name`` keeps runs whose name contains it (case-insensitively),
        ``tag`` runs with that tag; ``sort``/``order`` as :func:`sorting
        <sinks.run_views.sort_runs>` takes them (over the newest ``limit``
        runs).  Raises :class:`QueryError` for an unknown ``status`` or sort.
        """
        if status is not None and status not in STATUSES:
            raise QueryError(f"status must be one of {', '.join(STATUSES)}")
        runs = self._runs(
            project=project, run_id=None, now_ns=now_ns, limit=bounded(limit, 1, MAX_RUNS), name=name, tag=tag
        )
        if status is not None:
            runs = [r for r in runs if r["status"] == status]
        self._attach_summaries(runs)
        return sort_runs(runs, sort, order)

    def get_run(self, run_id: str, now_ns: int | None = None) -> dict[str, Any] | None:
        """One run as in :meth:`list_runs` plus nodes, resources, metric names, exit code, reason.

        ``None`` when nothing of the run is stored.
        """
        found = self._runs(project=None, run_id=run_id, now_ns=now_ns, limit=1)
        if not found:
            if not self._has_data(run_id):
                return None
            found = [
                {
                    "id": run_id,
                    "project": "",
                    "name": "",
                    "status": "running",
                    "started_at": None,
                    "ended_at": None,
                    "duration_s": None,
                    "config": {},
                    "tags": [],
                    "last_seen": None,
                    "exit_code": None,
                    "reason": "",
                    "world_size": 0,
                    "argv": [],
                }
            ]
        run = found[0]
        self._attach_summaries([run])
        run["metrics"] = self.metric_names(run_id)
        run["nodes"] = [
            {
                "node": node,
                "rank": rank,
                "host": host,
                "pid": pid,
                "last_seen": format_ns(last * 1000),
            }
            for node, rank, host, pid, last in self._rows(
                "SELECT node, rank, argMaxIf(host, ts, event = 'start'), "
                "argMaxIf(pid, ts, event = 'start'), "
                f"toUnixTimestamp64Micro(max(ts)) FROM {self._t[tables.RUN_EVENTS]} "
                "WHERE run_id = {run:String} GROUP BY node, rank ORDER BY rank, node",
                {"run": run_id},
            )
        ]
        run["resource_summary"] = self.resource_summary(run_id)
        run["alerts"] = self.alerts(run_id)["alerts"]
        run["evals"] = self.evals(run_id)["evals"]
        run["resources"] = [
            {"device": device, "name": name, "avg": json_number(avg), "max": json_number(high)}
            for device, name, avg, high in self._rows(
                "SELECT device, name, avgIf(value, isFinite(value)), "
                "maxIf(value, NOT isNaN(value)) "
                f"FROM {self._t[tables.RESOURCES]} WHERE run_id = {{run:String}} "
                "GROUP BY device, name ORDER BY device, name",
                {"run": run_id},
            )
        ]
        return run

    def _has_data(self, run_id: str) -> bool:
        return any(
            self._rows(f"SELECT 1 FROM {self._t[t]} WHERE run_id = {{run:String}} LIMIT 1", {"run": run_id})
            for t in (tables.LOGS, tables.METRICS, tables.RESOURCES)
        )

    def _runs(
        self,
        project: str | None,
        run_id: str | None,
        now_ns: int | None,
        limit: int,
        name: str | None = None,
        tag: str | None = None,
    ) -> list[dict[str, Any]]:
        now_us = (time.time_ns() if now_ns is None else now_ns) // 1000
        where, having = "", ""
        filters = []
        params: dict[str, Any] = {"limit": limit}
        if run_id is not None:
            where = "WHERE run_id = {run:String}"
            params["run"] = run_id
        if project is not None:
            filters.append("project = {project:String}")
            params["project"] = project
        if name:
            filters.append("positionCaseInsensitiveUTF8(run_name, {name:String}) > 0")
            params["name"] = name
        if tag:
            filters.append("has(run_tags, {tag:String})")
            params["tag"] = tag
        if filters:
            having = "HAVING " + " AND ".join(filters)
        start = "event = 'start'"
        heads = self._rows(
            f"SELECT run_id, argMinIf(project, (rank, ts), {start}) AS project, "
            f"argMinIf(name, (rank, ts), {start}) AS run_name, argMinIf(config, (rank, ts), {start}), "
            f"argMinIf(tags, (rank, ts), {start}) AS run_tags, argMinIf(argv, (rank, ts), {start}), "
            f"maxIf(world_size, {start}), countIf({start}) > 0, "
            f"toUnixTimestamp64Micro(minIf(ts, {start})), toUnixTimestamp64Micro(min(ts)), "
            f"toUnixTimestamp64Micro(max(ts)) AS last_us "
            f"FROM {self._t[tables.RUN_EVENTS]} {where} GROUP BY run_id {having} "
            "ORDER BY if(countIf(event = 'start') > 0, minIf(ts, event = 'start'), min(ts)) DESC, "
            "run_id "
            "LIMIT {limit:UInt32}",
            params,
        )
        if not heads:
            return []
        ranks: dict[str, list[RankRow]] = {}
        for rid, rank, status, finished_us, code, reason in self._rows(
            "SELECT run_id, rank, argMaxIf(status, ts, event = 'finish'), "
            "toUnixTimestamp64Micro(maxIf(ts, event = 'finish')), "
            "argMaxIf(exit_code, ts, event = 'finish'), "
            f"argMaxIf(reason, ts, event = 'finish') FROM {self._t[tables.RUN_EVENTS]} "
            "WHERE run_id IN {ids:Array(String)} GROUP BY run_id, rank ORDER BY run_id, rank",
            {"ids": [h[0] for h in heads]},
        ):
            ranks.setdefault(rid, []).append((rank, status, finished_us, code, reason))
        out = []
        for (
            rid,
            proj,
            name,
            config,
            tags,
            argv,
            world,
            has_start,
            started_us,
            first_us,
            last_us,
        ) in heads:
            rank_rows = ranks.get(rid, [])
            status, ended_us = derive_status(rank_rows, last_us, now_us, self.crashed_after_s)
            exit_code, reason = outcome(status, rank_rows, self.crashed_after_s)
            begin_us = started_us if has_start else first_us
            out.append(
                {
                    "id": rid,
                    "project": proj,
                    "name": name,
                    "status": status,
                    "started_at": format_ns(begin_us * 1000),
                    "ended_at": format_ns(ended_us * 1000) if ended_us is not None else None,
                    "duration_s": round(max(0, (ended_us if ended_us is not None else now_us) - begin_us) / 1e6, 3),
                    "config": _parse_json(config),
                    "tags": list(tags),
                    "last_seen": format_ns(last_us * 1000),
                    "exit_code": exit_code,
                    "reason": reason,
                    "world_size": world,
                    "argv": list(argv),
                }
            )
        return out

    def _attach_summaries(self, runs: list[dict[str, Any]]) -> None:
        for run in runs:
            run["summary"] = {}
        if not runs:
            return
        by_id = {r["id"]: r for r in runs}
        for rid, name, last, low, high in self._rows(
            "SELECT run_id, name, argMaxMerge(last_value), minOrNullIfMerge(min_value), "
            f"maxOrNullIfMerge(max_value) FROM {self._t[METRIC_SUMMARY]} "
            "WHERE run_id IN {ids:Array(String)} GROUP BY run_id, name ORDER BY run_id, name",
            {"ids": list(by_id)},
        ):
            by_id[rid]["summary"][name] = {
                "last": json_number(last),
                "min": json_number(low),
                "max": json_number(high),
            }

    # -- metrics ---------------------------------------------------------

    def metric_names(self, run_id: str) -> list[str]:
        """The names of a run's metrics, sorted."""
        return [
            r[0]
            for r in self._rows(
                f"SELECT DISTINCT name FROM {self._t[METRIC_SUMMARY]} WHERE run_id = {{run:String}} ORDER BY name",
                {"run": run_id},
            )
        ]

    def metric_series(
        self,
        run_id: str,
        name: str,
        points: int = 1000,
        since_ns: int | None = None,
        until_ns: int | None = None,
    ) -> dict[str, Any]:
        """``{"name", "points": [[step, value], ...], "total", "downsampled"}`` in step order.

        All points when there are at most ``points``.  Otherwise the step range
        is cut into at most ``points // 2`` buckets (``points // 3`` when the
        series has NaN) and each bucket gives its lowest and its highest point
        (±Inf included) and its first NaN, so no extreme is lost and the answer
        has at most ``points`` points.  A chart whose buckets would each span at
        least one rollup block (:data:`ROLLUP_STEPS` steps) reads
        ``metric_rollup`` and makes each bucket of whole blocks (with a time
        range, the blocks it cuts through are read point by point); otherwise
        (a short or zoomed-in series) the raw points are bucketed.
        Raises :class:`QueryError` unless ``3 <= points <= 100000``.
        """
        points = bounded(points, MIN_POINTS, min(MAX_POINTS, self.limits.max_result_rows), "points")
        if since_ns is None and until_ns is None:
            coarse = self._rollup_series(run_id, name, points)
        else:
            coarse = self._ranged_rollup_series(run_id, name, points, since_ns, until_ns)
        if coarse is not None:
            return coarse
        return self._raw_series(run_id, name, points, since_ns, until_ns)

    def _raw_series(
        self, run_id: str, name: str, points: int, since_ns: int | None, until_ns: int | None
    ) -> dict[str, Any]:
        """The series bucketed from the raw points (equal step ranges)."""
        cond, params = _series_filter(run_id, name, since_ns, until_ns)
        params["points"] = points
        table = self._t[tables.METRICS]
        finite = "NOT isNaN(value)"
        # The scalar subquery sizes the series; then either every point (bucket 0, in
        # step order) or, per bucket, its min, its max and its first NaN.
        rows = self._rows(
            "WITH (SELECT (count(), min(step), max(step), countIf(isNaN(value)) > 0) "
            f"FROM {table} WHERE {cond}) AS st, st.1 AS total, st.2 AS lo, "
            "st.3 - st.2 + 1 AS span, "
            "toInt64(if(st.4, intDiv({points:UInt32}, 3), intDiv({points:UInt32}, 2))) AS buckets "
            "SELECT total, b, s_lo, v_lo, s_hi, v_hi, s_nan, finite, nans FROM ("
            " SELECT toInt64(0) AS b, step AS s_lo, value AS v_lo, step AS s_hi, value AS v_hi,"
            " step AS s_nan, toUInt64(1) AS finite, toUInt64(0) AS nans, ts AS t"
            f" FROM {table} WHERE {cond} AND total <= {{points:UInt32}}"
            " UNION ALL"
            # Int128: (step - lo) * buckets cannot overflow.
            " SELECT toInt64(intDiv((toInt128(step) - lo) * buckets, span)) AS b,"
            f" argMinIf(step, value, {finite}), minIf(value, {finite}),"
            f" argMaxIf(step, value, {finite}), maxIf(value, {finite}),"
            f" minIf(step, isNaN(value)), countIf({finite}), countIf(isNaN(value)),"
            " toDateTime64(0, 6, 'UTC')"
            f" FROM {table} WHERE {cond} AND total > {{points:UInt32}} GROUP BY b"
            ") ORDER BY b, s_lo, t",
            params,
        )
        total = int(rows[0][0]) if rows else 0
        downsampled = total > points
        out: list[list[Any]] = []
        if not downsampled:
            out = [[s_lo, json_number(v_lo)] for _, _, s_lo, v_lo, *_ in rows]
        for _, _, s_lo, v_lo, s_hi, v_hi, s_nan, n_finite, n_nan in rows if downsampled else ():
            add_bucket(out, s_lo, v_lo, s_hi, v_hi, s_nan, n_finite, n_nan)
        return {"name": name, "points": out, "total": total, "downsampled": downsampled}

    # -- logs ------------------------------------------------------------

    def search_logs(
        self,
        run_id: str,
        q: str | None = None,
        regex: str | None = None,
        level: str | Sequence[str] | None = None,
        node: str | None = None,
        rank: int | None = None,
        stream: str | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
        limit: int = 500,
        cursor: str | None = None,
        order: str = "asc",
        tag: str | None = None,
    ) -> dict[str, Any]:
        """A page of a run's log lines and the cursor of the next page (``None`` on the last).

        ``q``: lines containing it, case-insensitively, in the text without
        ANSI codes (a grep -i -F); ``regex``: RE2 over the same text;
        ``level``: one level or a comma-separated list; ``since_ns`` and
        ``until_ns`` are inclusive.  Lines come in time order (ties: producer,
        seq, index), oldest first, or newest first with ``order="desc"``;
        ``limit`` is capped at 10000; ``tag`` keeps lines with that signature
        tag.  Each line carries ``id``, its position (for :meth:`log_context`).
        Raises :class:`QueryError` for a bad regex, level, stream, order or cursor.
        """
        if order not in ("asc", "desc"):
            raise QueryError("order must be asc or desc")
        limit = min(bounded(limit, 1, None, "limit"), MAX_LOG_LIMIT)
        if regex:
            self._check_regex(regex)
        cond, params = log_filter(
            q=q,
            regex=regex,
            level=level,
            node=node,
            rank=rank,
            stream=stream,
            tag=tag,
            since_ns=since_ns,
            until_ns=until_ns,
        )
        cond.insert(0, "run_id = {run:String}")
        params.update(run=run_id, limit=limit + 1)
        if cursor:
            c_ts, c_producer, c_seq, c_idx = decode_cursor(cursor)
            op, bound = (">", ">=") if order == "asc" else ("<", "<=")
            cond.append(f"ts {bound} fromUnixTimestamp64Micro({{c_ts:Int64}}, 'UTC')")
            cond.append(
                f"(ts, producer, seq, idx) {op} (fromUnixTimestamp64Micro({{c_ts:Int64}}, 'UTC'), "
                "{c_producer:String}, {c_seq:UInt64}, {c_idx:UInt32})"
            )
            params.update(c_ts=c_ts, c_producer=c_producer, c_seq=c_seq, c_idx=c_idx)
        direction = "ASC" if order == "asc" else "DESC"
        rows = self._rows(
            "SELECT toUnixTimestamp64Micro(ts), node, rank, stream, level, logger, line, "
            "producer, seq, idx, tags, `group` "
            f"FROM {self._t[tables.LOGS]} WHERE {' AND '.join(cond)} "
            f"ORDER BY ts {direction}, producer {direction}, seq {direction}, idx {direction} "
            "LIMIT {limit:UInt32}",
            params,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        lines = [log_line(r) for r in rows]
        last = rows[-1] if rows else None
        next_cursor = encode_cursor(last[0], last[7], last[8], last[9]) if more and last else None
        return {"lines": lines, "next_cursor": next_cursor}

    def _check_regex(self, regex: str) -> None:
        try:
            self._rows("SELECT match('', {re:String})", {"re": regex})
        except QueryError as exc:
            raise QueryError(f"regex is not valid RE2: {_reason(str(exc))}") from None

    # -- evaluations, alerts, dead letters ---------------------------------

    def dead_letters(self, limit: int = 100) -> dict[str, Any]:
        """``{"items": [...]}``: the newest dead letters first (``limit`` capped at 10000)."""
        limit = min(bounded(limit, 1, None, "limit"), MAX_DLQ_LIMIT)
        rows = self._rows(
            "SELECT toUnixTimestamp64Micro(ts), topic, reason, sample, partition, offset, "
            "producer, seq, "
            f"idx, run_id FROM {self._t[tables.DEAD_LETTERS]} "
            "ORDER BY ts DESC, topic, partition, offset DESC, idx LIMIT {limit:UInt32}",
            {"limit": limit},
        )
        keys = (
            "ts",
            "topic",
            "reason",
            "sample",
            "partition",
            "offset",
            "producer",
            "seq",
            "index",
            "run_id",
        )
        items = [dict(zip(keys, r, strict=True)) for r in rows]
        for item in items:
            item["ts"] = format_ns(item["ts"] * 1000)
        return {"items": items}


def _series_filter(run_id: str, name: str, since_ns: int | None, until_ns: int | None) -> tuple[str, dict[str, Any]]:
    cond = ["run_id = {run:String}", "name = {name:String}"]
    params: dict[str, Any] = {"run": run_id, "name": name}
    time_range(cond, params, since_ns, until_ns)
    return " AND ".join(cond), params


def _parse_json(text: str) -> Any:
    if not text:
        return {}
    try:
        return json.loads(text)
    except ValueError:
        return {"_raw": text}


def _reason(message: str) -> str:
    """The ClickHouse message without its code prefix and error name."""
    text = message.split("DB::Exception:", 1)[-1].strip()
    return text.rsplit(" (", 1)[0] if text.endswith(")") else text


__all__ = [
    "ROLLUP_STEPS",
    "QueryLimits",
    "Queries",
    "decode_cursor",
    "derive_status",
    "encode_cursor",
    "json_number",
    "like_pattern",
]
