"""The typed metrics decoder changes nothing: a raw metrics message gives what the general path gives."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runstream.events import Limits
from streams.fastdecode import metric_decoder
from tests.streams.typed_paths import FRAMING, INTS, MIN_TS, TS, both_paths, mostly_plain, raw, view

LIMITS = Limits(max_records_per_batch=5, max_metric_name_chars=6, max_metric_keys_per_record=3)
_number = (
    st.floats()
    | st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 0.5])
    | INTS
    | st.booleans()
    | st.none()
    | st.just("1")
)
_name = st.sampled_from(["loss", "lr", "x" * 6, "x" * 7, "", "a\nb", "é", "acc/1"]) | st.text(max_size=8)
_values = st.dictionaries(_name, _number, max_size=4) | INTS | st.none()
_record = st.fixed_dictionaries(
    {"ts_ns": st.sampled_from([TS, TS + 1, MIN_TS, MIN_TS - 1, TS + 10**15]) | INTS | st.booleans(), "values": _values},
    optional={"step": st.sampled_from([0, 1, -1, -2, None, True, 1.0]) | INTS, "extra": st.just(1)},
)
_plain = st.fixed_dictionaries(
    {
        "ts_ns": st.sampled_from([TS, TS + 1, MIN_TS]),
        "values": st.dictionaries(st.sampled_from(["loss", "lr", "acc"]), st.floats() | st.integers(0, 10), min_size=1),
    },
    optional={"step": st.integers(0, 5)},
)
_records = mostly_plain(_plain, _record)


_PLAIN: dict[str, Any] = {"ts_ns": TS, "step": 1, "values": {"loss": 0.5}}
_CHANGES: list[dict[str, Any]] = [
    {"values": {"loss": 1}},
    {"values": {"loss": 2**64 - 1}},
    {"values": {"loss": True}},
    {"values": {"loss": None}},
    {"values": {"loss": math.nan, "lr": math.inf, "acc": -math.inf}},
    {"values": {"loss": -0.0}},
    {"values": {}},
    {"values": {"a": 1.0, "b": 2.0, "c": 3.0}},
    {"values": {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}},
    {"values": {"x" * 6: 1.0}},
    {"values": {"x" * 7: 1.0}},
    {"values": {"": 1.0}},
    {"values": {"a\tb": 1.0}},
    {"values": {1: 1.0}},
    {"values": [1.0]},
    {"step": None},
    {"step": -1},
    {"step": -2},
    {"step": True},
    {"step": 1.0},
    {"ts_ns": MIN_TS},
    {"ts_ns": MIN_TS - 1},
    {"ts_ns": True},
    {"ts_ns": TS + 10**15},
    {"extra": 1},
]
#: One doubt each, at the edges of what the typed decoder accepts.
_EDGES: list[tuple[list[Any], dict[str, Any]]] = [
    *[([_PLAIN, {**_PLAIN, **change}], {}) for change in _CHANGES],
    ([_PLAIN, {"ts_ns": TS, "values": {"loss": 0.5}}], {}),
    ([{"ts_ns": TS, "values": {"loss": 0.5}}] * 2, {}),
    *[
        ([_PLAIN], {key: value})
        for key, value in [
            ("v", 2),
            ("v", True),
            ("kind", "logs"),
            ("producer", ""),
            ("producer", "q" * 129),
            ("seq", -1),
            ("rank", "0"),
            ("v_minor", 3),
            ("v_minor", "x"),
            ("ingest_ns", "x"),
            ("later", [1]),
            ("sent_ns", 1.0),
        ]
    ],
    ([_PLAIN] * 5, {}),
    ([_PLAIN] * 6, {}),
    ([], {}),
    ([None], {}),
]


@pytest.mark.parametrize(("records", "framing"), _EDGES)
def test_typed_decoder_equals_the_general_path_at_the_edges(records: list[Any], framing: dict[str, Any]) -> None:
    """At each edge of what the typed metrics decoder accepts, the outcome is the general path's."""
    fast, general = both_paths(raw("metrics", records, framing), "metrics", LIMITS)
    assert view(fast) == view(general)


@settings(max_examples=500, deadline=None)
@given(_records, FRAMING)
def test_typed_decoder_equals_the_general_path(records: list[Any], framing: dict[str, Any]) -> None:
    """Clean records, dead letters and counters are the same with the typed metrics decoder as without."""
    fast, general = both_paths(raw("metrics", records, framing), "metrics", LIMITS)
    assert view(fast) == view(general)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(MIN_TS, TS),
            st.integers(0, 10**6) | st.none(),
            st.dictionaries(st.sampled_from(["loss", "lr", "acc"]), st.floats(), min_size=1),
        ),
        min_size=1,
        max_size=5,
    ).filter(lambda recs: len({step is None for _, step, _ in recs}) == 1)
)
def test_sdk_batches_give_the_same_bytes(fields: list[tuple[int, int | None, dict[str, float]]]) -> None:
    """A batch as the SDK sends it (steps given, or left out, throughout) gives a byte-identical clean message."""
    value = raw(
        "metrics",
        [
            {"ts_ns": ts, "values": values} if step is None else {"ts_ns": ts, "step": step, "values": values}
            for ts, step, values in fields
        ],
        {},
    )
    fast, general = both_paths(value, "metrics", LIMITS)
    assert metric_decoder(LIMITS)(value) is not None
    assert (fast.clean, fast.dead) == (general.clean, general.dead)


def test_typed_decoder_keeps_non_finite_values_and_makes_integers_floats() -> None:
    """NaN and ±Inf come out exactly, an integer value as a float, a missing step as -1, each record with its index."""
    env = metric_decoder(LIMITS)(
        raw(
            "metrics",
            [
                {"ts_ns": TS, "values": {"a": math.nan, "b": -math.inf, "c": 3}},
                {"ts_ns": TS, "values": {"a": math.inf}},
            ],
            {},
        )
    )
    assert env is not None
    first, second = env.records
    assert math.isnan(first["values"]["a"]) and first["values"]["b"] == -math.inf
    assert type(first["values"]["c"]) is float and first["values"]["c"] == 3.0
    assert (first["step"], first["i"], second["values"], second["step"], second["i"]) == (-1, 0, {"a": math.inf}, -1, 1)


def test_typed_decoder_refuses_what_is_doubtful() -> None:
    """The decoder answers None for a bad name, a None step, a bool value, mixed steps or another kind."""
    decode = metric_decoder(LIMITS)
    doubtful: list[tuple[list[Any], dict[str, Any]]] = [
        ([{"ts_ns": TS, "values": {"x" * 7: 1.0}}], {}),
        ([{"ts_ns": TS, "values": {"a\x00": 1.0}}], {}),
        ([{"ts_ns": TS, "step": None, "values": {"a": 1.0}}], {}),
        ([{"ts_ns": TS, "values": {"a": True}}], {}),
        ([{"ts_ns": TS, "step": 1, "values": {"a": 1.0}}, {"ts_ns": TS, "values": {"a": 1.0}}], {}),
        ([{"ts_ns": TS, "values": {"a": 1.0}}], {"kind": "logs"}),
        ([], {}),
    ]
    for records, framing in doubtful:
        assert decode(raw("metrics", records, framing)) is None, (records, framing)
    assert decode(b"\xc1") is None and decode(b"") is None


def test_a_name_refused_once_is_refused_again() -> None:
    """A name the decoder refused is never remembered as checked: the next batch with it is refused too."""
    decode = metric_decoder(LIMITS)
    bad = raw("metrics", [{"ts_ns": TS, "values": {"ok": 1.0, "a\x01": 1.0}}], {})
    assert decode(bad) is None
    assert decode(raw("metrics", [{"ts_ns": TS, "values": {"ok": 1.0}}], {})) is not None
    assert decode(bad) is None
