"""The loss-series detectors (``nan_loss``, ``loss_spike``; see :mod:`streams.detect`) and their state.

The spike window is kept twice: in arrival order (what the changelog stores)
and sorted, so the median is O(1) and "is the MAD small enough for an alert"
is two bisections; the exact MAD is only computed for the rare value that may
be a spike.  :func:`on_loss_column` is :func:`on_metric` over a batch's
values of one series (the per-value work of a metrics batch): once the window
is full, a block of values at a time is first bounded as a whole, and only a
block that may hold a spike is tested value by value (see
:func:`_full_window_column`; ``tests/streams/test_loss_blocks.py`` holds it
equal to :func:`on_metric`, value by value).
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


@dataclass
class SeriesState:
    """The last values of one loss series (bounded by ``spike_window``) and whether NaN was reported."""

    window: list[float] = field(default_factory=list)
    nan_reported: bool = False
    #: ``window`` sorted, or stale: not stored, and rebuilt from ``window`` by the detectors that read it when the
    #: two differ in length (a state loaded from its map sorts its window only once a value needs it).
    ordered: list[float] = field(default_factory=list, repr=False, compare=False)

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
        return [alert_record(ts_ns, "nan_loss", f"{metric} is {value} at step {step}", node, rank,
                       f"nan_loss/{node}/{rank}/{metric}", "error", metric=metric, value=value)]
    window = state.window
    ordered = state.ordered
    if len(ordered) != len(window):  # the window was replaced or edited in place
        ordered[:] = sorted(window)
    n = len(window)
    out: list[dict[str, Any]] = []
    # At or below the median z <= 0, so the MAD (the costly part) is only looked at above it.
    if n >= conf.spike_min_points and value > (med := _median(ordered)):
        found = _spike(window, ordered, conf, node=node, rank=rank, metric=metric, step=step, ts_ns=ts_ns,
                       value=value, med=med)
        if found is not None:
            out.append(found)
    _push(window, ordered, value, conf.spike_window)
    return out


def _spike(window: list[float], ordered: list[float], conf: DetectorSettings, *, node: str, rank: int, metric: str,
           step: int, ts_ns: int, value: float, med: float) -> dict[str, Any] | None:
    """The loss_spike alert for ``value`` (finite, above the median ``med`` of the full window), or ``None``.

    Its first test (``near``) is bounded by :func:`_full_window_column` with the same float operations: change
    them together."""
    # z > spike_z needs MAD < limit; MAD >= limit when fewer than half the values lie within
    # ``limit`` of the median (two bisections): then no alert, without computing the MAD.
    n = len(window)
    limit = 0.6745 * (value - med) / conf.spike_z * (1 + 1e-9)
    near = bisect_right(ordered, med + limit) - bisect_left(ordered, med - limit)
    if near < (n + 1) // 2:
        return None
    # The MAD as statistics.median computes it: over the sorted window the deviations fall, then rise, so
    # sorting them merges two runs (and |x - med| is the same float whichever side x lies).
    devs = [abs(x - med) for x in ordered]
    devs.sort()
    mid = n // 2
    mad = devs[mid] if n % 2 else (devs[mid - 1] + devs[mid]) / 2
    scale = mad if mad > 0 else max(abs(med) * 1e-6, 1e-12)
    z = 0.6745 * (value - med) / scale
    if not z > conf.spike_z:
        return None
    return alert_record(ts_ns, "loss_spike", f"{metric} jumped to {value:.6g} at step {step} "
                  f"(median {med:.6g}, robust z {z:.1f})", node, rank,
                  f"loss_spike/{node}/{rank}/{metric}/{step}", metric=metric, value=value)


def _push(window: list[float], ordered: list[float], value: float, size: int) -> None:
    """Add ``value`` to the window (and its sorted copy), dropping the oldest beyond ``size``."""
    window.append(value)
    insort(ordered, value)
    extra = len(window) - size
    if extra > 0:
        for old in window[:extra]:
            del ordered[bisect_left(ordered, old)]
        del window[:extra]


def on_loss_column(state: SeriesState, conf: DetectorSettings, *, node: str, rank: int, metric: str,
                   values: list[float], steps: Indexed, stamps: Indexed) -> list[tuple[int, dict[str, Any]]]:
    """:func:`on_metric` for each ``values[k]`` (at ``steps[k]``, ``stamps[k]``) in order, in one loop; the alerts
    come with the index ``k`` of the value that raised them (``steps`` and ``stamps`` are only read for one)."""
    out: list[tuple[int, dict[str, Any]]] = []
    window = state.window
    ordered = state.ordered
    if len(ordered) != len(window):
        ordered[:] = sorted(window)
    size = conf.spike_window
    min_points = conf.spike_min_points
    isfinite = math.isfinite
    # A sum is finite only when every value is (NaN and infinities propagate; an overflow just takes this loop).
    steady = isfinite(sum(values)) and size >= min_points
    for k, value in enumerate(values):
        n = len(window)
        if steady and n == size:  # every value from here on sees a full window: the loop below, for the rest
            _full_window_column(state, conf, node, rank, metric, values, steps, stamps, k, out)
            break
        if not isfinite(value):  # no window change: the single-value rule (at most one alert per series)
            out += [(k, a) for a in on_metric(state, conf, node=node, rank=rank, metric=metric, step=steps[k],
                                                ts_ns=stamps[k], value=value)]
            continue
        if n >= min_points:
            mid = n // 2
            med = ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2
            if value > med:
                found = _spike(window, ordered, conf, node=node, rank=rank, metric=metric, step=steps[k],
                               ts_ns=stamps[k], value=value, med=med)
                if found is not None:
                    out.append((k, found))
        # _push, inlined
        window.append(value)
        insort(ordered, value)
        if n >= size:
            for old in window[: n + 1 - size]:
                del ordered[bisect_left(ordered, old)]
            del window[: n + 1 - size]
    return out


#: Values of a column one bound of :func:`_full_window_column` covers: a larger block costs less per value to
#: bound, but its windows differ more, so its bound clears fewer blocks (12 was the fastest on the bench's
#: metrics and on the real logs' loss series, among 4 to 32).
SPIKE_BLOCK = 12

#: The largest magnitude for which the median of two window values cannot overflow (see _full_window_column).
_SAFE_MAGNITUDE = 8e307


def _full_window_column(state: SeriesState, conf: DetectorSettings, node: str, rank: int, metric: str,
                        values: list[float], steps: Indexed, stamps: Indexed, start: int,
                        out: list[tuple[int, dict[str, Any]]]) -> None:
    """:func:`on_loss_column`'s loop for ``values[start:]`` (all finite) once the window is full
    (``spike_window`` values, at least ``spike_min_points``): the per-value work of a metrics batch.

    A block of values is first bounded as a whole.  Every window a value of the block is tested against
    is part of the block's *pool* (the window at its start and the block's values but the last), so its
    median lies between two order statistics of the pool (``low``, ``high``: at most ``len(block) - 1``
    ranks apart from its own), and the half-width of the test that rules most values out (see
    :func:`_spike`) is at most the one the block's largest value gives against ``low``.  When fewer than
    half a window's count of pool values lie within that half-width of ``[low, high]``, no value of the
    block passes the test, and the window just moves on by the block (its sorted copy rebuilt once, when
    next needed: ``sorted`` keeps equal values in arrival order, as the insertions do).  Every step of the
    bound is a monotone float operation on the test's own ones, so it never clears a block the test would
    not.  A block it does not clear takes the value-by-value loop: the general loop's steps, with what a
    full window fixes taken out of it (the median's positions, the window's length, the finiteness test).
    A value enters the sorted copy after the oldest one left it: the same list as the other way round."""
    window = state.window
    ordered = state.ordered
    size = len(window)
    spike_z = conf.spike_z
    half = (size + 1) // 2
    hi = size // 2
    lo = hi - 1 if size % 2 == 0 else hi
    # The half-width grows with the value only for a positive spike_z; a NaN or infinity in a restored window
    # would break the pool's order (only finite values reach this loop, and only they enter the window).
    bounded = spike_z > 0 and math.isfinite(sum(window))
    current = True  # whether ``ordered`` is ``sorted(window)``
    end = len(values)
    begin = start
    while begin < end:
        stop = min(end, begin + SPIKE_BLOCK)
        chunk = values[begin:stop]
        if bounded:
            pool = window + chunk[:-1]
            pool.sort()
            if -_SAFE_MAGNITUDE < pool[0] and pool[-1] < _SAFE_MAGNITUDE:  # else a median may overflow: the loop
                low = pool[lo]
                top = max(chunk)
                if top > low:  # (else no value of the block exceeds its windows' medians)
                    # As the test computes it, for the largest value against the lowest median.
                    limit = 0.6745 * (top - low) / spike_z * (1 + 1e-9)
                    near = bisect_right(pool, pool[hi + len(chunk) - 1] + limit) - bisect_left(pool, low - limit)
                if top <= low or near < half:
                    window += chunk
                    del window[: len(chunk)]
                    current = False
                    begin = stop
                    continue
        if not current:
            ordered[:] = sorted(window)
            current = True
        for k in range(begin, stop):
            value = values[k]
            med = (ordered[lo] + ordered[hi]) / 2 if lo != hi else ordered[hi]
            if value > med:
                limit = 0.6745 * (value - med) / spike_z * (1 + 1e-9)
                if bisect_right(ordered, med + limit) - bisect_left(ordered, med - limit) >= half:
                    found = _spike(window, ordered, conf, node=node, rank=rank, metric=metric, step=steps[k],
                                   ts_ns=stamps[k], value=value, med=med)
                    if found is not None:
                        out.append((k, found))
            del ordered[bisect_left(ordered, window[0])]
            del window[0]
            window.append(value)
            insort(ordered, value)
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
