"""The typed log decoder changes nothing: a raw logs message gives what the general path gives."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runstream.events import Limits
from streams.fastdecode import log_decoder
from tests.streams.typed_paths import FRAMING, INTS, MIN_TS, TS, both_paths, mostly_plain, raw, view

LIMITS = Limits(max_line_bytes=64, max_records_per_batch=5, max_text_field_chars=8)
_text = st.sampled_from(
    [
        "step 1 loss=2.5",
        "WARNING: x",
        "Traceback (most recent call last):",
        "a\x00b",
        "é" * 16,
        "x" * 17,
        "x" * 40,
        "[rank3]: iter 4: loss 1.5",
        "",
    ]
) | st.text(max_size=20)
_record = st.fixed_dictionaries(
    {
        "ts_ns": st.sampled_from([TS, TS + 1, MIN_TS, MIN_TS - 1, TS + 10**15]) | INTS | st.booleans(),
        "line": _text | st.binary(max_size=4) | INTS,
    },
    optional={
        "stream": st.sampled_from(["stdout", "stderr", "logging", "other", None]),
        "level": st.sampled_from(["", None, "INFO", "warn", "WARNING", "fatal", "CRITICAL", 3]),
        "logger": st.sampled_from(["", "torch", "x" * 9, None]),
        "extra": st.just(1),
    },
)
_plain = st.fixed_dictionaries(
    {"ts_ns": st.sampled_from([TS, TS + 1, MIN_TS]), "line": _text},
    optional={
        "stream": st.sampled_from(["stdout", "stderr"]),
        "level": st.sampled_from(["", "INFO", "ERROR"]),
        "logger": st.just(""),
    },
)
_records = mostly_plain(_plain, _record)


_PLAIN: dict[str, Any] = {"ts_ns": TS, "line": "a", "stream": "stdout", "level": ""}
_CHANGES: list[dict[str, Any]] = [
    # max_line_bytes 64: 17 four-byte characters need truncating, 17 two-byte ones do not
    {"line": "x" * 16},
    {"line": "x" * 17},
    {"line": "é" * 17},
    {"line": "\U0001f600" * 16},
    {"line": "\U0001f600" * 17},
    {"line": "a\x00"},
    {"line": b"a"},
    {"ts_ns": MIN_TS},
    {"ts_ns": MIN_TS - 1},
    {"ts_ns": True},
    {"ts_ns": 1.5e18},
    {"stream": "logging"},
    {"stream": "other"},
    {"stream": None},
    {"level": None},
    {"level": "warn"},
    {"level": "CRITICAL"},
    {"logger": "x" * 8},
    {"logger": "x" * 9},
    {"logger": None},
    {"extra": 1},
]
#: One doubt each, at the edges of what the typed decoder accepts.
_EDGES: list[tuple[list[Any], dict[str, Any]]] = [
    *[([_PLAIN, {**_PLAIN, **change}], {}) for change in _CHANGES],
    *[
        ([_PLAIN], {key: value})
        for key, value in [
            ("v", 2),
            ("v", True),
            ("kind", "metrics"),
            ("producer", ""),
            ("producer", "q" * 128),
            ("producer", "q" * 129),
            ("seq", -1),
            ("seq", True),
            ("rank", -1),
            ("rank", "0"),
            ("v_minor", 3),
            ("v_minor", True),
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
    """At each edge of what the typed decoder accepts, the outcome is the general path's."""
    fast, general = both_paths(raw("logs", records, framing), "logs", LIMITS)
    assert view(fast) == view(general)


@settings(max_examples=500, deadline=None)
@given(_records, FRAMING)
def test_typed_decoder_equals_the_general_path(records: list[Any], framing: dict[str, Any]) -> None:
    """Clean records, derived metrics, dead letters and counters are the same with the typed decoder as without."""
    fast, general = both_paths(raw("logs", records, framing), "logs", LIMITS)
    assert view(fast) == view(general)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(MIN_TS, TS),
            _text,
            st.sampled_from(["stdout", "stderr"]),
            st.sampled_from(["", "INFO", "ERROR"]),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_sdk_batches_give_the_same_bytes(fields: list[tuple[int, str, str, str]]) -> None:
    """A batch as the SDK sends it (these fields, in this order) gives byte-identical clean and metrics messages."""
    records = [{"ts_ns": ts, "line": line, "stream": stream, "level": level} for ts, line, stream, level in fields]
    value = raw("logs", records, {})
    fast, general = both_paths(value, "logs", LIMITS)
    assert (fast.clean, fast.metrics, fast.dead) == (general.clean, general.metrics, general.dead)


def test_typed_decoder_takes_plain_batches_and_refuses_the_rest() -> None:
    """The decoder answers plain SDK batches (defaults filled, indexes added) and None for anything doubtful."""
    decode = log_decoder(LIMITS)
    env = decode(
        raw("logs", [{"ts_ns": TS, "line": "a", "stream": "stdout", "level": ""}, {"ts_ns": TS, "line": "b"}], {})
    )
    assert env is not None and env.records == [
        {"ts_ns": TS, "line": "a", "stream": "stdout", "level": "", "logger": "", "i": 0},
        {"ts_ns": TS, "line": "b", "stream": "stdout", "level": "", "logger": "", "i": 1},
    ]
    for records, framing in [
        ([{"ts_ns": TS, "line": "a", "level": None}], {}),
        ([{"ts_ns": TS, "line": "a", "level": "warn"}], {}),
        ([{"ts_ns": TS, "line": "a\x00"}], {}),
        ([{"ts_ns": TS, "line": "a"}] * 6, {}),
        ([{"ts_ns": TS, "line": "a"}], {"kind": "metrics"}),
        ([], {}),
    ]:
        assert decode(raw("logs", records, framing)) is None, (records, framing)
    assert decode(b"\xc1") is None and decode(b"") is None


def test_invalid_utf8_takes_the_general_path() -> None:
    """A line that is not valid UTF-8 is not decoded by the typed decoder; the message is dead-lettered as before."""
    value = raw("logs", [{"ts_ns": TS, "line": "zzzz"}], {}).replace(b"zzzz", b"z\xffzz")
    assert log_decoder(LIMITS)(value) is None
    fast, general = both_paths(value, "logs", LIMITS)
    assert fast.clean is None and len(fast.dead) == 1 and view(fast) == view(general)
