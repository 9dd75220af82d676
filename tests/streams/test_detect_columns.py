"""The column-at-a-time metrics batch equals applying its records one at a time (state and alerts, bit for bit)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runstream import wire
from streams import detect
from streams.detect import (
    NS,
    DetectorSettings,
    MetricsState,
    RunState,
    SeriesState,
    apply_metrics,
    is_loss,
    on_metric,
    on_metric_values,
    on_seen,
    on_step,
)

CONF = DetectorSettings(spike_min_points=5, spike_window=12, straggler_window=4)
T0 = 1_795_428_000 * NS


def _reference(
    run: RunState, metrics: MetricsState, conf: DetectorSettings, *, node: str, rank: int, records: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The per-record rule: each record's stats, step and loss values in order."""
    out: list[dict[str, Any]] = []
    newest = 0
    stats = metrics.stats
    for rec in records:
        values, ts_ns, step = rec["values"], rec["ts_ns"], rec.get("step", -1)
        newest = max(newest, ts_ns)
        if len(stats) < detect.MAX_METRICS:
            on_metric_values(stats, values)
        else:
            on_metric_values(stats, {k: v for k, v in values.items() if k in stats})
        if step >= 0:
            on_step(run, conf, node=node, rank=rank, step=step, ts_ns=ts_ns)
        for name, value in values.items():
            if not is_loss(name):
                continue
            sid = f"{node}/{rank}/{name}"
            series = metrics.loss.get(sid)
            if series is None:
                if len(metrics.loss) >= detect.MAX_SERIES:
                    continue
                series = metrics.loss[sid] = SeriesState()
            out += on_metric(series, conf, node=node, rank=rank, metric=name, step=step, ts_ns=ts_ns, value=value)
    if newest:
        on_seen(run, node=node, rank=rank, ts_ns=newest)
    return out


_values = st.sampled_from([1.0, 1.01, 0.99, 0.0, -0.0, 30.0, math.nan, math.inf, -math.inf, 1e308]) | st.floats(
    -1e3, 1e3, allow_nan=False
)
_names = st.sampled_from(["loss", "val_loss", "lr", "acc", "Loss/train"])
_record = st.fixed_dictionaries(
    {
        "step": st.integers(-1, 40),
        "ts_ns": st.integers(T0, T0 + 100 * NS),
        "values": st.dictionaries(_names, _values, min_size=1, max_size=5),
    }
)
# Batches where every record has the same names in the same order (the usual producer), and mixed ones.
_uniform = st.lists(_names, min_size=1, max_size=4, unique=True).flatmap(
    lambda names: st.lists(
        st.fixed_dictionaries(
            {
                "step": st.integers(-1, 40),
                "ts_ns": st.integers(T0, T0 + 100 * NS),
                "values": st.fixed_dictionaries({n: _values for n in names}),
            }
        ),
        min_size=1,
        max_size=40,
    )
)
_batches = st.lists(st.lists(_record, min_size=1, max_size=30) | _uniform, min_size=1, max_size=4)


def _snapshot(run: RunState, metrics: MetricsState, alerts: list[dict[str, Any]]) -> bytes:
    # MessagePack keeps NaN, -0.0 and the order of every map: equal bytes, equal state.
    return wire.pack([run.to_map(), metrics.to_map(), alerts])


def _both(batches: list[list[dict[str, Any]]]) -> tuple[bytes, bytes]:
    got_run, got_metrics, want_run, want_metrics = RunState(), MetricsState(), RunState(), MetricsState()
    got: list[dict[str, Any]] = []
    want: list[dict[str, Any]] = []
    for rank, batch in enumerate(batches):
        copy = [{**rec, "values": dict(rec["values"])} for rec in batch]
        got += apply_metrics(got_run, got_metrics, CONF, node="n", rank=rank % 2, records=batch)
        want += _reference(want_run, want_metrics, CONF, node="n", rank=rank % 2, records=copy)
    return _snapshot(got_run, got_metrics, got), _snapshot(want_run, want_metrics, want)


@settings(max_examples=300, deadline=None)
@given(_batches)
def test_column_batches_equal_the_per_record_rule(batches: list[list[dict[str, Any]]]) -> None:
    """Stats, step times, loss windows, last seen and the alerts in order equal the per-record rule's."""
    got, want = _both(batches)
    assert got == want


def test_metric_limit_is_applied_as_record_by_record(monkeypatch: pytest.MonkeyPatch) -> None:
    """Near the limit on tracked metric names, the names kept are those the per-record rule keeps."""
    monkeypatch.setattr(detect, "MAX_METRICS", 3)
    batch = [{"step": s, "ts_ns": T0 + s, "values": {f"m{s}": 1.0, f"k{s}": 2.0}} for s in range(4)]
    got, want = _both([batch])
    assert got == want
    metrics = MetricsState()
    apply_metrics(RunState(), metrics, CONF, node="n", rank=0, records=batch)
    assert list(metrics.stats) == ["m0", "k0", "m1", "k1"]


def _ordered(state: SeriesState) -> list[float]:
    """The sorted copy the detectors read next: the one kept, or the one they rebuild when it is stale."""
    return state.ordered if len(state.ordered) == len(state.window) else sorted(state.window)


_finite = st.sampled_from([1.0, 1.01, 0.99, 0.0, -0.0, 30.0, 1e308, -1e308]) | st.floats(-1e3, 1e3)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(_finite, max_size=30),
    st.lists(_finite, min_size=1, max_size=60),
    st.sampled_from([CONF, DetectorSettings(spike_min_points=3, spike_window=7)]),
)
def test_loss_column_equals_value_by_value_through_full_windows(
    history: list[float], batch: list[float], conf: DetectorSettings
) -> None:
    """A column of finite loss values, over a window filling up or already full (even or odd size), raises the
    alerts at the positions and leaves the state (window, flags, memory) and the window's sorted copy (signs of
    zeros too) that on_metric gives value by value."""
    got, want = SeriesState(), SeriesState()
    for value in history:
        detect.on_metric(got, conf, node="n", rank=0, metric="loss", step=0, ts_ns=T0, value=value)
        detect.on_metric(want, conf, node="n", rank=0, metric="loss", step=0, ts_ns=T0, value=value)
    points = [(3 * k, k, T0 + k, value) for k, value in enumerate(batch)]
    found = detect.on_loss_column(
        got,
        conf,
        node="n",
        rank=0,
        metric="loss",
        values=list(batch),
        steps=list(range(len(batch))),
        stamps=[T0 + k for k in range(len(batch))],
    )
    alerts = [(3 * k, alert) for k, alert in found]
    expected = [
        (pos, alert)
        for pos, step, ts_ns, value in points
        for alert in detect.on_metric(want, conf, node="n", rank=0, metric="loss", step=step, ts_ns=ts_ns, value=value)
    ]
    assert wire.pack([alerts, got.to_map(), _ordered(got)]) == wire.pack([expected, want.to_map(), want.ordered])


_rising = st.lists(st.integers(0, 10_000), min_size=1, max_size=60, unique=True).map(sorted)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-1, 40), max_size=5), _rising, st.sampled_from([0, 1, 3, 20]), st.integers(0, 10**6))
def test_rising_steps_equal_step_by_step(before: list[int], steps: list[int], keep: int, gap_ns: int) -> None:
    """A batch of strictly rising steps (after any earlier ones) leaves the step times on_step leaves."""
    conf = DetectorSettings(straggler_window=keep)
    got, want = RunState(), RunState()
    stamps = [T0 + gap_ns * (k + 1) * (k % 3 + 1) for k in range(len(steps))]
    for k, step in enumerate(before):
        for state in (got, want):
            if step >= 0:
                on_step(state, conf, node="n", rank=0, step=step, ts_ns=T0 + k)
    detect.on_step_column(got, conf, node="n", rank=0, steps=steps, stamps=stamps)
    for step, ts_ns in zip(steps, stamps, strict=True):
        on_step(want, conf, node="n", rank=0, step=step, ts_ns=ts_ns)
    assert got.steps == want.steps


def test_same_sized_records_with_other_names_are_not_taken_as_uniform() -> None:
    """Records with as many names but not the same ones keep every name's stats and loss series."""
    batch = [
        {"step": 0, "ts_ns": T0, "values": {"loss": 1.0, "lr": 0.1}},
        {"step": 1, "ts_ns": T0 + 1, "values": {"loss": 2.0, "acc": 0.5}},
    ]
    got, want = _both([batch])
    assert got == want
    metrics = MetricsState()
    apply_metrics(RunState(), metrics, CONF, node="n", rank=0, records=batch)
    assert metrics.stats == {"loss": [2.0, 1.0, 2.0, 2], "lr": [0.1, 0.1, 0.1, 1], "acc": [0.5, 0.5, 0.5, 1]}
