"""Coarse metric charts from ``metric_rollup`` (migrations 003, 005, 008): whole runs and time ranges.

The rollup holds, per series and block of :data:`ROLLUP_STEPS` steps, the
lowest and highest finite point (each packed into one integer, read back as
``(value, step)`` by :func:`rollup_point`), the first NaN's step, the point
counts and the block's first and last time.  A coarse chart cuts the blocks
into buckets of whole blocks and gives each bucket its low, its high and its
first NaN, exactly what a scan of the points would give, from a
few thousand rollup rows instead of a million points.  With a time range,
blocks whose first and last time both lie inside it come from the rollup and
the few blocks the range cuts through (usually the two at its ends) are read
point by point, so the answer is still exact.

A mixin of :class:`sinks.queries.Queries` (its store, limits and table
names); every value is bound server-side.
"""

from __future__ import annotations

import math
from typing import Any

from runstream import tables
from sinks.logfilter import time_range

METRIC_ROLLUP = "metric_rollup"
#: Steps per rollup block (``block = step >> 8``).
ROLLUP_STEPS = 256

_SERIES = "run_id = {run:String} AND name = {name:String}"
_SIGN = 1 << 63
_ONES = (1 << 64) - 1


def rollup_point(key: str) -> str:
    """SQL of the ``(value, step)`` tuple that a rollup ``low``/``high`` key stands for in its ``block``.

    The key (migration 008) is a UInt128: the value's bits made to order as
    the numbers do in its high 64 bits (positive: sign bit set; negative: all
    bits flipped; -0.0 stored as +0.0), the step within the block shifted left
    by one above a bit that says the value was -0.0.
    """
    ordered = f"toUInt64(bitShiftRight({key}, 64))"
    bits = f"bitXor({ordered}, if({ordered} >= {_SIGN}, {_SIGN}, {_ONES}))"
    value = f"if(bitAnd({key}, 1) = 1, -0., reinterpretAsFloat64({bits}))"
    step = f"bitShiftLeft(block, 8) + toInt64(bitAnd(bitShiftRight({key}, 1), 255))"
    return f"({value}, {step})"


#: The per-block rows of a series from the rollup: block, low and high as ``(value, step)``,
#: first NaN step, finite and NaN counts (a GROUP BY block over the series' rollup rows).
_BLOCKS = (
    f"SELECT block, minIfMerge(low) AS lo_key, maxIfMerge(high) AS hi_key, {rollup_point('lo_key')} AS lo, "
    f"{rollup_point('hi_key')} AS hi, minIfMerge(nan_step) AS s_nan, sum(finite) AS nf, sum(nans) AS nn"
)


def _per_bucket(total: str) -> str:
    """Buckets of the per-block rows in ``pts``: each one's low, high, first NaN and counts.

    The block range and NaN presence size the buckets; they are window
    aggregates, so ``pts`` is computed once.  ``total`` is the SQL expression
    of the series' point count (it may be a window aggregate over ``pts``).
    """
    return (
        "SELECT total, blocks, buckets, intDiv(block - b0, intDiv(blocks + buckets - 1, buckets)) AS b, "
        "minIf(lo, nf > 0), maxIf(hi, nf > 0), minIf(s_nan, nn > 0), sum(nf), sum(nn) FROM ("
        " SELECT *, b1 - b0 + 1 AS blocks,"
        " toInt64(if(any_nan > 0, intDiv({points:UInt32}, 3), intDiv({points:UInt32}, 2))) AS buckets FROM ("
        "  SELECT *, min(block) OVER () AS b0, max(block) OVER () AS b1, sum(nn) OVER () AS any_nan,"
        f"  {total} AS total FROM pts)) "
        "GROUP BY total, blocks, buckets, b ORDER BY b"
    )


def json_number(x: float | None) -> float | str | None:
    """A float as JSON allows it: NaN and ±Inf become ``"NaN"``, ``"Infinity"``, ``"-Infinity"``."""
    if x is None or math.isfinite(x):
        return x
    return "NaN" if math.isnan(x) else ("Infinity" if x > 0 else "-Infinity")


def add_bucket(
    out: list[list[Any]], s_lo: int, v_lo: float, s_hi: int, v_hi: float, s_nan: int, n_finite: int, n_nan: int
) -> None:
    """Append one bucket's low, high and first NaN to ``out`` in step order, each point once."""
    picked = [(s_lo, v_lo), (s_hi, v_hi)] if n_finite else []
    if n_nan:
        picked.append((s_nan, math.nan))
    for step, value in sorted(picked, key=lambda p: p[0]):
        pair = [step, json_number(value)]
        if pair not in out[-3:]:  # a bucket's min and max may be one point
            out.append(pair)


class MetricViews:
    """Rollup-based series (mixed into ``Queries``)."""

    _t: dict[str, str]

    def _rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _rollup_series(self, run_id: str, name: str, points: int) -> dict[str, Any] | None:
        """The whole series from the rollup, or ``None`` when its blocks are too coarse for ``points``."""
        rollup = self._t[METRIC_ROLLUP]
        # The total is counted in the raw table (a primary-key range, two small columns),
        # so a block stored twice (a backfill racing an insert) could never inflate it.
        return self._bucketed(
            f"WITH pts AS ({_BLOCKS} FROM {rollup} WHERE {_SERIES} GROUP BY block), "
            f"(SELECT count() FROM {self._t[tables.METRICS]} WHERE {_SERIES}) AS counted " + _per_bucket("counted"),
            {"run": run_id, "name": name, "points": points},
            name,
            points,
        )

    def _ranged_rollup_series(
        self, run_id: str, name: str, points: int, since_ns: int | None, until_ns: int | None
    ) -> dict[str, Any] | None:
        """The points logged in ``[since_ns, until_ns]`` from the rollup and the blocks the range cuts.

        ``None`` when there are few points or the blocks are too coarse for
        ``points``.  Steps logged out of time order (a run resumed from a
        checkpoint) only make more blocks cut through, read point by point.
        """
        rollup = self._t[METRIC_ROLLUP]
        raw, params = [_SERIES], {"run": run_id, "name": name, "points": points}
        time_range(raw, params, since_ns, until_ns)
        start = "fromUnixTimestamp64Micro({since:Int64}, 'UTC')"
        end = "fromUnixTimestamp64Micro({until:Int64}, 'UTC')"
        inside = [f"min(first_ts) >= {start}"] if since_ns is not None else []
        touches = [f"max(last_ts) >= {start}"] if since_ns is not None else []
        if until_ns is not None:
            inside.append(f"max(last_ts) <= {end}")
            touches.append(f"min(first_ts) <= {end}")
        whole, cut = " AND ".join(inside), " AND ".join(touches)
        metrics, in_range = self._t[tables.METRICS], " AND ".join(raw)
        # The steps of the blocks the range cuts through, as a set: `step IN` a set reads
        # only their granules through the primary key (run, name, step).
        cut_steps = (
            f"SELECT arrayJoin(range(block * {ROLLUP_STEPS}, (block + 1) * {ROLLUP_STEPS})) FROM ("
            f"SELECT block FROM {rollup} WHERE {_SERIES} GROUP BY block HAVING {cut} AND NOT ({whole}))"
        )
        # The total adds the rollup's counts of whole blocks to the cut blocks' points in range
        # (reading every point's time to count them cost as much as the rest of the chart).
        return self._bucketed(
            f"WITH pts AS (SELECT block, lo, hi, s_nan, nf, nn FROM ("
            f"{_BLOCKS} FROM {rollup} WHERE {_SERIES} GROUP BY block HAVING {whole}) "
            "UNION ALL "
            "SELECT bitShiftRight(step, 8), (value, step), (value, step), step, "
            "toUInt64(NOT isNaN(value)), toUInt64(isNaN(value)) "
            f"FROM {metrics} WHERE {in_range} AND step IN ({cut_steps})) " + _per_bucket("sum(nf + nn) OVER ()"),
            params,
            name,
            points,
        )

    def _bucketed(self, sql: str, params: dict[str, Any], name: str, points: int) -> dict[str, Any] | None:
        """Run a per-bucket query; ``None`` for no points, few points, or fewer blocks than buckets."""
        rows = self._rows(sql, params)
        if not rows:
            return None
        total, blocks, buckets = rows[0][:3]
        if total <= points or blocks < buckets:
            return None  # short, or too few blocks for the resolution asked: bucket raw points
        out: list[list[Any]] = []
        for *_, (v_lo, s_lo), (v_hi, s_hi), s_nan, n_finite, n_nan in rows:
            add_bucket(out, s_lo, v_lo, s_hi, v_hi, s_nan, n_finite, n_nan)
        return {"name": name, "points": out, "total": int(total), "downsampled": True}
