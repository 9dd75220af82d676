"""The loss-series detectors (``nan_loss``, ``loss_spike``; see :mod:`streams.detect`) and their state.

``loss_spike`` judges a value against the previous ``spike_window`` values of its series three ways: their
level (the median), their spread (the median absolute deviation, MAD) and their tail (the highest of them and
of the values that left the window in the last one to two windows' worth of steps).  A value is *high* when it
is at least ``spike_ratio`` times the level, more than ``spike_run_z`` robust deviations above it and above the
tail.  A high value raises an alert at once when it is also *extreme* (more than ``spike_z`` robust deviations
up, and its rise above the median at least ``spike_tail`` times the tail's), else once ``spike_run`` values in
a row, or ``spike_run + 1`` of the last ``2 * spike_run - 1``, are high (a rise that lasts, noisy as it may be;
the tail then leaves out its own values); then nothing more until none of the last ``2 * spike_run - 1`` is.

Why: near convergence a minibatch loss has a heavy upper tail (one batch 5 to 70 times the median is ordinary
there), so "far above the median in MADs" alone fires on every hard batch (56 alerts on one run of
``examples/train_spirals.py``); a rise that is several times the level, beyond what the noise has reached lately,
and either lasts or dwarfs that noise, is the spike or the divergence a person wants to hear about.  The tail's
memory reaches back beyond the window because hard batches can be rarer than one a window.

The window is kept twice: in arrival order (what the changelog stores) and sorted, so the median is O(1); the
level test (one comparison) turns almost every value away, "is the MAD small enough" is two bisections, and the
exact MAD and the tail are only computed for the rare value that passes both.  :func:`on_loss_column` is
:func:`on_metric` over a batch's values of one series (the per-value work of a metrics batch): once the window
is full, a block of values at a time is first bounded as a whole, and only a block that may hold a high value is
tested value by value (see :func:`_full_window_column`; ``tests/streams/test_loss_blocks.py`` holds it equal to
:func:`on_metric`, value by value).
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left, bisect_right, insort
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from streams.alerts import alert_record

if TYPE_CHECKING:  # streams.detect imports this module
    from streams.detect import DetectorSettings

# -- metrics --------------------------------------------------------------------------------------


class Indexed(Protocol):
    """What the detectors read a batch's steps and stamps from: ``seq[k]`` (a list, or fields read on demand)."""

    def __getitem__(self, k: int, /) -> int: ...


def _no_left() -> list[float]:
    return [-math.inf, -math.inf]


@dataclass
class SeriesState:
    """The last values of one loss series (bounded by ``spike_window``), whether NaN was reported, and where the
    spike rule stands (see the module's docstring): all of it bounded, plain data."""

    window: list[float] = field(default_factory=list)
    nan_reported: bool = False
    #: Which of the last ``2 * spike_run - 1`` values were high: bit ``i`` for the value ``i`` places before the
    #: last one.
    highs: int = 0
    #: Whether the current rise was alerted: set by an alert, cleared once none of the last ``2 * spike_run - 1``
    #: values is high.
    alerted: bool = False
    #: The tail's memory: the highest of the previous ``spike_window`` values to leave the window, and the highest of
    #: those that left it since (``-inf``: none).
    left: list[float] = field(default_factory=_no_left)
    #: How many values ``left[1]`` covers.
    left_count: int = 0
    #: ``window`` sorted, or stale: not stored, and rebuilt from ``window`` by the detectors that read it when the
    #: two differ in length (a state loaded from its map sorts its window only once a value needs it).
    ordered: list[float] = field(default_factory=list, repr=False, compare=False)

    def to_map(self) -> dict[str, Any]:
        """Plain data for a table value (msgpack), the inverse of :meth:`from_map`."""
        return {
            "w": self.window,
            "n": self.nan_reported,
            "h": self.highs,
            "a": self.alerted,
            "l": self.left,
            "lc": self.left_count,
        }

    @classmethod
    def from_map(cls, doc: dict[str, Any]) -> SeriesState:
        """The state :meth:`to_map` saved; keys it lacks (a map saved before they existed) take their defaults."""
        left = [float(x) for x in doc.get("l", ())]
        return cls(
            window=list(doc.get("w", ())),
            nan_reported=bool(doc.get("n", False)),
            highs=int(doc.get("h", 0)),
            alerted=bool(doc.get("a", False)),
            left=left if len(left) == 2 else _no_left(),
            left_count=int(doc.get("lc", 0)),
        )


def _median(ordered: list[float]) -> float:
    """The median of a sorted, non-empty list (as :func:`statistics.median` computes it)."""
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def on_metric(
    state: SeriesState,
    conf: DetectorSettings,
    *,
    node: str,
    rank: int,
    metric: str,
    step: int,
    ts_ns: int,
    value: float,
) -> list[dict[str, Any]]:
    """Alerts for one value of a loss series (``metric`` names a loss); updates ``state``."""
    if not math.isfinite(value):  # no window change: NaN and infinities are nan_loss's, once per series
        if state.nan_reported:
            return []
        state.nan_reported = True
        return [
            alert_record(
                ts_ns,
                "nan_loss",
                f"{metric} is {value} at step {step}",
                node,
                rank,
                f"nan_loss/{node}/{rank}/{metric}",
                "error",
                metric=metric,
                value=value,
            )
        ]
    window = state.window
    ordered = state.ordered
    if len(ordered) != len(window):  # the window was replaced or edited in place
        ordered[:] = sorted(window)
    out: list[dict[str, Any]] = []
    med = _median(ordered) if len(window) >= conf.spike_min_points else math.nan
    if value - med >= (conf.spike_ratio - 1) * abs(med):  # the level test (False for NaN: a window too short)
        found = _spike(state, conf, node=node, rank=rank, metric=metric, step=step, ts_ns=ts_ns, value=value, med=med)
        if found is not None:
            out.append(found)
    elif state.highs:
        _calm(state, conf.spike_run)
    _push(state, value, conf.spike_window)
    return out


def _calm(state: SeriesState, spike_run: int, count: int = 1) -> None:
    """Count ``count`` values that are not high; once none of the last ``2 * spike_run - 1`` is, the rise is over
    (the next one may alert)."""
    highs = state.highs
    if highs:
        state.highs = highs = (highs << count) & ((1 << (2 * spike_run - 1)) - 1)
        if not highs:
            state.alerted = False


def _spike(
    state: SeriesState,
    conf: DetectorSettings,
    *,
    node: str,
    rank: int,
    metric: str,
    step: int,
    ts_ns: int,
    value: float,
    med: float,
) -> dict[str, Any] | None:
    """The loss_spike alert for ``value`` (finite, at least ``spike_ratio`` times the median ``med`` of a window of
    at least ``spike_min_points`` values), or ``None``; counts ``value`` as high or not in ``state`` either way.

    Its tests are bounded by :func:`_cleared` with the same float operations: change them together."""
    window = state.window
    ordered = state.ordered
    n = len(window)
    spike_run = conf.spike_run
    span = 2 * spike_run - 1
    # The tail (cheapest first, and what turns most noise away): the window but its last values that were high
    # (the rise this one may belong to), and the memory.
    highs = state.highs
    if highs & ((1 << (span - 1)) - 1):  # (the oldest flag no longer counts for this rise)
        last = min(span - 1, n)
        tail = window[: n - last] + [window[n - 1 - i] for i in range(last) if not highs >> i & 1]
        peak = max(tail, default=-math.inf)
    else:
        peak = ordered[-1]
    left = state.left
    peak = max(peak, left[0], left[1])
    if not value > peak:
        _calm(state, spike_run)
        return None
    rise = value - med
    run_z = conf.spike_run_z
    if run_z > 0:
        # z > run_z needs MAD < limit; MAD >= limit when fewer than half the values lie within ``limit`` of the
        # median (two bisections): then not high, without computing the MAD.
        limit = 0.6745 * rise / run_z * (1 + 1e-9)
        if bisect_right(ordered, med + limit) - bisect_left(ordered, med - limit) < (n + 1) // 2:
            _calm(state, spike_run)
            return None
    # The MAD as statistics.median computes it: over the sorted window the deviations fall, then rise, so
    # sorting them merges two runs (and |x - med| is the same float whichever side x lies).
    devs = [abs(x - med) for x in ordered]
    devs.sort()
    mid = n // 2
    mad = devs[mid] if n % 2 else (devs[mid - 1] + devs[mid]) / 2
    scale = mad if mad > 0 else max(abs(med) * 1e-6, 1e-12)
    z = 0.6745 * rise / scale
    if not z > run_z:
        _calm(state, spike_run)
        return None
    state.highs = highs = ((highs << 1) | 1) & ((1 << span) - 1)
    if state.alerted:
        return None
    extreme = z > conf.spike_z and rise >= conf.spike_tail * (peak - med)
    run = (1 << spike_run) - 1
    if not (extreme or highs & run == run or highs.bit_count() > spike_run):
        return None
    state.alerted = True
    if extreme:
        message = f"{metric} jumped to {value:.6g} at step {step} (median {med:.6g}, robust z {z:.1f})"
    else:
        message = (
            f"{metric} rose to {value:.6g} at step {step}: {highs.bit_count()} of its last {span} values at "
            f"{conf.spike_ratio:g}x its median ({med:.6g}) or more and above its recent noise"
        )
    return alert_record(
        ts_ns,
        "loss_spike",
        message,
        node,
        rank,
        f"loss_spike/{node}/{rank}/{metric}/{step}",
        metric=metric,
        value=value,
    )


def _leave(state: SeriesState, gone: list[float], size: int) -> None:
    """Fold the values that left the window (``gone``, oldest first, not empty) into the tail's memory, as
    :func:`_leave_one` for each: in one ``max`` when they all go into ``left[1]`` (the usual case), else (once
    every ``size`` values) one by one."""
    left = state.left
    count = state.left_count + len(gone)
    if count < size:
        top = max(gone)
        if top > left[1]:
            left[1] = top
        state.left_count = count
        return
    for old in gone:
        _leave_one(state, old, size)


def _leave_one(state: SeriesState, old: float, size: int) -> None:
    """Fold one value that left the window into the tail's memory: ``left[1]`` takes the highest of up to
    ``size`` such values, then moves to ``left[0]``."""
    left = state.left
    if old > left[1]:
        left[1] = old
    count = state.left_count + 1
    if count >= size:
        left[0] = left[1]
        left[1] = -math.inf
        count = 0
    state.left_count = count


def _push(state: SeriesState, value: float, size: int) -> None:
    """Add ``value`` to the window (and its sorted copy), dropping the oldest beyond ``size`` into the memory."""
    window = state.window
    ordered = state.ordered
    window.append(value)
    insort(ordered, value)
    extra = len(window) - size
    if extra == 1:  # the usual case, inline
        old = window[0]
        del ordered[bisect_left(ordered, old)]
        del window[0]
        _leave_one(state, old, size)
    elif extra > 0:
        gone = window[:extra]
        for old in gone:
            del ordered[bisect_left(ordered, old)]
        del window[:extra]
        _leave(state, gone, size)


def on_loss_column(
    state: SeriesState,
    conf: DetectorSettings,
    *,
    node: str,
    rank: int,
    metric: str,
    values: list[float],
    steps: Indexed,
    stamps: Indexed,
) -> list[tuple[int, dict[str, Any]]]:
    """:func:`on_metric` for each ``values[k]`` (at ``steps[k]``, ``stamps[k]``) in order, in one loop; the alerts
    come with the index ``k`` of the value that raised them (``steps`` and ``stamps`` are only read for one)."""
    out: list[tuple[int, dict[str, Any]]] = []
    window = state.window
    ordered = state.ordered
    if len(ordered) != len(window):
        ordered[:] = sorted(window)
    size = conf.spike_window
    min_points = conf.spike_min_points
    level = conf.spike_ratio - 1
    spike_run = conf.spike_run
    isfinite = math.isfinite
    # A sum is finite only when every value is (NaN and infinities propagate; an overflow just takes this loop).
    steady = isfinite(sum(values)) and size >= min_points
    for k, value in enumerate(values):
        n = len(window)
        if steady and n == size:  # every value from here on sees a full window: the loop below, for the rest
            _full_window_column(state, conf, node, rank, metric, values, steps, stamps, k, out)
            break
        if not isfinite(value):  # no window change: the single-value rule (at most one alert per series)
            out += [
                (k, a)
                for a in on_metric(
                    state, conf, node=node, rank=rank, metric=metric, step=steps[k], ts_ns=stamps[k], value=value
                )
            ]
            continue
        mid = n // 2
        med = (ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2) if n >= min_points else math.nan
        if value - med >= level * abs(med):
            found = _spike(
                state, conf, node=node, rank=rank, metric=metric, step=steps[k], ts_ns=stamps[k], value=value, med=med
            )
            if found is not None:
                out.append((k, found))
        elif state.highs:
            _calm(state, spike_run)
        _push(state, value, size)
    return out


#: Values of a column one bound of :func:`_full_window_column` covers: a larger block costs less per value to
#: bound, but its windows differ more, so its bound clears fewer blocks.  Tried at 12 to 100 on the series of
#: ``bench/loss_spike.py`` and the real logs' LM losses: 24 costs a third less per value than 12 on all but the
#: shuffled hard batches (the same there); larger blocks save more on smooth series, and cost up to a quarter more
#: on the hard batches.
SPIKE_BLOCK = 24

#: The largest magnitude for which the median of two window values cannot overflow (see :func:`_cleared`).
_SAFE_MAGNITUDE = 8e307


def _cleared(window: list[float], chunk: list[float], highs: int, level: float, run_z: float, lo: int, hi: int) -> bool:
    """Whether no value of ``chunk`` can be high against its window (``window`` at the block's start, all finite,
    then moved on by the block's values; ``lo`` and ``hi`` the median's positions in a window).

    Every window a value of the block is tested against is part of the block's *pool* (the window at its start and
    the block's values but the last), so its median is at least the pool's smallest value and lies between two
    order statistics of the pool (``low``, ``high``: at most ``len(chunk) - 1`` ranks apart from its own).  The
    level test fails for every value when the block's largest one is not ``spike_ratio`` times a lower bound of the
    medians (first the pool's minimum, which needs no sort).  The tail test fails for every value when none
    exceeds the values every window of the block holds (with no value flagged high before the block, and none in
    it, each tail is at least their highest: the heavy-tailed series' usual block).  The robust-z test has its
    half-width (see :func:`_spike`) at most the one the block's largest value gives against ``low``, and fails for
    every value when fewer than half a window's count of pool values lie within that half-width of ``[low,
    high]``.  Every step is a comparison or a monotone float operation on the tests' own ones, so it never clears
    a block the tests would not."""
    top = max(chunk)
    floor = min(min(window), min(chunk[:-1], default=math.inf))
    if floor > 0 and top - floor < level * floor:
        return True
    if not highs and top <= max(window[len(chunk) - 1 :], default=-math.inf):
        return True
    if not run_z > 0:  # (the half-width grows with the value only for a positive spike_run_z)
        return False
    pool = window + chunk[:-1]
    pool.sort()
    if not (-_SAFE_MAGNITUDE < pool[0] and pool[-1] < _SAFE_MAGNITUDE):  # else a median may overflow: the loop
        return False
    low = pool[lo]
    if top <= low:  # no value exceeds its window's median (so none is high: z <= 0)
        return True
    if low > 0 and top - low < level * low:
        return True
    # As the test computes it, for the largest value against the lowest median.
    limit = 0.6745 * (top - low) / run_z * (1 + 1e-9)
    near = bisect_right(pool, pool[hi + len(chunk) - 1] + limit) - bisect_left(pool, low - limit)
    return near < (len(window) + 1) // 2


def _full_window_column(
    state: SeriesState,
    conf: DetectorSettings,
    node: str,
    rank: int,
    metric: str,
    values: list[float],
    steps: Indexed,
    stamps: Indexed,
    start: int,
    out: list[tuple[int, dict[str, Any]]],
) -> None:
    """:func:`on_loss_column`'s loop for ``values[start:]`` (all finite) once the window is full
    (``spike_window`` values, at least ``spike_min_points``): the per-value work of a metrics batch.

    A block of values is first bounded as a whole (:func:`_cleared`).  When no value of it can be high, the window
    just moves on by the block (its sorted copy rebuilt once, when next needed: ``sorted`` keeps equal values in
    arrival order, as the insertions do), the values that left it go to the tail's memory, and they count as not
    high.  A block it does not clear takes the value-by-value loop: the general loop's steps, with what a full
    window fixes taken out of it (the median's positions, the window's length, the finiteness test).  A value
    enters the sorted copy after the oldest one left it: the same list as the other way round."""
    window = state.window
    ordered = state.ordered
    size = len(window)
    level = conf.spike_ratio - 1
    run_z = conf.spike_run_z
    spike_run = conf.spike_run
    hi = size // 2
    lo = hi - 1 if size % 2 == 0 else hi
    # A NaN or infinity in a restored window would break the pool's order (only finite values enter the window).
    bounded = math.isfinite(sum(window))
    current = True  # whether ``ordered`` is ``sorted(window)``
    end = len(values)
    begin = start
    while begin < end:
        stop = min(end, begin + SPIKE_BLOCK)
        chunk = values[begin:stop]
        if bounded and _cleared(window, chunk, state.highs, level, run_z, lo, hi):
            window += chunk
            gone = window[: len(chunk)]  # (a block longer than the window also drops some of its own values)
            del window[: len(chunk)]
            _leave(state, gone, size)
            if state.highs:
                _calm(state, spike_run, len(chunk))
            current = False
            begin = stop
            continue
        if not current:
            ordered[:] = sorted(window)
            current = True
        for k in range(begin, stop):
            value = values[k]
            med = (ordered[lo] + ordered[hi]) / 2 if lo != hi else ordered[hi]
            if value - med >= level * abs(med):
                found = _spike(
                    state,
                    conf,
                    node=node,
                    rank=rank,
                    metric=metric,
                    step=steps[k],
                    ts_ns=stamps[k],
                    value=value,
                    med=med,
                )
                if found is not None:
                    out.append((k, found))
            elif state.highs:
                _calm(state, spike_run)
            old = window[0]
            del ordered[bisect_left(ordered, old)]
            del window[0]
            window.append(value)
            insort(ordered, value)
            _leave_one(state, old, size)
        begin = stop
    if not current:
        ordered.clear()  # stale: rebuilt when next needed (often never: the state is saved and reloaded first)


#: Answers of :func:`is_loss` by name (metric names repeat on every step; bounded).
_LOSS_NAMES: dict[str, bool] = {}


#: Names of mixed-precision loss scaling (``loss_scale``, ``train/loss-scale``, ``scaled_loss``): a dynamic loss
#: scale doubles after a stretch of good steps and halves on an overflow, and the scaled loss overflows to inf on
#: purpose; neither is a loss gone wrong.  ``multiscale_loss`` (a loss over several scales) is a loss.
_LOSS_SCALING = re.compile(r"loss[\W_]*scal|(?<![a-z])scaled?[\W_]*loss")


def is_loss(metric: str) -> bool:
    """Whether a metric series is watched by the loss detectors: its name contains ``loss`` and is not one of
    mixed-precision loss scaling (:data:`_LOSS_SCALING`)."""
    hit = _LOSS_NAMES.get(metric)
    if hit is None:
        name = metric.lower()
        hit = "loss" in name and _LOSS_SCALING.search(name) is None
        if len(_LOSS_NAMES) < 65_536:
            _LOSS_NAMES[metric] = hit
    return hit
