"""Detectors: pure functions over explicit state objects, producing alert records.

Each detector takes its state (a small, bounded, plain-data object that can
be kept in a faust table and restored from its changelog) and one input, and
returns the alerts it raises (``runstream.events.alerts`` records without
``i``).  Alert ``key``s are deterministic, built from the input's identity, so
a replay, or two workers seeing one record, never yields two alerts:

- ``nan_loss``: a metric whose name contains ``loss`` is NaN or ±Inf.  Key
  ``nan_loss/{node}/{rank}/{metric}``: one alert per rank and metric per run.
- ``loss_spike``: robust z-score of a loss value against the previous
  :attr:`DetectorSettings.spike_window` values of the same series:
  ``z = 0.6745 * (x - median) / MAD``; an alert when ``z >`` ``spike_z`` and the
  window holds at least ``spike_min_points`` values (the median and MAD ignore
  the spike itself and any earlier outliers).  Key ``loss_spike/{node}/{rank}/{metric}/{step}``.
  The window is also kept sorted, so the median is O(1) and "is the MAD
  small enough for an alert" is two bisections (O(log n)); the exact MAD is
  only computed for the rare value that may be a spike.
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
from bisect import bisect_left, bisect_right, insort
from dataclasses import dataclass, field
from typing import Any

NS = 1_000_000_000

LOG_ALERT_TAGS = {"oom": "error", "nccl_error": "error", "nccl_timeout": "error", "segfault": "error",
                  "killed": "error"}


@dataclass(frozen=True)
class DetectorSettings:
    """Thresholds of the detectors (units in the names)."""

    spike_window: int = 50
    spike_min_points: int = 20
    spike_z: float = 8.0
    idle_util_pct: float = 5.0
    idle_after_s: float = 60.0
    silent_after_s: float = 120.0
    straggler_ratio: float = 1.5
    straggler_window: int = 20
    crashed_after_s: float = 60.0


def _alert(ts_ns: int, kind: str, message: str, node: str, rank: int, key: str, severity: str = "warning",
           **extra: Any) -> dict[str, Any]:
    return {"ts_ns": ts_ns, "kind": kind, "message": message, "node": node, "rank": rank, "key": key,
            "severity": severity, **extra}


# -- metrics --------------------------------------------------------------------------------------


@dataclass
class SeriesState:
    """The last values of one loss series (bounded by ``spike_window``) and whether NaN was reported."""

    window: list[float] = field(default_factory=list)
    nan_reported: bool = False
    #: ``window`` sorted (not stored: rebuilt from ``window`` when they differ in length).
    ordered: list[float] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.ordered) != len(self.window):
            self.ordered = sorted(self.window)

    def to_map(self) -> dict[str, Any]:
        """Plain data for a table value (msgpack), the inverse of :meth:`from_map`."""
        return {"w": self.window, "n": self.nan_reported}

    @classmethod
    def from_map(cls, doc: dict[str, Any]) -> SeriesState:
        return cls(window=list(doc.get("w", ())), nan_reported=bool(doc.get("n", False)))


def _median(ordered: list[float]) -> float:
    """The median of a sorted, non-empty list (as :func:`statistics.median` computes it)."""
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def on_metric(state: SeriesState, conf: DetectorSettings, *, node: str, rank: int, metric: str, step: int,
              ts_ns: int, value: float) -> list[dict[str, Any]]:
    """Alerts for one value of a loss series (``metric`` names a loss); updates ``state``."""
    if not math.isfinite(value):
        if state.nan_reported:
            return []
        state.nan_reported = True
        return [_alert(ts_ns, "nan_loss", f"{metric} is {value} at step {step}", node, rank,
                       f"nan_loss/{node}/{rank}/{metric}", "error", metric=metric, value=value)]
    out: list[dict[str, Any]] = []
    window = state.window
    ordered = state.ordered
    if len(ordered) != len(window):  # the window was replaced or edited in place
        ordered[:] = sorted(window)
    n = len(window)
    # At or below the median z <= 0, so the MAD (the costly part) is only looked at above it.
    if n >= conf.spike_min_points and value > (med := _median(ordered)):
        # z > spike_z needs MAD < limit; MAD >= limit when fewer than half the values lie within
        # ``limit`` of the median (two bisections): then no alert, without computing the MAD.
        limit = 0.6745 * (value - med) / conf.spike_z * (1 + 1e-9)
        near = bisect_right(ordered, med + limit) - bisect_left(ordered, med - limit)
        if near >= (n + 1) // 2:
            mad = statistics.median([abs(x - med) for x in window])
            scale = mad if mad > 0 else max(abs(med) * 1e-6, 1e-12)
            z = 0.6745 * (value - med) / scale
            if z > conf.spike_z:
                out.append(_alert(ts_ns, "loss_spike", f"{metric} jumped to {value:.6g} at step {step} "
                                  f"(median {med:.6g}, robust z {z:.1f})", node, rank,
                                  f"loss_spike/{node}/{rank}/{metric}/{step}", metric=metric, value=value))
    window.append(value)
    insort(ordered, value)
    if n + 1 > conf.spike_window:
        for old in window[: n + 1 - conf.spike_window]:
            del ordered[bisect_left(ordered, old)]
        del window[: n + 1 - conf.spike_window]
    return out


#: Answers of :func:`is_loss` by name (metric names repeat on every step; bounded).
_LOSS_NAMES: dict[str, bool] = {}


def is_loss(metric: str) -> bool:
    """Whether a metric series is watched by the loss detectors."""
    hit = _LOSS_NAMES.get(metric)
    if hit is None:
        hit = "loss" in metric.lower()
        if len(_LOSS_NAMES) < 65_536:
            _LOSS_NAMES[metric] = hit
    return hit


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
            out.append(_alert(record["ts_ns"], tag, str(record.get("line", ""))[:512], node, line_rank,
                              f"{tag}/{ident}", severity))
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


def on_gpu_sample(state: GpuState, conf: DetectorSettings, *, running: bool, node: str, rank: int, device: str,
                  ts_ns: int, util_pct: float) -> list[dict[str, Any]]:
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
    return [_alert(ts_ns, "gpu_idle", f"{device} below {conf.idle_util_pct:g}% utilisation for {idle_s:.0f} s",
                   node, rank, f"gpu_idle/{node}/{device}/{state.idle_since_ns}", metric=f"{device}/util_pct",
                   value=util_pct)]


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
        return {"status": self.status, "hb": self.last_heartbeat_ns, "seen": self.last_seen_ns, "steps": self.steps,
                "reported": self.reported, "counts": self.counts, "nodes": self.nodes, "ranks": self.ranks,
                "life": self.lifecycle}

    @classmethod
    def from_map(cls, doc: dict[str, Any]) -> RunState:
        return cls(status=str(doc.get("status", "running")), last_heartbeat_ns=int(doc.get("hb", 0)),
                   last_seen_ns=dict(doc.get("seen", {})), steps={k: list(v) for k, v in doc.get("steps", {}).items()},
                   reported=list(doc.get("reported", ())), counts=dict(doc.get("counts", {})),
                   nodes=list(doc.get("nodes", ())), ranks=list(doc.get("ranks", ())),
                   lifecycle=dict(doc.get("life", {})))

    def status_at(self, now_ns: int, conf: DetectorSettings) -> str:
        """The run's status at ``now_ns``: ``crashed`` once running without a heartbeat for ``crashed_after_s``."""
        if self.status == "running" and self.last_heartbeat_ns and \
                now_ns - self.last_heartbeat_ns > conf.crashed_after_s * NS:
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


def check_run(state: RunState, conf: DetectorSettings, now_ns: int) -> list[dict[str, Any]]:
    """Alerts for a run at time ``now_ns``: stalled, silent rank, straggler; updates ``state.reported``."""
    out: list[dict[str, Any]] = []
    if state.status != "running":
        return out
    if state.last_heartbeat_ns and now_ns - state.last_heartbeat_ns > conf.crashed_after_s * NS:
        key = f"stalled/{state.last_heartbeat_ns}"
        silent_s = (now_ns - state.last_heartbeat_ns) / NS
        out.append(_alert(now_ns, "stalled", f"no heartbeat for {silent_s:.0f} s: the run is crashed", "", -1,
                          key, "error"))
    if state.last_seen_ns:
        newest = max(state.last_seen_ns.values())
        for who, seen in state.last_seen_ns.items():
            if newest - seen > conf.silent_after_s * NS:
                node, _, rank = who.rpartition("/")
                out.append(_alert(now_ns, "silent_rank", f"rank {rank} on {node} silent for "
                                  f"{(newest - seen) / NS:.0f} s while other ranks continue", node, int(rank),
                                  f"silent_rank/{who}/{seen}"))
    medians = {who: statistics.median(s[2]) for who, s in state.steps.items() if len(s[2]) >= 3}
    if len(medians) >= 2:
        overall = statistics.median(medians.values())
        for who, med in medians.items():
            if overall > 0 and med > conf.straggler_ratio * overall:
                node, _, rank = who.rpartition("/")
                step = state.steps[who][0]
                out.append(_alert(now_ns, "straggler", f"rank {rank} on {node} takes {med / overall:.1f}x the "
                                  f"median step time", node, int(rank), f"straggler/{who}/{step}"))
    fresh = [a for a in out if a["key"] not in state.reported]
    state.reported = (state.reported + [a["key"] for a in fresh])[-256:]
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
        return cls(stats={k: list(v) for k, v in doc.get("stats", {}).items()},
                   loss={k: SeriesState.from_map(v) for k, v in doc.get("loss", {}).items()})


def apply_metrics(run: RunState, metrics: MetricsState, conf: DetectorSettings, *, node: str, rank: int,
                  records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Apply one clean ``metrics`` batch: stats, steps, last seen; return the loss alerts it raises."""
    out: list[dict[str, Any]] = []
    newest = 0
    stats = metrics.stats
    loss = metrics.loss
    prefix = f"{node}/{rank}/"
    for rec in records:
        values = rec["values"]
        ts_ns = rec["ts_ns"]
        if ts_ns > newest:
            newest = ts_ns
        step = rec.get("step", -1)
        if len(stats) < MAX_METRICS:
            on_metric_values(stats, values)
        else:
            on_metric_values(stats, {k: v for k, v in values.items() if k in stats})
        if step >= 0:
            on_step(run, conf, node=node, rank=rank, step=step, ts_ns=ts_ns)
        for name, value in values.items():
            if not is_loss(name):
                continue
            sid = prefix + name
            series = loss.get(sid)
            if series is None:
                if len(loss) >= MAX_SERIES:
                    continue
                series = loss[sid] = SeriesState()
            found = on_metric(series, conf, node=node, rank=rank, metric=name, step=step, ts_ns=ts_ns, value=value)
            if found:
                out += found
    if newest:
        on_seen(run, node=node, rank=rank, ts_ns=newest)
    return out


def apply_logs(run: RunState, *, producer: str, seq: int, node: str, rank: int,
               records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Apply one clean, enriched ``logs`` batch: counts, last seen; return the log-tag alerts it raises."""
    on_log_levels(run, [rec.get("level", "") for rec in records])
    out: list[dict[str, Any]] = []
    for rec in records:
        if "tags" in rec:
            out += on_log(rec, producer=producer, seq=seq, node=node, rank=rank)
    if records:
        on_seen(run, node=node, rank=rank, ts_ns=max(rec["ts_ns"] for rec in records))
    # One traceback's lines raise one alert per tag: keep the first of each key.
    seen: set[str] = set()
    return [a for a in out if not (a["key"] in seen or seen.add(a["key"]))]  # type: ignore[func-returns-value]


def apply_runs(run: RunState, *, node: str, rank: int, records: list[dict[str, Any]]) -> None:
    """Apply one clean ``runs`` batch (heartbeats, start, finish)."""
    for rec in records:
        on_run_record(run, rec, rank)
        on_seen(run, node=node, rank=rank, ts_ns=rec["ts_ns"])
