"""Log views beyond one page of a run: match histogram, a hit's surrounding lines, project-wide search.

A mixin of :class:`sinks.queries.Queries` (it uses the store, the limits and
the table names that class holds); every value is bound server-side and
every query runs under the same cost limits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from runstream import tables
from runstream.errors import QueryError
from runstream.timeparse import format_ns
from sinks.cursor import decode_cursor, encode_cursor
from sinks.logfilter import bounded, log_filter

MAX_BUCKETS = 1_000
MAX_CONTEXT = 500
MAX_PROJECT_LIMIT = 10_000
_COLUMNS = "toUnixTimestamp64Micro(ts), node, rank, stream, level, logger, line, producer, seq, idx, tags, `group`"


class LogViews:
    """Histogram, context and project-wide search (mixed into ``Queries``)."""

    _t: dict[str, str]

    def _rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _check_regex(self, regex: str) -> None:
        raise NotImplementedError

    def log_histogram(
        self,
        run_id: str,
        buckets: int = 100,
        since_ns: int | None = None,
        until_ns: int | None = None,
        **filters: Any,
    ) -> dict[str, Any]:
        """``{"buckets": [{"ts", "count"}], "width_s", "total"}``: matching lines per time bucket.

        The buckets span the run's first to last line (any line, matching or
        not) within ``since``..``until``, so that a range much longer than
        the run (``7d`` over a ten-minute run) still spreads its lines over
        the buckets; every bucket is listed, empty ones with 0, and none
        when the run has no line in the range.  ``filters`` are those of
        :meth:`Queries.search_logs` (q, regex, level, node, rank, stream,
        tag).  Raises :class:`QueryError` unless ``1 <= buckets <= 1000``,
        or for a bad filter.
        """
        bounded(buckets, 1, MAX_BUCKETS, "buckets")
        if filters.get("regex"):
            self._check_regex(filters["regex"])
        logs = self._t[tables.LOGS]
        span, span_params = log_filter(since_ns=since_ns, until_ns=until_ns)
        span.insert(0, "run_id = {run:String}")
        n_lines, lo_us, hi_us = self._rows(
            "SELECT count(), toUnixTimestamp64Micro(min(ts)), toUnixTimestamp64Micro(max(ts)) "
            f"FROM {logs} WHERE {' AND '.join(span)}",
            {**span_params, "run": run_id},
        )[0]
        if not n_lines:
            return {"buckets": [], "width_s": 0.0, "total": 0}
        width = max(1, -(-(hi_us - lo_us + 1) // buckets))
        cond, params = log_filter(since_ns=lo_us * 1000, until_ns=hi_us * 1000, **filters)
        cond.insert(0, "run_id = {run:String}")
        params.update(run=run_id, lo=lo_us, width=width)
        counts = dict(
            self._rows(
                "SELECT intDiv(toUnixTimestamp64Micro(ts) - {lo:Int64}, {width:Int64}) AS b, count() "
                f"FROM {logs} WHERE {' AND '.join(cond)} GROUP BY b ORDER BY b",
                params,
            )
        )
        n = -(-(hi_us - lo_us + 1) // width)
        out = [{"ts": format_ns((lo_us + b * width) * 1000), "count": int(counts.get(b, 0))} for b in range(n)]
        return {"buckets": out, "width_s": width / 1e6, "total": sum(b["count"] for b in out)}

    def log_context(
        self,
        run_id: str,
        at: str,
        before: int = 20,
        after: int = 20,
        node: str | None = None,
        rank: int | None = None,
    ) -> dict[str, Any]:
        """``{"before": [...], "line": {...} | None, "after": [...]}``: the lines around one line.

        ``at`` is a line's ``id`` (from a search answer); ``before``/``after``
        count lines in the run's time order (ties: producer, seq, index),
        optionally of one node or rank only.  ``line`` is ``None`` when the
        run has no line at that position.  Raises :class:`QueryError` for a
        bad id or counts outside 0..500.
        """
        bounded(before, 0, MAX_CONTEXT, "before")
        bounded(after, 0, MAX_CONTEXT, "after")
        ts_us, producer, seq, idx = decode_cursor(at)
        cond, params = log_filter(node=node, rank=rank)
        cond.insert(0, "run_id = {run:String}")
        params.update(run=run_id, c_ts=ts_us, c_producer=producer, c_seq=seq, c_idx=idx)
        key = "(fromUnixTimestamp64Micro({c_ts:Int64}, 'UTC'), {c_producer:String}, {c_seq:UInt64}, {c_idx:UInt32})"
        where = " AND ".join(cond)
        logs = self._t[tables.LOGS]

        def side(op: str, direction: str, n: int) -> list[dict[str, Any]]:
            if n == 0:
                return []
            rows = self._rows(
                f"SELECT {_COLUMNS} FROM {logs} WHERE {where} AND (ts, producer, seq, idx) {op} {key} "
                f"ORDER BY ts {direction}, producer {direction}, seq {direction}, idx {direction} "
                "LIMIT {n:UInt32}",
                {**params, "n": n},
            )
            return [log_line(r) for r in rows]

        hit = self._rows(
            f"SELECT {_COLUMNS} FROM {logs} WHERE run_id = {{run:String}} "
            "AND ts = fromUnixTimestamp64Micro({c_ts:Int64}, 'UTC') AND producer = {c_producer:String} "
            "AND seq = {c_seq:UInt64} AND idx = {c_idx:UInt32} LIMIT 1",
            params,
        )
        return {
            "before": side("<", "DESC", before)[::-1],
            "line": log_line(hit[0]) if hit else None,
            "after": side(">", "ASC", after),
        }

    def search_project_logs(
        self,
        project: str | None = None,
        limit: int = 500,
        cursor: str | None = None,
        order: str = "desc",
        run_ids: Sequence[str] | None = None,
        **filters: Any,
    ) -> dict[str, Any]:
        """A page of log lines across every run of ``project`` (all runs when ``None``).

        Like :meth:`Queries.search_logs`, each line also naming its ``run``;
        newest first by default.  ``run_ids`` narrows to those runs.  Raises
        :class:`QueryError` for a bad filter, order or cursor.
        """
        if order not in ("asc", "desc"):
            raise QueryError("order must be asc or desc")
        bounded(limit, 1, MAX_PROJECT_LIMIT, "limit")
        if filters.get("regex"):
            self._check_regex(filters["regex"])
        cond, params = log_filter(**filters)
        if project is not None:
            cond.insert(
                0,
                f"run_id IN (SELECT DISTINCT run_id FROM {self._t[tables.RUN_EVENTS]} "
                "WHERE project = {project:String})",
            )
            params["project"] = project
        if run_ids is not None:
            cond.insert(0, "run_id IN {runs:Array(String)}")
            params["runs"] = list(run_ids)
        if cursor:
            c_ts, c_producer, c_seq, c_idx = decode_cursor(cursor)
            op = ">" if order == "asc" else "<"
            cond.append(
                f"(ts, producer, seq, idx) {op} (fromUnixTimestamp64Micro({{c_ts:Int64}}, 'UTC'), "
                "{c_producer:String}, {c_seq:UInt64}, {c_idx:UInt32})"
            )
            params.update(c_ts=c_ts, c_producer=c_producer, c_seq=c_seq, c_idx=c_idx)
        params["limit"] = limit + 1
        d = "ASC" if order == "asc" else "DESC"
        rows = self._rows(
            f"SELECT {_COLUMNS}, run_id FROM {self._t[tables.LOGS]} "
            f"WHERE {' AND '.join(cond) or '1'} "
            f"ORDER BY ts {d}, producer {d}, seq {d}, idx {d} LIMIT {{limit:UInt32}}",
            params,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        lines = [dict(log_line(r), run=r[12]) for r in rows]
        last = rows[-1] if rows else None
        next_cursor = encode_cursor(last[0], last[7], last[8], last[9]) if more and last else None
        return {"lines": lines, "next_cursor": next_cursor}


def log_line(r: Sequence[Any]) -> dict[str, Any]:
    """One answer line from ``(ts_us, node, rank, stream, level, logger, line, producer, seq, idx, tags, group)``."""
    return {
        "ts": format_ns(r[0] * 1000),
        "node": r[1],
        "rank": r[2],
        "stream": r[3],
        "level": r[4],
        "logger": r[5],
        "line": r[6],
        "tags": list(r[10]),
        "group": r[11],
        "id": encode_cursor(r[0], r[7], r[8], r[9]),
    }
