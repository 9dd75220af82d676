"""The fast paths answer exactly what the validators answer, or defer to them."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from runstream.errors import InvalidRecord
from runstream.events import VALIDATORS, Limits
from streams.fastpath import fast_checker

LIMITS = Limits(max_line_bytes=64, max_metric_name_chars=8, max_text_field_chars=16)
TS = 1_795_428_000 * 1_000_000_000

_scalar = (st.none() | st.booleans() | st.integers(-5, 2**63) | st.floats() | st.text(max_size=24)
           | st.binary(max_size=8) | st.sampled_from([TS, TS + 1, 0, -1, "INFO", "warn", "stdout", "logging"]))
_values = st.dictionaries(st.text(max_size=10) | st.integers(0, 3), _scalar, max_size=4) | _scalar
_logs = st.fixed_dictionaries({}, optional={"ts_ns": _scalar, "line": _scalar, "stream": _scalar,
                                            "level": _scalar, "logger": _scalar}) | _scalar
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
