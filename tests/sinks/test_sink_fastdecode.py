"""The typed clean-message decoders change nothing: a message gives the rows and dead letters of the general path."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runstream import tables, wire
from sinks.fastdecode import decode_logs, decode_metrics
from sinks.rows import ColumnBuffer
from sinks.schemas import SCHEMAS
from sinks.segments import add_message
from tests.sinks.conftest import BASE_NS

#: DateTime64(6)'s first nanosecond (1900-01-01) and MessagePack's integer range.
MIN_TS = -2_208_988_800_000_000_000
INTS = st.integers(-(2**63), 2**64 - 1)
#: At most one envelope field replaced by something odd (or added).
FRAMING = st.dictionaries(
    st.sampled_from(["v", "kind", "producer", "seq", "rank", "sent_ns", "ingest_ns", "node", "later"]),
    st.sampled_from([1, 2, True, 1.5, "1", "logs", "metrics", "", "q" * 129, 0, -1, 2**31, 2**64 - 1, None, [1]]),
    max_size=1,
)
_TIMES = st.sampled_from([BASE_NS, BASE_NS + 1, MIN_TS, MIN_TS - 1, -1_999, 2**63 - 1, 2**63])
_ODD = st.none() | st.booleans() | st.floats(allow_nan=False) | st.binary(max_size=3) | INTS | st.just([1])


def _raw(kind: str, records: list[Any], framing: dict[str, Any]) -> bytes:
    """A clean ``kind`` message of ``records``, ``framing`` laid over its envelope."""
    doc = wire.Envelope(
        kind=kind,
        producer="p",
        seq=7,
        run="run1",
        node="n",
        rank=3,
        sent_ns=BASE_NS,
        records=records,
        ingest_ns=BASE_NS + 5_000,
    ).to_map()
    doc.update(framing)
    return wire.pack(doc)


def _view(buffer: ColumnBuffer) -> dict[str, str]:
    """Every table's rows as text (floats by repr: NaN and -0.0 compare as themselves)."""
    return {table: repr(buffer.to_arrow(table).to_pylist()) for table in SCHEMAS}


def _both(value: bytes, kind: str) -> tuple[dict[str, str], dict[str, str], int, int]:
    """Rows and row counts of ``value`` read from the clean ``kind`` topic: typed path first, and general only."""
    out = []
    for typed in (True, False):
        buffer = ColumnBuffer()
        rows = add_message(
            buffer,
            kind=kind,
            topic=f"runstream.clean.{kind}",
            partition=1,
            offset=42,
            timestamp_ms=BASE_NS // 1_000_000,
            value=value,
            typed=typed,
        )
        out.append((_view(buffer), rows))
    return out[0][0], out[1][0], out[0][1], out[1][1]


_log_record = st.fixed_dictionaries(
    {"ts_ns": _TIMES | _ODD, "line": st.text(max_size=8) | _ODD, "i": st.integers(0, 3) | INTS | _ODD},
    optional={
        "stream": st.sampled_from(["stdout", "stderr", None, 1]),
        "level": st.sampled_from(["", "INFO", None, b"x"]),
        "logger": st.sampled_from(["", "torch", None]),
        "tags": st.sampled_from([None, [], ["oom"], ["a", "b"], "oom", ["a", 1]]),
        "group": st.sampled_from([None, "", "g1", 0, 1]),
        "orig_bytes": st.sampled_from([None, 0, 7, 2**32, -1, True]),
        "rank": st.sampled_from([None, 0, 5, 2**31, -(2**31), 1.0]),
        "node": st.sampled_from([None, "n9", "", 3]),
        "extra": st.just(1),
    },
)
_plain_log = st.fixed_dictionaries(
    {"ts_ns": st.integers(BASE_NS, BASE_NS + 10), "line": st.text(max_size=8), "i": st.integers(0, 9)},
    optional={"stream": st.sampled_from(["stdout", "stderr"]), "level": st.sampled_from(["", "INFO"])},
)
_metric_record = st.fixed_dictionaries(
    {
        "ts_ns": _TIMES | _ODD,
        "values": st.dictionaries(
            st.sampled_from(["loss", "acc", "lr"]),
            st.floats() | st.integers(-(2**63), 2**64 - 1) | st.booleans() | st.none(),
            max_size=3,
        )
        | _ODD,
        "i": st.integers(0, 3) | INTS | _ODD,
    },
    optional={
        "step": st.sampled_from([None, -1, 0, 5, 2**63 - 1, 2**63, -(2**63), True, 1.0]),
        "source": st.sampled_from(["sdk", "log", "", None, 1]),
        "extra": st.just(1),
    },
)
_plain_metric = st.fixed_dictionaries(
    {
        "ts_ns": st.integers(BASE_NS, BASE_NS + 10),
        "values": st.dictionaries(st.sampled_from(["loss", "acc"]), st.floats(), max_size=2),
        "i": st.integers(0, 9),
    },
    optional={"step": st.integers(-1, 9), "source": st.just("log")},
)


def _mostly_plain(plain: st.SearchStrategy[Any], record: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    """Plain batches with at most one doubtful record (so one doubt decides the path), or any records."""
    one_doubt = st.tuples(st.lists(plain, max_size=5), st.lists(record | _ODD, max_size=1))
    return one_doubt.map(lambda parts: parts[0] + parts[1]) | st.lists(record, max_size=5)


@settings(max_examples=400, deadline=None)
@given(_mostly_plain(_plain_log, _log_record), FRAMING)
def test_typed_logs_equal_the_general_path(records: list[Any], framing: dict[str, Any]) -> None:
    """A clean logs message gives the same rows and dead letters with the typed decoder as without."""
    typed, general, typed_rows, general_rows = _both(_raw("logs", records, framing), "logs")
    assert typed == general and typed_rows == general_rows


@settings(max_examples=400, deadline=None)
@given(_mostly_plain(_plain_metric, _metric_record), FRAMING)
def test_typed_metrics_equal_the_general_path(records: list[Any], framing: dict[str, Any]) -> None:
    """A clean metrics message gives the same rows and dead letters with the typed decoder as without."""
    typed, general, typed_rows, general_rows = _both(_raw("metrics", records, framing), "metrics")
    assert typed == general and typed_rows == general_rows


_SDK_LINE = {"ts_ns": BASE_NS, "line": "step 1 loss 0.5", "stream": "stdout", "level": "", "logger": "", "i": 0}
_LOGS_WITH_EXTRAS = [
    _SDK_LINE,
    {**_SDK_LINE, "i": 1, "tags": ["traceback"], "group": "g1", "rank": 5, "node": "n9", "orig_bytes": 70000},
]


@pytest.mark.parametrize(
    ("kind", "records", "decode"),
    [
        ("logs", [_SDK_LINE, {**_SDK_LINE, "i": 1, "level": "INFO"}], decode_logs),
        ("logs", _LOGS_WITH_EXTRAS, decode_logs),
        ("metrics", [{"ts_ns": BASE_NS, "step": 3, "values": {"loss": 0.5, "acc": 1}, "i": 0}], decode_metrics),
        ("metrics", [{"ts_ns": BASE_NS, "values": {"loss": 0.5}, "i": 0, "source": "log"}], decode_metrics),
    ],
    ids=["sdk-lines", "lines-with-tags", "sdk-points", "parsed-points"],
)
def test_usual_messages_take_the_typed_path(kind: str, records: list[Any], decode: Any) -> None:
    """The messages the stream worker usually writes are decoded by the typed decoder, into the general path's rows."""
    value = _raw(kind, records, {})
    assert decode(value) is not None
    typed, general, _, _ = _both(value, kind)
    assert typed == general


@pytest.mark.parametrize(
    ("kind", "records", "framing"),
    [
        ("logs", [{**_SDK_LINE, "ts_ns": True}], {}),
        ("logs", [{**_SDK_LINE, "line": None}], {}),
        ("logs", [_SDK_LINE], {"ingest_ns": 2**64 - 1}),
        ("logs", [], {}),
        ("metrics", [{"ts_ns": BASE_NS, "values": {"loss": True}, "i": 0}], {}),
        ("metrics", [{"ts_ns": BASE_NS, "values": {"loss": 1.0}, "i": 0, "source": None}], {}),
        ("metrics", [{"ts_ns": BASE_NS, "values": {"loss": 1.0}, "i": 0}], {"kind": "logs"}),
    ],
    ids=["bool-time", "no-line", "ingest-beyond-2299", "empty", "bool-value", "null-source", "other-kind"],
)
def test_doubtful_messages_go_the_general_way(kind: str, records: list[Any], framing: dict[str, Any]) -> None:
    """A message the general path refuses (wholly or in part) is not taken by the typed decoder."""
    decode = decode_logs if kind == "logs" else decode_metrics
    assert decode(_raw(kind, records, framing)) is None


def test_a_refused_record_keeps_its_dead_letter_with_the_typed_decoder_on() -> None:
    """A bad record in a logs message still becomes a dead letter naming it, and the good lines are stored."""
    buffer = ColumnBuffer()
    value = _raw("logs", [_SDK_LINE, {**_SDK_LINE, "i": 1, "ts_ns": "yesterday"}], {})
    rows = add_message(
        buffer, kind="logs", topic="runstream.clean.logs", partition=0, offset=9, timestamp_ms=1, value=value
    )
    assert rows == 1 and buffer.rows_in(tables.LOGS) == 1
    letters = buffer.to_arrow(tables.DEAD_LETTERS).to_pylist()
    assert [(d["offset"], d["idx"]) for d in letters] == [(9, 1)]
