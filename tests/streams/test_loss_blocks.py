"""The block-bounded loss-spike loop (streams.losses) raises exactly what the value-by-value rule raises."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runstream import wire
from streams import losses
from streams.detect import NS, DetectorSettings, SeriesState, on_loss_column, on_metric

T0 = 1_795_428_000 * NS
CONF = DetectorSettings()

# A loss series: a level with noise (narrow or heavy-tailed), sometimes a spike or a value about three times the
# level (where the level test and the block bound turn), a plateau of equal values, a signed zero or a value near
# the float range's end.
_noise = st.floats(-0.05, 0.05) | st.floats(-3.0, 3.0)
_point = st.one_of(
    _noise.map(lambda x: 2.0 + x),
    _noise.map(lambda x: 2.0 + x),
    _noise.map(lambda x: 2.0 + x),
    st.floats(2.0, 2.6),  # about the robust-z threshold of the narrow noise
    st.floats(5.5, 6.5),  # about spike_ratio times the level
    st.sampled_from([2.0, 2.0, 40.0, 1e6, 0.0, -0.0]),
    st.floats(-1e308, 1e308),
)
_series = st.lists(_point, min_size=0, max_size=400)
_long = st.lists(_point, min_size=60, max_size=400)  # beyond one full window of the default settings


def _by_value(state: SeriesState, conf: DetectorSettings, values: list[float]) -> list[tuple[int, dict[str, object]]]:
    return [
        (k, alert)
        for k, value in enumerate(values)
        for alert in on_metric(state, conf, node="n", rank=0, metric="loss", step=k, ts_ns=T0 + k, value=value)
    ]


def _both(
    history: list[float], batch: list[float], conf: DetectorSettings, window: list[float] | None = None
) -> tuple[bytes, bytes]:
    got = SeriesState() if window is None else SeriesState.from_map({"w": list(window)})
    want = SeriesState() if window is None else SeriesState.from_map({"w": list(window)})
    _by_value(got, conf, history)
    _by_value(want, conf, history)
    steps = list(range(len(batch)))
    alerts = on_loss_column(
        got, conf, node="n", rank=0, metric="loss", values=batch, steps=steps, stamps=[T0 + k for k in steps]
    )
    expected = _by_value(want, conf, batch)
    return wire.pack([alerts, got.to_map(), _ordered(got)]), wire.pack([expected, want.to_map(), want.ordered])


def _ordered(state: SeriesState) -> list[float]:
    """The sorted copy the detectors read next: the one kept, or the one they rebuild when it is stale."""
    return state.ordered if len(state.ordered) == len(state.window) else sorted(state.window)


@settings(max_examples=300, deadline=None)
@given(_series, _long)
def test_blocks_equal_value_by_value_on_noisy_series(history: list[float], batch: list[float]) -> None:
    """Alerts (and their positions), the state (window, flags, memory) and the window's sorted copy equal the
    value-by-value rule's."""
    got, want = _both(history, batch, CONF)
    assert got == want


@pytest.mark.parametrize("block", [1, 2, 5, 50])
def test_any_block_size_equals_value_by_value(monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    """Whatever the block size, a noisy series with planted spikes raises the value-by-value alerts."""
    monkeypatch.setattr(losses, "SPIKE_BLOCK", block)
    batch = [2.0 + 0.01 * math.sin(k * 0.7) + (5.0 if k % 97 == 60 else 0.0) for k in range(600)]
    got, want = _both(batch[:80], batch[80:], CONF)
    assert got == want


def test_planted_spikes_are_found_in_a_long_column() -> None:
    """The spikes planted in a steady noisy column, further apart than the tail's memory reaches (150 values), are
    alerted at their positions."""
    batch = [2.0 + 0.01 * math.sin(k * 0.7) + (5.0 if k % 157 == 60 else 0.0) for k in range(800)]
    state = SeriesState()
    alerts = on_loss_column(
        state, CONF, node="n", rank=0, metric="loss", values=batch, steps=list(range(800)), stamps=[T0] * 800
    )
    assert [k for k, _ in alerts] == [k for k in range(800) if k % 157 == 60]


def test_window_shorter_than_a_block_equals_value_by_value() -> None:
    """A window shorter than a block (whose first values enter and leave the window within it) leaves the tail's
    memory the value-by-value rule leaves."""
    conf = DetectorSettings(spike_window=4, spike_min_points=2)
    got, want = _both([], [2.0] * 9 + [2.0 + 0.01 * k for k in range(40)], conf)
    assert got == want


def test_restored_window_with_nan_takes_the_value_by_value_loop() -> None:
    """A restored window holding a NaN (a hand-made changelog) gives what the value-by-value rule gives."""
    window = [2.0 + 0.001 * k for k in range(49)] + [math.nan]
    batch = [2.0 + 0.001 * (k % 7) for k in range(200)] + [9.0]
    got, want = _both([], batch, CONF, window=window)
    assert got == want


def test_values_near_the_float_range_end_equal_value_by_value() -> None:
    """Values whose median would overflow take the loop and raise what the value-by-value rule raises."""
    batch = [1.7e308, -1.7e308] * 40 + [1.79e308] * 30
    got, want = _both([], batch, CONF)
    assert got == want


@settings(max_examples=100, deadline=None)
@given(
    _series,
    _series,
    st.sampled_from(
        [
            DetectorSettings(spike_window=7, spike_min_points=3),
            DetectorSettings(spike_window=12, spike_min_points=12, spike_z=3.0),
            DetectorSettings(spike_window=4, spike_min_points=2, spike_z=-1.0),
            DetectorSettings(spike_window=9, spike_min_points=4, spike_ratio=1.0, spike_run_z=-1.0, spike_run=1),
            DetectorSettings(spike_window=30, spike_min_points=10, spike_ratio=1.5, spike_run=2, spike_tail=2.0),
        ]
    ),
)
def test_blocks_equal_value_by_value_for_other_settings(
    history: list[float], batch: list[float], conf: DetectorSettings
) -> None:
    """Other windows (odd, even, small) and thresholds (also non-positive z thresholds, a ratio of 1, runs of one
    value) keep the equality."""
    got, want = _both(history, batch, conf)
    assert got == want
