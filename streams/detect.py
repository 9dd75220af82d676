"""Detectors: pure functions over explicit state objects, producing alert records.

Each detector takes its state (a small, bounded, plain-data object that can
be kept in a faust table and restored from its changelog) and one input, and
returns the alerts it raises (``runstream.events.alerts`` records without
``i``).  Alert ``key``s are deterministic, built from the input's identity, so
a replay, or two workers seeing one record, never yields two alerts:

- ``nan_loss``: a metric whose name contains ``loss`` (not a loss scale or a
  scaled loss of mixed precision, see :func:`streams.losses.is_loss`) is NaN or ±Inf.  Key
  ``nan_loss/{node}/{rank}/{metric}``: one alert per rank and metric per run.
- ``loss_spike``: a loss value well above the previous
  :attr:`DetectorSettings.spike_window` values of its series (once there are
  ``spike_min_points``), judged against their level, spread and tail: *high*
  when at least ``spike_ratio`` times their median, more than ``spike_run_z``
  robust deviations above it (``z = 0.6745 * (x - median) / MAD``) and above the
  highest of them and of the values before them still in memory (one to two
  windows' worth).  An alert when a high value is extreme (``z > spike_z`` and
  its rise above the median ``spike_tail`` times the tail's), else when
  ``spike_run`` values in a row, or ``spike_run + 1`` of the last
  ``2 * spike_run - 1``, are high; one alert per rise (the next needs
  ``2 * spike_run - 1`` values in a row that are not high).  Ordinary
  minibatch noise, whose single steps near convergence reach tens of times
  the median, raises none.  Key ``loss_spike/{node}/{rank}/{metric}/{step}``
  (the step of the value that raised it).  See :mod:`streams.losses` for why
  and for how it stays cheap per value.
- ``oom``, ``nccl_error``, ``nccl_timeout``, ``segfault``, ``killed``: a log line
  tagged so (:mod:`streams.signatures`).  Key ``{kind}/{group or producer/seq/i}``:
  one alert per traceback, or per line outside one.
- ``gpu_idle``: a GPU's utilisation stayed below ``idle_util_pct`` for
  ``idle_after_s`` while the run is running.  Key ``gpu_idle/{node}/{device}/{start_ts_ns}``.
- ``silent_rank``: one rank sent nothing for ``silent_after_s`` while another
  rank of the run kept sending.  Key ``silent_rank/{node}/{rank}/{last_ts_ns}``.
- ``straggler``: a rank's median step time exceeds the median over ranks by
  ``straggler_ratio`` (step time = ts difference between consecutive steps of
  that rank's metrics).  Key ``straggler/{node}/{rank}/{step}``.
- ``stalled``: no heartbeat (no ``runs`` record of any rank) for
  ``crashed_after_s`` while the run is running; the sink derives ``crashed``
  from the same rule at query time.  Key ``stalled/{last_heartbeat_ts_ns}``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import chain, compress, islice, repeat
from operator import contains, floordiv, itemgetter, lt, sub
from typing import Any

from streams.alerts import alert_record
from streams.losses import SeriesState, is_loss, on_loss_column, on_metric

__all__ = [
    "NS",
    "DetectorSettings",
    "GpuState",
    "MetricsState",
    "RunState",
    "SeriesState",
    "apply_metrics",
    "apply_runs",
    "check_run",
    "is_loss",
    "on_gpu_sample",
    "on_log",
    "on_log_levels",
    "on_loss_column",
    "on_metric",
    "on_metric_values",
    "on_seen",
    "on_step",
    "on_step_column",
]

NS = 1_000_000_000

LOG_ALERT_TAGS = {
    "oom": "error",
    "nccl_error": "error",
    "nccl_timeout": "error",
    "segfault": "error",
    "killed": "error",
}


@dataclass(frozen=True)
class DetectorSettings:
    """Thresholds of the detectors (units in the names)."""

    spike_window: int = 50
    spike_min_points: int = 20
    #: loss_spike (see the module's docstring): a high value is at least this many times the window's median,
    spike_ratio: float = 3.0
    #: and more than this many robust deviations above it (and above the recent tail);
    spike_run_z: float = 4.0
    #: this many high values in a row (or one more among the last ``2 * spike_run - 1``) are a spike;
    spike_run: int = 3
    #: and one high value is, at once, when its robust z exceeds this
    spike_z: float = 8.0
    #: and its rise above the median is at least this many times the recent tail's.
    spike_tail: float = 10.0
    idle_util_pct: float = 5.0
    idle_after_s: float = 60.0
    silent_after_s: float = 120.0
    straggler_ratio: float = 1.5
    straggler_window: int = 20
    crashed_after_s: float = 60.0

    def __post_init__(self) -> None:
        """Refuse windows the detectors cannot work with (raises ``ValueError``)."""
        if self.spike_window < 1 or self.spike_min_points < 1 or self.spike_run < 1:
            raise ValueError("spike_window, spike_min_points and spike_run must be at least 1")
        if not self.spike_ratio >= 1:
            raise ValueError("spike_ratio must be at least 1")
        if self.straggler_window < 0:
            raise ValueError("straggler_window must be at least 0")


# -- logs -----------------------------------------------------------------------------------------


def on_log(record: dict[str, Any], *, producer: str, seq: int, node: str, rank: int) -> list[dict[str, Any]]:
    """Alerts for one enriched log record (its ``tags``); stateless."""
    tags = record.get("tags")
    if not tags:
        return []
    out = []
    ident = record.get("group") or f"{producer}/{seq}/{record.get('i', 0)}"
    line_rank = record.get("rank", rank)
    for tag in tags:
        severity = LOG_ALERT_TAGS.get(tag)
        if severity is not None:
            out.append(
                alert_record(
                    record["ts_ns"], tag, str(record.get("line", ""))[:512], node, line_rank, f"{tag}/{ident}", severity
                )
            )
    return out


# -- resources ------------------------------------------------------------------------------------


@dataclass
class GpuState:
    """Since when one GPU has been idle (0: busy), and whether that stretch was reported."""

    idle_since_ns: int = 0
    reported: bool = False

    def to_map(self) -> dict[str, Any]:
        """Plain data for a table value (msgpack), the inverse of :meth:`from_map`."""
        return {"s": self.idle_since_ns, "r": self.reported}

    @classmethod
    def from_map(cls, doc: dict[str, Any]) -> GpuState:
        return cls(idle_since_ns=int(doc.get("s", 0)), reported=bool(doc.get("r", False)))


def on_gpu_sample(
    state: GpuState,
    conf: DetectorSettings,
    *,
    running: bool,
    node: str,
    rank: int,
    device: str,
    ts_ns: int,
    util_pct: float,
) -> list[dict[str, Any]]:
    """Alerts for one GPU utilisation sample; updates ``state``."""
    if not running or not util_pct < conf.idle_util_pct:
        state.idle_since_ns, state.reported = 0, False
        return []
    if state.idle_since_ns == 0:
        state.idle_since_ns = ts_ns
    if state.reported or ts_ns - state.idle_since_ns < conf.idle_after_s * NS:
        return []
    state.reported = True
    idle_s = (ts_ns - state.idle_since_ns) / NS
    return [
        alert_record(
            ts_ns,
            "gpu_idle",
            f"{device} below {conf.idle_util_pct:g}% utilisation for {idle_s:.0f} s",
            node,
            rank,
            f"gpu_idle/{node}/{device}/{state.idle_since_ns}",
            metric=f"{device}/util_pct",
            value=util_pct,
        )
    ]


# -- run-wide (evaluated on a timer) --------------------------------------------------------------


@dataclass
class RunState:
    """What the run-wide detectors know about one run (bounded by its ranks).

    ``status`` follows the rule the sink applies at query time (``sinks/status.py``)
    over the ranks that sent a ``runs`` record: ``failed`` as soon as any rank
    finished failed, else ``killed`` if any rank was killed, ``finished`` once
    every such rank has finished, ``running`` until then.
    """

    status: str = "running"
    last_heartbeat_ns: int = 0
    #: "node/rank" -> ts of the last record of any kind from it
    last_seen_ns: dict[str, int] = field(default_factory=dict)
    #: "node/rank" -> [last step, ts of last step, recent step times in ns]
    steps: dict[str, list[Any]] = field(default_factory=dict)
    reported: list[str] = field(default_factory=list)
    #: "lines", "warnings" (WARNING), "errors" (ERROR and CRITICAL): log line counts
    counts: dict[str, int] = field(default_factory=dict)
    nodes: list[str] = field(default_factory=list)
    ranks: list[int] = field(default_factory=list)
    #: rank (as str) -> final status ("" while it has not finished), for every rank that sent a ``runs`` record
    lifecycle: dict[str, str] = field(default_factory=dict)

    def to_map(self) -> dict[str, Any]:
        """Plain data for a table value (msgpack), the inverse of :meth:`from_map`."""
        return {
            "status": self.status,
            "hb": self.last_heartbeat_ns,
            "seen": self.last_seen_ns,
            "steps": self.steps,
            "reported": self.reported,
            "counts": self.counts,
            "nodes": self.nodes,
            "ranks": self.ranks,
            "life": self.lifecycle,
        }

    @classmethod
    def from_map(cls, doc: dict[str, Any]) -> RunState:
        return cls(
            status=str(doc.get("status", "running")),
            last_heartbeat_ns=int(doc.get("hb", 0)),
            last_seen_ns=dict(doc.get("seen", {})),
            steps={k: list(v) for k, v in doc.get("steps", {}).items()},
            reported=list(doc.get("reported", ())),
            counts=dict(doc.get("counts", {})),
            nodes=list(doc.get("nodes", ())),
            ranks=list(doc.get("ranks", ())),
            lifecycle=dict(doc.get("life", {})),
        )

    def status_at(self, now_ns: int, conf: DetectorSettings) -> str:
        """The run's status at ``now_ns``: ``crashed`` once running without a heartbeat for ``crashed_after_s``."""
        if (
            self.status == "running"
            and self.last_heartbeat_ns
            and now_ns - self.last_heartbeat_ns > conf.crashed_after_s * NS
        ):
            return "crashed"
        return self.status


def run_status(lifecycle: dict[str, str]) -> str:
    """A run's status from its ranks' final statuses ("" while running); see :class:`RunState`."""
    finals = set(lifecycle.values())
    for wanted in ("failed", "killed"):
        if wanted in finals:
            return wanted
    if lifecycle and "" not in finals:
        return "finished"
    return "running"


#: Most alert keys of the run-wide detectors a run state remembers as reported (the newest are kept).
MAX_REPORTED = 256

#: Most distinct nodes (and ranks) a run state remembers; beyond, new ones are not listed (still counted).
MAX_MEMBERS = 4096


def on_seen(state: RunState, *, node: str, rank: int, ts_ns: int) -> None:
    """Record that ``node``/``rank`` sent something stamped ``ts_ns`` (nodes, ranks, last seen)."""
    if node not in state.nodes and len(state.nodes) < MAX_MEMBERS:
        state.nodes.append(node)
    if rank not in state.ranks and len(state.ranks) < MAX_MEMBERS:
        state.ranks.append(rank)
    who = f"{node}/{rank}"
    if ts_ns > state.last_seen_ns.get(who, 0) and (who in state.last_seen_ns or len(state.last_seen_ns) < MAX_MEMBERS):
        state.last_seen_ns[who] = ts_ns


def on_run_record(state: RunState, record: dict[str, Any], rank: int = 0) -> None:
    """Apply one ``runs`` record of ``rank``: every record is a heartbeat and makes the rank a member;
    ``finish`` records the rank's final status (kept: a later record does not reopen it)."""
    state.last_heartbeat_ns = max(state.last_heartbeat_ns, int(record["ts_ns"]))
    who = str(rank)
    life = state.lifecycle
    if record.get("event") == "finish":
        life[who] = str(record.get("status") or "finished")
    elif who not in life and len(life) < MAX_MEMBERS:
        life[who] = ""
    state.status = run_status(life)


def on_log_levels(state: RunState, levels: list[str]) -> None:
    """Count a batch of log lines by level (``levels``: one per line)."""
    counts = state.counts
    counts["lines"] = counts.get("lines", 0) + len(levels)
    warnings = levels.count("WARNING")
    errors = levels.count("ERROR") + levels.count("CRITICAL")
    if warnings:
        counts["warnings"] = counts.get("warnings", 0) + warnings
    if errors:
        counts["errors"] = counts.get("errors", 0) + errors


def on_metric_values(stats: dict[str, list[float]], values: dict[str, float]) -> None:
    """Update per-metric ``[last, min, max, count]`` (min/max over finite values only; NaN until one)."""
    for name, value in values.items():
        cur = stats.get(name)
        finite = math.isfinite(value)
        if cur is None:
            stats[name] = [value, value if finite else math.nan, value if finite else math.nan, 1]
            continue
        cur[0] = value
        cur[3] += 1
        if finite:
            if not cur[1] <= value:  # also true when min is still NaN
                cur[1] = value
            if not cur[2] >= value:
                cur[2] = value


def _columns(values: list[dict[str, float]], names: Iterable[str], uniform: bool) -> dict[str, list[float]]:
    """Each name's values over ``values`` in order (``uniform``: every map holds every name)."""
    if uniform:
        return {name: list(map(itemgetter(name), values)) for name in names}
    return {name: [v[name] for v in values if name in v] for name in names}


def _uniform_columns(values: list[dict[str, float]]) -> dict[str, list[float]] | None:
    """Each name's values over ``values`` when every map holds the same names (the usual batch), else ``None``;
    the names in the first map's order, which is then their order of first appearance."""
    first = values[0]
    if set(map(len, values)) != {len(first)}:
        return None
    try:  # as many names in each, and each of the first's in each: the same names
        return {name: list(map(itemgetter(name), values)) for name in first}
    except KeyError:
        return None


def _stats_columns(stats: dict[str, list[float]], columns: dict[str, list[float]]) -> None:
    """:func:`on_metric_values` for each map of a batch in order, given each name's column (non-empty, in the
    order the names first appear), a metric at a time (C-level ``min``/``max`` over each column).  The same
    stats: the builtins keep the first of equal values, as the one-at-a-time comparisons do."""
    isfinite = math.isfinite
    for name, col in columns.items():
        # A sum is finite only when every value is (NaN and infinities propagate; an overflow just takes the slow way).
        finite = col if isfinite(sum(col)) else [x for x in col if isfinite(x)]
        cur = stats.get(name)
        if cur is None:
            stats[name] = [col[-1], min(finite) if finite else math.nan, max(finite) if finite else math.nan, len(col)]
            continue
        cur[0] = col[-1]
        cur[3] += len(col)
        if finite:
            low, high = min(finite), max(finite)
            if not cur[1] <= low:  # also true when min is still NaN
                cur[1] = low
            if not cur[2] >= high:
                cur[2] = high


def on_step(state: RunState, conf: DetectorSettings, *, node: str, rank: int, step: int, ts_ns: int) -> None:
    """Record a rank's step time (from consecutive metric steps)."""
    who = f"{node}/{rank}"
    prev = state.steps.get(who)
    if prev is None:
        state.steps[who] = [step, ts_ns, []]
        return
    if step > prev[0]:
        times = prev[2]
        times.append((ts_ns - prev[1]) // max(1, step - prev[0]))
        del times[: max(0, len(times) - conf.straggler_window)]
        prev[0], prev[1] = step, ts_ns


def on_step_column(
    state: RunState, conf: DetectorSettings, *, node: str, rank: int, steps: list[int], stamps: list[int]
) -> None:
    """:func:`on_step` for each ``(step, ts_ns)`` of ``steps`` and ``stamps`` whose step is >= 0, in one loop."""
    who = f"{node}/{rank}"
    prev = state.steps.get(who)
    if prev is None:
        first = next((k for k, step in enumerate(steps) if step >= 0), None)
        if first is None:
            return
        prev = state.steps[who] = [steps[first], stamps[first], []]
        steps, stamps = steps[first + 1 :], stamps[first + 1 :]
    last_step, last_ts, times = prev
    if not steps or max(steps) <= last_step:  # no step taken (the logs' metrics carry none: -1)
        return
    keep = conf.straggler_window
    if last_step < steps[0] and all(map(lt, steps, islice(steps, 1, None))):
        # Strictly rising (the usual batch): every step is taken, and of their times only the newest ``keep``
        # can stay; computed in C, from the step before them (the state's last one for the first).
        n = len(steps)
        m = max(0, min(n, keep))
        if m < n:
            xs, ts = steps[n - m - 1 :], stamps[n - m - 1 :]
        else:
            xs, ts = [last_step, *steps], [last_ts, *stamps]
        times += map(floordiv, map(sub, islice(ts, 1, None), ts), map(sub, islice(xs, 1, None), xs))
        del times[: max(0, len(times) - keep)]
        prev[0], prev[1] = steps[-1], stamps[-1]
        return
    before = len(times)
    for step, ts_ns in zip(steps, stamps, strict=True):
        if step > last_step:  # also skips the negative (unknown) steps: a recorded step is never below 0
            times.append((ts_ns - last_ts) // max(1, step - last_step))
            last_step, last_ts = step, ts_ns
    if len(times) > before:  # trimmed only when it grew, as on_step does
        del times[: max(0, len(times) - keep)]
    prev[0], prev[1] = last_step, last_ts


def check_run(state: RunState, conf: DetectorSettings, now_ns: int) -> list[dict[str, Any]]:
    """Alerts for a run at time ``now_ns``: stalled, silent rank, straggler; updates ``state.reported``."""
    out: list[dict[str, Any]] = []
    if state.status != "running":
        return out
    if state.last_heartbeat_ns and now_ns - state.last_heartbeat_ns > conf.crashed_after_s * NS:
        key = f"stalled/{state.last_heartbeat_ns}"
        silent_s = (now_ns - state.last_heartbeat_ns) / NS
        out.append(
            alert_record(
                now_ns, "stalled", f"no heartbeat for {silent_s:.0f} s: the run is crashed", "", -1, key, "error"
            )
        )
    if state.last_seen_ns:
        newest = max(state.last_seen_ns.values())
        for who, seen in state.last_seen_ns.items():
            if newest - seen > conf.silent_after_s * NS:
                node, _, rank = who.rpartition("/")
                out.append(
                    alert_record(
                        now_ns,
                        "silent_rank",
                        f"rank {rank} on {node} silent for {(newest - seen) / NS:.0f} s while other ranks continue",
                        node,
                        int(rank),
                        f"silent_rank/{who}/{seen}",
                    )
                )
    medians = {who: statistics.median(s[2]) for who, s in state.steps.items() if len(s[2]) >= 3}
    if len(medians) >= 2:
        overall = statistics.median(medians.values())
        for who, med in medians.items():
            if overall > 0 and med > conf.straggler_ratio * overall:
                node, _, rank = who.rpartition("/")
                step = state.steps[who][0]
                out.append(
                    alert_record(
                        now_ns,
                        "straggler",
                        f"rank {rank} on {node} takes {med / overall:.1f}x the median step time",
                        node,
                        int(rank),
                        f"straggler/{who}/{step}",
                    )
                )
    fresh = [a for a in out if a["key"] not in state.reported]
    state.reported = (state.reported + [a["key"] for a in fresh])[-MAX_REPORTED:]
    return fresh


# -- per batch (what the stream agents call) ------------------------------------------------------

#: Most loss series and metric names one run's state keeps (beyond, new ones are not tracked).
MAX_SERIES = 1024
MAX_METRICS = 10_000


@dataclass
class MetricsState:
    """Per run: ``[last, min, max, count]`` of every metric and the loss-spike state of each loss series."""

    stats: dict[str, list[float]] = field(default_factory=dict)
    #: "node/rank/metric" -> series state
    loss: dict[str, SeriesState] = field(default_factory=dict)

    def to_map(self) -> dict[str, Any]:
        """Plain data for a table value (msgpack), the inverse of :meth:`from_map`."""
        return {"stats": self.stats, "loss": {k: v.to_map() for k, v in self.loss.items()}}

    @classmethod
    def from_map(cls, doc: dict[str, Any]) -> MetricsState:
        return cls(
            stats={k: list(v) for k, v in doc.get("stats", {}).items()},
            loss={k: SeriesState.from_map(v) for k, v in doc.get("loss", {}).items()},
        )


def apply_metrics(
    run: RunState, metrics: MetricsState, conf: DetectorSettings, *, node: str, rank: int, records: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Apply one clean ``metrics`` batch: stats, steps, last seen; return the loss alerts it raises.

    Works a column (one metric's values over the batch) at a time; the state and the alerts, in order, are
    what applying the records one at a time (:func:`on_metric_values`, :func:`on_step`, :func:`on_metric`)
    gives (``tests/streams/test_detect.py`` holds them equal)."""
    if not records:
        return []
    values = list(map(_get_values, records))
    steps = list(map(dict.get, records, repeat("step"), repeat(-1)))
    columns = _uniform_columns(values)
    uniform = columns is not None
    names: dict[str, None] = dict.fromkeys(values[0]) if uniform else dict.fromkeys(chain.from_iterable(values))
    stats = metrics.stats
    if len(stats) + len(names) < MAX_METRICS:  # then the limit is never reached within this batch
        if columns is None:
            columns = _columns(values, names, False)
        _stats_columns(stats, columns)
    else:
        for vals in values:
            on_metric_values(stats, vals if len(stats) < MAX_METRICS else {k: v for k, v in vals.items() if k in stats})
    if max(steps) >= 0:  # else no step is taken (the logs' metrics carry none: -1)
        on_step_column(run, conf, node=node, rank=rank, steps=steps, stamps=list(map(_get_ts, records)))
    loss = metrics.loss
    prefix = f"{node}/{rank}/"
    found: list[tuple[int, int, dict[str, Any]]] = []
    for name in names:
        if not is_loss(name):
            continue
        sid = prefix + name
        series = loss.get(sid)
        if series is None:
            if len(loss) >= MAX_SERIES:
                continue
            series = loss[sid] = SeriesState()
        col = columns.get(name) if columns is not None else None
        if uniform:  # the column is the batch's: its index is the record's
            if col is None:
                col = list(map(itemgetter(name), values))
            where = None
        else:
            where = list(compress(range(len(values)), map(contains, values, repeat(name))))
            if col is None:
                col = [values[k][name] for k in where]
        # A value's step and stamp are read only for an alert (rare): from its record, when asked for.
        for k, alert in on_loss_column(
            series,
            conf,
            node=node,
            rank=rank,
            metric=name,
            values=col,
            steps=_Field(records, "step", -1, where),
            stamps=_Field(records, "ts_ns", 0, where),
        ):
            pos = k if where is None else where[k]
            found.append((pos, list(values[pos]).index(name), alert))
    newest = max(map(_get_ts, records))
    if newest > 0:
        on_seen(run, node=node, rank=rank, ts_ns=newest)
    found.sort(key=itemgetter(0, 1))  # record by record, in each record's order of names
    return [alert for _, _, alert in found]


class _Field:
    """One field of some records as a sequence: ``self[k]`` is ``records[where[k]].get(name, default)`` (every
    record when ``where`` is ``None``), read when asked for."""

    __slots__ = ("default", "name", "records", "where")

    def __init__(self, records: list[dict[str, Any]], name: str, default: int, where: list[int] | None) -> None:
        self.records, self.name, self.default, self.where = records, name, default, where

    def __getitem__(self, k: int) -> int:
        rec = self.records[k if self.where is None else self.where[k]]
        return rec.get(self.name, self.default)  # type: ignore[no-any-return]  # validated: an int


_get_values = itemgetter("values")
_get_ts = itemgetter("ts_ns")


def apply_runs(run: RunState, *, node: str, rank: int, records: list[dict[str, Any]]) -> None:
    """Apply one clean ``runs`` batch (heartbeats, start, finish)."""
    for rec in records:
        on_run_record(run, rec, rank)
        on_seen(run, node=node, rank=rank, ts_ns=rec["ts_ns"])
