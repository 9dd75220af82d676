"""The fast paths answer exactly what the validators answer, or defer to them."""

from __future__ import annotations

import copy
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from runstream.errors import InvalidRecord
from runstream.events import VALIDATORS, Limits
from streams.fastpath import fast_batch, fast_checker

LIMITS = Limits(max_line_bytes=64, max_metric_name_chars=8, max_text_field_chars=16)
TS = 1_795_428_000 * 1_000_000_000

_scalar = (
    st.none()
    | st.booleans()
    | st.integers(-5, 2**63)
    | st.floats()
    | st.text(max_size=24)
    | st.binary(max_size=8)
    | st.sampled_from([TS, TS + 1, 0, -1, "INFO", "warn", "stdout", "logging"])
)
_values = st.dictionaries(st.text(max_size=10) | st.integers(0, 3), _scalar, max_size=4) | _scalar
_logs = (
    st.fixed_dictionaries(
        {}, optional={"ts_ns": _scalar, "line": _scalar, "stream": _scalar, "level": _scalar, "logger": _scalar}
    )
    | _scalar
)
_metrics = st.fixed_dictionaries({}, optional={"ts_ns": _scalar, "step": _scalar, "values": _values}) | _scalar


def _agree(kind: str, record: Any) -> None:
    quick = fast_checker(kind, LIMITS)
    assert quick is not None
    got = quick(record, 3)
    if got is None:
        return
    expected = VALIDATORS[kind](record, LIMITS)
    expected["i"] = 3
    assert _same(got, expected)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(type(a) is type(b) and a == b)


@settings(max_examples=500, deadline=None)
@given(_logs)
def test_log_fast_path_equals_validator(record: Any) -> None:
    """Whenever the log fast path accepts a record, the validator gives the same record."""
    _agree("logs", record)


@settings(max_examples=500, deadline=None)
@given(_metrics)
def test_metric_fast_path_equals_validator(record: Any) -> None:
    """Whenever the metric fast path accepts a record, the validator gives the same record."""
    _agree("metrics", record)


def test_fast_path_takes_plain_records() -> None:
    """Plain, well-formed log and metric records take the fast path."""
    logs = fast_checker("logs", LIMITS)
    metrics = fast_checker("metrics", LIMITS)
    assert logs is not None and metrics is not None
    assert logs({"ts_ns": TS, "line": "step 1", "stream": "stdout", "level": ""}, 0) is not None
    assert metrics({"ts_ns": TS, "step": 1, "values": {"loss": math.nan}}, 0) is not None


def test_fast_path_defers_bad_records_to_the_validator() -> None:
    """A record the validator refuses is never accepted by the fast path."""
    logs = fast_checker("logs", LIMITS)
    assert logs is not None
    bad = {"ts_ns": True, "line": "x"}
    assert logs(bad, 0) is None
    try:
        VALIDATORS["logs"](bad, LIMITS)
    except InvalidRecord:
        pass
    else:
        raise AssertionError("the validator accepted a bool timestamp")


_plain_log = st.fixed_dictionaries(
    {"ts_ns": st.sampled_from([TS, TS + 7]), "line": st.sampled_from(["a", "step 1 loss=2", "x" * 20])},
    optional={
        "stream": st.sampled_from(["stdout", "stderr"]),
        "level": st.sampled_from(["", None, "INFO"]),
        "logger": st.sampled_from(["", "torch"]),
    },
)
_plain_metric = st.fixed_dictionaries(
    {
        "ts_ns": st.sampled_from([TS, TS + 7]),
        "values": st.dictionaries(st.sampled_from(["loss", "lr"]), st.floats(), min_size=1),
    },
    optional={"step": st.sampled_from([None, -1, 0, 5])},
)


def _agree_batch(kind: str, records: list[Any]) -> None:
    batch = fast_batch(kind, LIMITS)
    assert batch is not None
    before = copy.deepcopy(records)
    got = batch(records)
    if got is None:
        assert _same(records, before), "a refused batch was changed"
        return
    assert len(got) == len(before)
    for index, (rec, original) in enumerate(zip(got, before, strict=True)):
        expected = VALIDATORS[kind](original, LIMITS)
        expected["i"] = index
        assert _same(rec, expected)


@settings(max_examples=300, deadline=None)
@given(st.lists(_plain_log | _logs, min_size=1, max_size=6))
def test_log_batch_fast_path_equals_validator(records: list[Any]) -> None:
    """When the log batch fast path accepts a batch, each record equals the validator's; else nothing changed."""
    _agree_batch("logs", records)


@settings(max_examples=300, deadline=None)
@given(st.lists(_plain_metric | _metrics, min_size=1, max_size=6))
def test_metric_batch_fast_path_equals_validator(records: list[Any]) -> None:
    """When the metric batch fast path accepts a batch, each record equals the validator's; else nothing changed."""
    _agree_batch("metrics", records)


def test_batch_fast_path_takes_plain_batches() -> None:
    """A batch of plain SDK records (no logger, no step) takes the batch fast path, with the defaults filled."""
    logs, metrics = fast_batch("logs", LIMITS), fast_batch("metrics", LIMITS)
    assert logs is not None and metrics is not None
    got = logs([{"ts_ns": TS, "line": "a", "stream": "stdout", "level": ""}, {"ts_ns": TS, "line": "b"}])
    assert got == [
        {"ts_ns": TS, "line": "a", "stream": "stdout", "level": "", "logger": "", "i": 0},
        {"ts_ns": TS, "line": "b", "stream": "stdout", "level": "", "logger": "", "i": 1},
    ]
    assert metrics([{"ts_ns": TS, "values": {"loss": 1.0}}]) == [
        {"ts_ns": TS, "values": {"loss": 1.0}, "step": -1, "i": 0}
    ]
    assert metrics([{"ts_ns": TS, "values": {"loss": 1}}]) is None  # an int value: the validator converts it


def test_batch_fast_path_adds_defaults_in_the_per_record_order() -> None:
    """A batch whose records share their keys gets the missing defaults and ``i`` in the order the per-record
    normalisation adds them (``stream``, ``logger``, ``i``; ``step``, ``i``)."""
    logs, metrics = fast_batch("logs", LIMITS), fast_batch("metrics", LIMITS)
    assert logs is not None and metrics is not None
    got = logs([{"line": "a", "ts_ns": TS, "level": ""}, {"line": "b", "ts_ns": TS + 1, "level": "INFO"}])
    assert got is not None and [list(rec) for rec in got] == [["line", "ts_ns", "level", "stream", "logger", "i"]] * 2
    assert [rec["i"] for rec in got] == [0, 1] and got[1]["stream"] == "stdout" and got[1]["logger"] == ""
    steps = metrics([{"values": {"loss": 1.0}, "ts_ns": TS}, {"values": {"loss": 2.0}, "ts_ns": TS}])
    assert steps == [
        {"values": {"loss": 1.0}, "ts_ns": TS, "step": -1, "i": 0},
        {"values": {"loss": 2.0}, "ts_ns": TS, "step": -1, "i": 1},
    ]
    assert [list(rec) for rec in steps] == [["values", "ts_ns", "step", "i"]] * 2
