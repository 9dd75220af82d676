"""Per-run views beyond metrics and logs: resources, evaluations, alerts, multi-run metric charts.

A mixin of :class:`sinks.queries.Queries` (it uses that class's store,
limits and table names); every value is bound server-side and every query
runs under the same cost limits.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from runstream import tables
from runstream.errors import QueryError
from runstream.timeparse import format_ns
from sinks.logfilter import bounded, time_range

MAX_COMPARE_RUNS = 20
MAX_ALERTS = 10_000
MAX_EVALS = 1_000
#: Run-list sort keys besides ``metric:NAME[:last|min|max]``.
RUN_SORT_KEYS = ("started_at", "ended_at", "duration_s", "name", "project", "status", "id")


def _num(x: Any) -> Any:
    from sinks.queries import json_number

    return json_number(x)


class RunViews:
    """Resources, evaluations, alerts and comparisons (mixed into ``Queries``)."""

    _t: dict[str, str]

    def _rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def metric_series(
        self,
        run_id: str,
        name: str,
        points: int = 1000,
        since_ns: int | None = None,
        until_ns: int | None = None,
    ) -> dict[str, Any]:
        raise NotImplementedError

    # -- resources ---------------------------------------------------------

    def resource_series(
        self,
        run_id: str,
        points: int = 1000,
        since_ns: int | None = None,
        until_ns: int | None = None,
    ) -> dict[str, Any]:
        """``{"series": [{"node", "device", "name", "points": [[ts, value], ...]}]}``, by node, device, name.

        Every series has at most ``points`` points: the time range is cut into
        ``points // 2`` buckets and each bucket gives its lowest and its
        highest sample, so no peak is lost; all samples when fewer.  Raises
        :class:`QueryError` unless ``3 <= points <= 100000``.
        """
        bounded(points, 3, 100_000, "points")
        cond = ["run_id = {run:String}"]
        params: dict[str, Any] = {"run": run_id, "buckets": points // 2}
        time_range(cond, params, since_ns, until_ns)
        where = " AND ".join(cond)
        res = self._t[tables.RESOURCES]
        # Per series: bucket by time over that series' own span; min and max per bucket.
        rows = self._rows(
            "SELECT node, device, name, b, argMin(toUnixTimestamp64Micro(ts), value), min(value), "
            "argMax(toUnixTimestamp64Micro(ts), value), max(value), any(n) FROM ("
            " SELECT node, device, name, ts, value,"
            " count() OVER w AS n,"
            " if(n <= {buckets:UInt32} * 2, toInt64(row_number() OVER (w ORDER BY ts)),"
            " intDiv((toUnixTimestamp64Micro(ts) - toUnixTimestamp64Micro(min(ts) OVER w)) * {buckets:UInt32},"
            " toUnixTimestamp64Micro(max(ts) OVER w) - toUnixTimestamp64Micro(min(ts) OVER w) + 1)) AS b"
            f" FROM {res} WHERE {where}"
            " WINDOW w AS (PARTITION BY node, device, name)"
            ") GROUP BY node, device, name, b ORDER BY node, device, name, b",
            params,
        )
        series: dict[tuple[str, str, str], list[list[Any]]] = {}
        for node, device, name, _, t_lo, v_lo, t_hi, v_hi, _n in rows:
            out = series.setdefault((node, device, name), [])
            for t, v in sorted({(t_lo, v_lo), (t_hi, v_hi)}, key=lambda p: p[0]):
                out.append([format_ns(t * 1000), _num(v)])
        return {
            "series": [
                {"node": node, "device": device, "name": name, "points": pts}
                for (node, device, name), pts in series.items()
            ]
        }

    def resource_summary(self, run_id: str) -> dict[str, Any]:
        """Per node and device: avg and max utilisation (GPU ``util_pct``, host ``cpu_pct``), peak memory used
        (the device's, or the whole machine's RAM) and the run's own peak (the sampled process tree's:
        ``proc_rss_bytes`` on a host, ``proc_mem_used_bytes`` on a GPU; with several ranks on a node, the
        largest rank's).

        ``{"devices": [{"node", "device", "util_avg", "util_max", "mem_peak_bytes", "proc_peak_bytes"}],
        "gpu_util_avg", "gpu_util_max", "gpu_mem_peak_bytes"}`` (``None`` where not sampled).
        """
        rows = self._rows(
            "SELECT node, device, avgIf(value, name IN ('util_pct', 'cpu_pct') AND isFinite(value)), "
            "maxIf(value, name IN ('util_pct', 'cpu_pct') AND isFinite(value)), "
            "maxIf(value, name = 'mem_used_bytes' AND isFinite(value)), "
            "maxIf(value, name IN ('proc_rss_bytes', 'proc_mem_used_bytes') AND isFinite(value)), "
            "countIf(name IN ('util_pct', 'cpu_pct')), countIf(name = 'mem_used_bytes'), "
            "countIf(name IN ('proc_rss_bytes', 'proc_mem_used_bytes') AND isFinite(value)) "
            f"FROM {self._t[tables.RESOURCES]} WHERE run_id = {{run:String}} "
            "GROUP BY node, device ORDER BY node, device",
            {"run": run_id},
        )
        devices = [
            {
                "node": node,
                "device": device,
                "util_avg": _num(avg) if n_util else None,
                "util_max": _num(high) if n_util else None,
                "mem_peak_bytes": _num(mem) if n_mem else None,
                "proc_peak_bytes": _num(proc) if n_proc else None,
            }
            for node, device, avg, high, mem, proc, n_util, n_mem, n_proc in rows
        ]
        gpus = [d for d in devices if str(d["device"]).startswith("gpu")]
        util = [d for d in gpus if d["util_avg"] is not None]
        mem = [d["mem_peak_bytes"] for d in gpus if d["mem_peak_bytes"] is not None]
        return {
            "devices": devices,
            "gpu_util_avg": sum(d["util_avg"] for d in util) / len(util) if util else None,
            "gpu_util_max": max(d["util_max"] for d in util) if util else None,
            "gpu_mem_peak_bytes": max(mem) if mem else None,
        }

    # -- evaluations and alerts ------------------------------------------------

    def evals(self, run_id: str, limit: int = MAX_EVALS) -> dict[str, Any]:
        """``{"evals": [{"ts", "name", "type", "node", "rank", "data"}]}`` of a run, oldest first.

        A record delivered twice is listed once (same producer, seq, index).
        """
        bounded(limit, 1, MAX_EVALS, "limit")
        rows = self._rows(
            "SELECT toUnixTimestamp64Micro(ts), name, type, node, rank, data "
            f"FROM {self._t[tables.EVALS]} WHERE run_id = {{run:String}} "
            "ORDER BY ts, name, producer, seq, idx LIMIT 1 BY producer, seq, idx LIMIT {limit:UInt32}",
            {"run": run_id, "limit": limit},
        )
        return {
            "evals": [
                {"ts": format_ns(t * 1000), "name": name, "type": kind, "node": node, "rank": rank, "data": _json(data)}
                for t, name, kind, node, rank, data in rows
            ]
        }

    def alerts(self, run_id: str, limit: int = 1000) -> dict[str, Any]:
        """``{"alerts": [{"ts", "kind", "severity", "message", "node", "rank", "key", "metric", "value"}]}``.

        Oldest first; one per alert key however often it was delivered or raised.
        """
        bounded(limit, 1, MAX_ALERTS, "limit")
        rows = self._rows(
            "SELECT toUnixTimestamp64Micro(ts), kind, severity, message, node, rank, key, metric, value "
            f"FROM {self._t[tables.ALERTS]} FINAL WHERE run_id = {{run:String}} "
            "ORDER BY ts, key LIMIT {limit:UInt32}",
            {"run": run_id, "limit": limit},
        )
        keys = ("ts", "kind", "severity", "message", "node", "rank", "key", "metric", "value")
        out = []
        for r in rows:
            item = dict(zip(keys, r, strict=True))
            item["ts"] = format_ns(item["ts"] * 1000)
            item["value"] = _num(item["value"])
            out.append(item)
        return {"alerts": out}

    # -- several runs ------------------------------------------------------------

    def compare_metric(
        self,
        run_ids: Sequence[str],
        name: str,
        points: int = 1000,
        since_ns: int | None = None,
        until_ns: int | None = None,
    ) -> dict[str, Any]:
        """``{"name", "series": [{"run", "points", "total", "downsampled"}]}``: one metric of several runs.

        Each run's series as :meth:`Queries.metric_series` gives it.  Raises
        :class:`QueryError` for no run or more than 20.
        """
        runs = list(dict.fromkeys(run_ids))
        if not runs or len(runs) > MAX_COMPARE_RUNS:
            raise QueryError(f"runs must name 1 to {MAX_COMPARE_RUNS} runs")
        series = []
        for run in runs:
            one = self.metric_series(run, name, points=points, since_ns=since_ns, until_ns=until_ns)
            series.append({"run": run, **{k: v for k, v in one.items() if k != "name"}})
        return {"name": name, "series": series}


def sort_runs(runs: list[dict[str, Any]], sort: str | None, order: str | None) -> list[dict[str, Any]]:
    """``runs`` sorted by ``sort`` (a key of :data:`RUN_SORT_KEYS` or ``metric:NAME[:last|min|max]``).

    Runs without the value (no such metric, still running) come last in
    either order.  Raises :class:`QueryError` for an unknown key or order.
    """
    if order not in (None, "asc", "desc"):
        raise QueryError("order must be asc or desc")
    if not sort:
        return runs
    if sort.startswith("metric:"):
        metric, _, stat = sort[len("metric:") :].partition(":")
        stat = stat or "last"
        if not metric or stat not in ("last", "min", "max"):
            raise QueryError("sort=metric:NAME takes an optional :last, :min or :max")

        def value(run: dict[str, Any]) -> Any:
            v = run.get("summary", {}).get(metric, {}).get(stat)
            return v if isinstance(v, (int, float)) else None

    elif sort in RUN_SORT_KEYS:

        def value(run: dict[str, Any]) -> Any:
            return run.get(sort)

    else:
        raise QueryError(f"sort must be one of {', '.join(RUN_SORT_KEYS)} or metric:NAME[:last|min|max]")
    have = [r for r in runs if value(r) is not None]
    missing = [r for r in runs if value(r) is None]
    have.sort(key=lambda r: (value(r), r["id"]), reverse=(order or "asc") == "desc")
    return have + missing


def _json(text: str) -> Any:
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return {"_raw": text}
