"""Pure detectors: each raises its alert on its input, once, with a deterministic key."""

from __future__ import annotations

import math
import statistics

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runstream.events import VALIDATORS, Limits
from streams.detect import (
    NS,
    DetectorSettings,
    GpuState,
    MetricsState,
    RunState,
    SeriesState,
    apply_metrics,
    apply_runs,
    check_run,
    on_gpu_sample,
    on_log,
    on_metric,
    on_step,
)
from streams.digest import apply_logs

CONF = DetectorSettings()
T0 = 1_795_428_000 * NS


def _metric(state: SeriesState, step: int, value: float) -> list[dict[str, object]]:
    return on_metric(state, CONF, node="n", rank=0, metric="loss", step=step, ts_ns=T0 + step, value=value)


def test_nan_loss_alerts_once_per_series() -> None:
    """A NaN loss raises one nan_loss alert; later NaNs of the same series raise none."""
    state = SeriesState()
    first = _metric(state, 1, math.nan)
    assert [a["kind"] for a in first] == ["nan_loss"] and first[0]["key"] == "nan_loss/n/0/loss"
    assert _metric(state, 2, math.inf) == []


def test_loss_spike_is_detected_after_warmup() -> None:
    """A value far above the recent median raises loss_spike; ordinary noise does not."""
    state = SeriesState()
    quiet = [a for s in range(40) for a in _metric(state, s, 1.0 + 0.01 * (s % 5))]
    spike = _metric(state, 40, 25.0)
    assert quiet == [] and [a["kind"] for a in spike] == ["loss_spike"]
    assert spike[0]["key"] == "loss_spike/n/0/loss/40"


def test_spike_window_is_bounded() -> None:
    """The series state keeps at most spike_window values."""
    state = SeriesState()
    for s in range(200):
        _metric(state, s, 1.0)
    assert len(state.window) == CONF.spike_window


def test_oom_log_line_raises_one_alert_per_traceback() -> None:
    """Two OOM-tagged lines of one traceback give alerts with the same key."""
    rec = {
        "ts_ns": T0,
        "line": "torch.cuda.OutOfMemoryError: CUDA out of memory.",
        "tags": ["oom"],
        "group": "p/3/7",
        "i": 9,
    }
    first = on_log(rec, producer="p", seq=3, node="n", rank=0)
    again = on_log({**rec, "i": 10}, producer="p", seq=3, node="n", rank=0)
    assert [a["kind"] for a in first] == ["oom"] and first[0]["key"] == again[0]["key"] == "oom/p/3/7"


def test_alert_records_pass_the_alerts_validator() -> None:
    """Every alert the detectors build is a valid alerts record."""
    alert = _metric(SeriesState(), 1, math.nan)[0]
    assert VALIDATORS["alerts"](alert, Limits())["kind"] == "nan_loss"


def test_gpu_idle_after_threshold_while_running() -> None:
    """A GPU under the idle threshold for idle_after_s raises gpu_idle once."""
    state = GpuState()
    alerts = [
        a
        for t in range(0, 130, 10)
        for a in on_gpu_sample(
            state, CONF, running=True, node="n", rank=0, device="gpu0", ts_ns=T0 + t * NS, util_pct=0.0
        )
    ]
    assert [a["kind"] for a in alerts] == ["gpu_idle"] and alerts[0]["key"] == f"gpu_idle/n/gpu0/{T0}"


def test_busy_gpu_is_not_idle() -> None:
    """A busy GPU raises nothing."""
    state = GpuState()
    assert not [
        a
        for t in range(0, 300, 10)
        for a in on_gpu_sample(
            state, CONF, running=True, node="n", rank=0, device="gpu0", ts_ns=T0 + t * NS, util_pct=90.0
        )
    ]


def test_stalled_after_crashed_after_s_without_heartbeat() -> None:
    """No heartbeat for longer than crashed_after_s raises stalled once."""
    state = RunState(last_heartbeat_ns=T0)
    assert check_run(state, CONF, T0 + 30 * NS) == []
    stalled = check_run(state, CONF, T0 + 61 * NS)
    assert [a["kind"] for a in stalled] == ["stalled"]
    assert check_run(state, CONF, T0 + 90 * NS) == []


def test_silent_rank_while_others_continue() -> None:
    """A rank silent for silent_after_s while another keeps sending raises silent_rank."""
    state = RunState(last_seen_ns={"n/0": T0 + 300 * NS, "n/1": T0})
    alerts = check_run(state, CONF, T0 + 300 * NS)
    assert [(a["kind"], a["rank"]) for a in alerts] == [("silent_rank", 1)]


def test_straggler_rank_by_step_time_skew() -> None:
    """A rank whose steps take twice as long as the others' raises straggler."""
    state = RunState()
    for rank, step_s in ((0, 1.0), (1, 1.0), (2, 2.0)):
        for step in range(6):
            on_step(state, CONF, node="n", rank=rank, step=step, ts_ns=T0 + int(step * step_s * NS))
    alerts = check_run(state, CONF, T0 + 12 * NS)
    assert [(a["kind"], a["rank"]) for a in alerts] == [("straggler", 2)]


def _roundtrip(doc: dict[str, object]) -> dict[str, object]:
    return msgpack.unpackb(msgpack.packb(doc, use_bin_type=True), raw=False)


def test_state_objects_survive_a_msgpack_roundtrip() -> None:
    """Every state object comes back equal from its to_map() packed as MessagePack (what the changelog holds)."""
    run, metrics = RunState(), MetricsState()
    apply_runs(run, node="n", rank=0, records=[{"ts_ns": T0, "event": "heartbeat"}])
    apply_metrics(
        run,
        metrics,
        CONF,
        node="n",
        rank=1,
        records=[{"ts_ns": T0 + s, "step": s, "values": {"loss": 1.0 / (s + 1), "lr": math.nan}} for s in range(5)],
    )
    gpu = GpuState(idle_since_ns=T0, reported=True)
    assert RunState.from_map(_roundtrip(run.to_map())) == run
    again = MetricsState.from_map(_roundtrip(metrics.to_map()))
    assert again.loss == metrics.loss and again.stats.keys() == metrics.stats.keys()
    assert GpuState.from_map(_roundtrip(gpu.to_map())) == gpu


def test_metric_stats_keep_last_min_max_count() -> None:
    """Per-metric stats are [last, min, max, count]; min and max ignore non-finite values."""
    run, metrics = RunState(), MetricsState()
    values = [3.0, 1.0, math.nan, 5.0, 2.0]
    apply_metrics(
        run,
        metrics,
        CONF,
        node="n",
        rank=0,
        records=[{"ts_ns": T0 + i, "step": i, "values": {"acc": v}} for i, v in enumerate(values)],
    )
    assert metrics.stats["acc"] == [2.0, 1.0, 5.0, 5]


def test_log_batch_counts_lines_warnings_errors_and_members() -> None:
    """A log batch adds to the run's line, warning and error counts and records its node and rank."""
    run = RunState()
    levels = ["INFO", "WARNING", "ERROR", "CRITICAL", ""]
    apply_logs(
        run,
        producer="p",
        seq=0,
        node="n1",
        rank=3,
        records=[{"ts_ns": T0 + i, "line": "x", "level": lvl, "i": i} for i, lvl in enumerate(levels)],
    )
    assert run.counts == {"lines": 5, "warnings": 1, "errors": 2}
    assert run.nodes == ["n1"] and run.ranks == [3] and run.last_seen_ns == {"n1/3": T0 + 4}


def test_one_traceback_yields_one_alert_per_batch() -> None:
    """Two OOM lines of one traceback in a batch give one oom alert."""
    recs = [
        {"ts_ns": T0 + i, "line": "CUDA out of memory", "level": "ERROR", "tags": ["oom"], "group": "g1", "i": i}
        for i in range(2)
    ]
    alerts = apply_logs(RunState(), producer="p", seq=0, node="n", rank=0, records=recs)
    assert [a["key"] for a in alerts] == ["oom/g1"]


def test_status_is_crashed_after_heartbeats_stop() -> None:
    """A running run reads as crashed once crashed_after_s passed since its last heartbeat; a finished one does not."""
    run = RunState()
    apply_runs(run, node="n", rank=0, records=[{"ts_ns": T0, "event": "start"}])
    assert run.status_at(T0 + 30 * NS, CONF) == "running"
    assert run.status_at(T0 + 61 * NS, CONF) == "crashed"
    apply_runs(run, node="n", rank=0, records=[{"ts_ns": T0 + 5 * NS, "event": "finish", "status": "finished"}])
    assert run.status_at(T0 + 600 * NS, CONF) == "finished"


def _reference_spikes(values: list[float], conf: DetectorSettings) -> tuple[list[int], list[float]]:
    """The loss-spike rule computed directly, over plain lists with statistics.median (what the sorted window, the
    bounded memory and the flags must match): the steps it alerts at and the window it ends with."""
    size, run = conf.spike_window, conf.spike_run
    span = 2 * run - 1
    window: list[float] = []
    gone: list[float] = []  # every value that left the window, oldest first
    flags: list[bool] = []  # whether each of the last ``span`` finite values was high
    alerted = False
    steps: list[int] = []
    for step, x in enumerate(values):
        if not math.isfinite(x):
            continue
        high = extreme = False
        n = len(window)
        med = statistics.median(window) if n >= conf.spike_min_points else math.nan
        if n >= conf.spike_min_points and x - med >= (conf.spike_ratio - 1) * abs(med):
            mad = statistics.median([abs(v - med) for v in window])
            z = 0.6745 * (x - med) / (mad if mad > 0 else max(abs(med) * 1e-6, 1e-12))
            # The tail: the window but its values flagged high, and what left it: the last whole block of
            # spike_window values to leave and those since.
            recent = flags[len(flags) - min(span - 1, n, len(flags)) :]  # the last values' flags, oldest first
            k = len(recent)
            tail = window[: n - k] + [v for v, flag in zip(window[n - k :], recent, strict=True) if not flag]
            blocks = len(gone) // size
            peak = max(tail + gone[max(0, blocks - 1) * size :], default=-math.inf)
            high = z > conf.spike_run_z and x > peak
            extreme = high and z > conf.spike_z and x - med >= conf.spike_tail * (peak - med)
        flags = (flags + [high])[-span:]
        if not any(flags):
            alerted = False
        lasted = all(flags[-run:]) and len(flags) >= run or sum(flags) > run
        if high and not alerted and (extreme or lasted):
            alerted = True
            steps.append(step)
        window.append(x)
        gone += window[:-size]
        window = window[-size:]
    return steps, window


_small = DetectorSettings(spike_window=7, spike_min_points=3, spike_run=2, spike_tail=2.0)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6) | st.sampled_from([1.0, 1.01, 1.02, 0.0, 5.0, 50.0, 1e3, math.nan]), max_size=160)
    | st.lists(st.sampled_from([1.0, 1.01, 0.99, 1.02, 1.5, 3.5, 5.0, 8.0, 50.0]), max_size=200),  # rises, dips
    st.sampled_from([CONF, _small]),
)
def test_rolling_spike_detector_equals_the_direct_rule(values: list[float], conf: DetectorSettings) -> None:
    """The sorted-window detector flags exactly the steps the direct level/spread/tail rule flags, and its window
    matches."""
    state = SeriesState()
    got = [
        a["key"]
        for s, v in enumerate(values)
        for a in on_metric(state, conf, node="n", rank=0, metric="loss", step=s, ts_ns=T0 + s, value=v)
        if a["kind"] == "loss_spike"
    ]
    steps, window = _reference_spikes(values, conf)
    assert got == [f"loss_spike/n/0/loss/{step}" for step in steps]
    assert state.window == window and state.ordered == sorted(window)


def test_run_finishes_only_when_every_started_rank_finished() -> None:
    """Two ranks start; the run stays running after rank 0 finishes and is finished once rank 1 does."""
    run = RunState()
    apply_runs(run, node="a", rank=0, records=[{"ts_ns": T0, "event": "start"}])
    apply_runs(run, node="b", rank=1, records=[{"ts_ns": T0, "event": "start"}])
    apply_runs(run, node="a", rank=0, records=[{"ts_ns": T0 + 1, "event": "finish", "status": "finished"}])
    assert run.status == "running"
    apply_runs(run, node="b", rank=1, records=[{"ts_ns": T0 + 2, "event": "finish", "status": "finished"}])
    assert run.status == "finished" and RunState.from_map(_roundtrip(run.to_map())) == run


def test_one_failed_rank_fails_the_run_at_once() -> None:
    """A rank that finishes failed makes the run failed while the other rank still runs; killed ranks give killed."""
    run = RunState()
    for rank in (0, 1, 2):
        apply_runs(run, node="a", rank=rank, records=[{"ts_ns": T0, "event": "heartbeat"}])
    apply_runs(run, node="a", rank=2, records=[{"ts_ns": T0 + 1, "event": "finish", "status": "killed"}])
    assert run.status == "killed"
    apply_runs(run, node="a", rank=1, records=[{"ts_ns": T0 + 2, "event": "finish", "status": "failed"}])
    assert run.status == "failed" and check_run(run, CONF, T0 + 600 * NS) == []


def test_detector_settings_refuse_windows_the_detectors_cannot_use() -> None:
    """An empty spike window (or minimum, or run), a spike ratio below 1 or a negative straggler window is refused
    when the settings are built."""
    for bad in (
        {"spike_window": 0},
        {"spike_min_points": 0},
        {"spike_run": 0},
        {"spike_ratio": 0.5},
        {"straggler_window": -1},
    ):
        with pytest.raises(ValueError):
            DetectorSettings(**bad)
    assert DetectorSettings(straggler_window=0).straggler_window == 0


def test_mixed_precision_loss_scaling_raises_no_loss_alert() -> None:
    """A dynamic loss scale that doubles after good steps and a scaled loss that overflows to inf (fp16 training
    as usual) raise no loss alert; the real loss beside them going NaN raises nan_loss, and both are still counted."""
    run, metrics = RunState(), MetricsState()
    records = []
    for step in range(120):
        scale = 2.0 ** (16 + step // 40)  # 65536, doubled at steps 40 and 80
        loss = math.nan if step == 110 else 2.0 - step / 200
        records.append(
            {
                "ts_ns": T0 + step,
                "step": step,
                "values": {
                    "train/loss": loss,
                    "train/loss_scale": scale,
                    "scaled_loss": math.inf if step % 30 == 7 else loss * scale,
                    "multiscale_loss": 1.0 + 0.01 * (step % 5),
                },
            }
        )
    alerts = apply_metrics(run, metrics, CONF, node="n", rank=0, records=records)
    assert [(a["kind"], a["key"]) for a in alerts] == [("nan_loss", "nan_loss/n/0/train/loss")]
    assert metrics.stats["train/loss_scale"][3] == 120 and metrics.stats["scaled_loss"][3] == 120
    assert set(metrics.loss) == {"n/0/train/loss", "n/0/multiscale_loss"}  # the series the loss detectors watch
