"""loss_spike: silent on converging training (noisy minibatches, hard batches, plateaus, warm restarts), one alert
at the right step for a jump that lasts, a divergence or an extreme outlier."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from runstream import wire
from streams.detect import NS, DetectorSettings, SeriesState, on_metric
from tests.streams import loss_series

CONF = DetectorSettings()
T0 = 1_795_428_000 * NS
#: The jumps below start here, well after the window filled and the decay slowed (level ~0.06).
AT = 2000


def _spikes(values: list[float], state: SeriesState | None = None) -> list[str]:
    state = SeriesState() if state is None else state
    return [
        alert["key"]
        for step, value in enumerate(values)
        for alert in on_metric(state, CONF, node="n", rank=0, metric="loss", step=step, ts_ns=T0 + step, value=value)
        if alert["kind"] == "loss_spike"
    ]


def _key(step: int) -> str:
    return f"loss_spike/n/0/loss/{step}"


def _scaled(values: list[float], start: int, factors: list[float]) -> list[float]:
    """``values`` with ``values[start + i]`` multiplied by ``factors[i]``."""
    out = list(values)
    for i, factor in enumerate(factors):
        out[start + i] *= factor
    return out


@pytest.mark.parametrize("name", sorted(loss_series.CONVERGING))
def test_converging_series_raise_no_loss_spike(name: str) -> None:
    """Converging training raises no loss_spike: two recorded train_spirals.py runs (the previous rule raised 27
    and 138), noisy decays, a loss near 1e-3, plateaus (one rounded: MAD 0), shuffled hard batches, warm
    restarts."""
    series: Callable[[], list[float]] = loss_series.CONVERGING[name]
    assert _spikes(series()) == []


def test_jump_that_lasts_alerts_once_it_has_lasted_spike_run_values() -> None:
    """Five times the level for 30 steps (noisy) raises one alert, at the jump's third value."""
    values = _scaled(loss_series.decaying(), AT, [5.0] * 30)
    assert _spikes(values) == [_key(AT + 2)]


def test_jump_that_dwarfs_the_noise_alerts_at_its_first_value() -> None:
    """Ten times the level for five steps rises ten times as far as the recent noise: one alert, at once."""
    values = _scaled(loss_series.decaying(), AT, [10.0] * 5)
    assert _spikes(values) == [_key(AT)]


def test_jump_with_a_dip_alerts_once_four_of_five_values_are_high() -> None:
    """Five times the level with one value back at the level in the middle still raises its alert (4 of 5)."""
    values = _scaled(loss_series.decaying(), AT, [5.0, 5.0, 1.0, 5.0, 5.0])
    assert _spikes(values) == [_key(AT + 4)]


def test_divergence_raises_one_alert() -> None:
    """A loss that grows by half each step from its level raises one alert, once three values are high."""
    base = loss_series.decaying()
    level = 0.05 + 2.25 * math.exp(-AT / 400)
    values = base[:AT] + [level * 1.5 ** (i + 1) for i in range(40)]
    assert _spikes(values) == [_key(AT + 4)]


def test_single_extreme_outlier_alerts_at_its_step() -> None:
    """One value at ten times the level (then the level again) raises one alert, at that value."""
    base = loss_series.decaying()
    values = list(base)
    values[AT] = 10 * (0.05 + 2.25 * math.exp(-AT / 400))
    assert _spikes(values) == [_key(AT)]


def test_loss_back_at_its_start_is_a_spike_on_heavy_noise() -> None:
    """On the recorded train_spirals.py losses (hard batches at 10 times the median), a step back at the first
    loss (ln 2, 190 times the median) raises an alert."""
    values = loss_series.recorded("train_spirals_loss")
    values[1200] = math.log(2)
    assert _spikes(values) == [_key(1200)]


def test_jump_that_lasts_is_found_on_heavy_noise() -> None:
    """On the recorded train_spirals.py losses, twenty times the level for ten steps raises one alert."""
    values = loss_series.recorded("train_spirals_loss")
    assert _spikes(_scaled(values, 1200, [20.0] * 10)) == [_key(1202)]


def test_second_rise_after_the_level_returned_alerts_again() -> None:
    """Two jumps 300 steps apart raise an alert each."""
    values = _scaled(_scaled(loss_series.decaying(), AT, [5.0] * 5), AT + 300, [5.0] * 5)
    assert _spikes(values) == [_key(AT + 2), _key(AT + 302)]


def test_spike_recurring_within_the_memory_is_alerted_once() -> None:
    """The same spike every 97 steps (a hard batch met once an epoch) is alerted the first time only: after that,
    it is what the series' noise reaches."""
    values = [2.0 + 0.001 * (k * 7 % 11) + (5.0 if k % 97 == 60 else 0.0) for k in range(1000)]
    assert _spikes(values) == [_key(60)]


def test_state_stays_bounded() -> None:
    """After 20,000 values with spikes, the state holds a window of spike_window values, two remembered values,
    one flag per value of the last 2 * spike_run - 1 and nothing else."""
    state = SeriesState()
    values = _scaled(loss_series.hard_batches(n=20_000), 5000, [50.0] * 8)
    _spikes(values, state)
    doc = state.to_map()
    assert sorted(doc) == ["a", "h", "l", "lc", "n", "w"]
    assert len(doc["w"]) == CONF.spike_window and len(doc["l"]) == 2 and 0 <= doc["lc"] < CONF.spike_window
    assert 0 <= doc["h"] < 2 ** (2 * CONF.spike_run - 1)


def test_state_saved_before_the_rule_loads_and_detects() -> None:
    """A state map with only a window (saved by the previous release) loads with the rule's fields at their
    defaults and still flags an extreme value."""
    state = SeriesState.from_map(wire.unpack(wire.pack({"w": [1.0 + 0.01 * (k % 5) for k in range(30)], "n": False})))
    assert (state.highs, state.alerted, state.left, state.left_count) == (0, False, [-math.inf, -math.inf], 0)
    assert _key(30) in [
        a["key"] for a in on_metric(state, CONF, node="n", rank=0, metric="loss", step=30, ts_ns=T0, value=50.0)
    ]
