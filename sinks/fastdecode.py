"""Typed decoders for the usual clean ``logs`` and ``metrics`` messages: bytes straight to table columns.

:func:`runstream.wire.decode` builds a dict per record, and the column-wise
paths (:func:`sinks.columns.log_columns`, ``sinks.rows._fast_values``) then
walk those dicts again, checking every value's type and range with C-level
passes.  Here msgspec decodes a message straight into structs (not tracked by
the garbage collector) whose types and bounds are exactly what those paths
store without a refusal: the envelope's framing as :func:`wire.decode` checks
it and as ``ColumnBuffer.add_envelope`` bounds it (rank in Int32, seq in
UInt64, ingest time in DateTime64(6)), and each record's fields as the
columns take them (``None`` where the general path reads a missing field as
its default).  So the values need no checking afterwards: a column is a few
``attrgetter`` passes and one Arrow conversion.

Anything else (another kind, a value of another type or out of range, an
empty batch, bytes that are not MessagePack) answers ``None`` and the caller
takes the general path, which owns every dead-letter reason; a message the
typed path takes gives the same rows as the general path
(``tests/sinks/test_sink_fastdecode.py`` holds the two equal on arbitrary envelopes).
"""

from __future__ import annotations

from itertools import chain
from operator import attrgetter
from typing import Annotated, Any, Generic, Literal, NamedTuple, TypeVar

import msgspec
import numpy as np
import pyarrow as pa

from runstream import wire
from sinks.columns import TS_NS, Piece, Run

_TS = pa.timestamp("us", tz="UTC")
_STRING = pa.string()
_STRINGS = pa.list_(_STRING)

_I32 = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]
_U32 = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
_I64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
#: UInt64: MessagePack holds no larger integer (and msgspec bounds only fit an int64).
_U64 = Annotated[int, msgspec.Meta(ge=0)]
#: A record's time: DateTime64(6) holds it (1900-01-01 on), and it fits an int64 of nanoseconds.
_TS_NS = Annotated[int, msgspec.Meta(ge=TS_NS[0], le=TS_NS[1])]
#: DateTime64(6) range in microseconds (the envelope's ingest time).
_TS_US = (-2_208_988_800_000_000, 10_413_791_999_999_999)
_IDENT = Annotated[str, msgspec.Meta(min_length=1, max_length=wire.MAX_ID_CHARS)]
_R = TypeVar("_R")


class Framing(NamedTuple):
    """The envelope-wide column values of a decoded message."""

    run: str
    node: str
    rank: int
    producer: str
    seq: int
    ingest_us: int


class _PlainLogRecord(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """A log record with only the fields every line has (what the SDK sends): the other columns take defaults."""

    ts_ns: _TS_NS
    line: str
    i: _U32
    stream: str | None = None
    level: str | None = None
    logger: str | None = None


class _LogRecord(_PlainLogRecord, forbid_unknown_fields=False):
    """A clean log record as the ``logs`` columns take it; ``None`` is the general path's default."""

    tags: list[str] | None = None
    group: str | None = None
    orig_bytes: _U32 | None = None
    rank: _I32 | None = None
    node: str | None = None


class _MetricRecord(msgspec.Struct, gc=False):
    """A clean metric record as the ``metrics`` columns take it (an integer value becomes a float)."""

    ts_ns: _TS_NS
    values: dict[str, float]
    i: _U32
    step: _I64 | None = -1
    source: str = "sdk"


class _Envelope(msgspec.Struct, Generic[_R], gc=False):
    """An envelope's framing as :func:`wire.decode` checks it, and its records as ``_R`` (at least one)."""

    v: Literal[1]
    kind: str
    producer: _IDENT
    seq: _U64
    run: _IDENT
    node: _IDENT
    rank: _I32
    sent_ns: int
    records: Annotated[list[_R], msgspec.Meta(min_length=1)]
    ingest_ns: int | None = None


_PLAIN_LOG_DECODER = msgspec.msgpack.Decoder(_Envelope[_PlainLogRecord])
_LOG_DECODER = msgspec.msgpack.Decoder(_Envelope[_LogRecord])
_METRIC_DECODER = msgspec.msgpack.Decoder(_Envelope[_MetricRecord])


def _framing(env: _Envelope[Any], kind: str) -> Framing | None:
    """The envelope-wide values, or None when it is of another kind or its ingest time is out of the
    column's range (general path)."""
    if env.kind != kind:
        return None
    ingest_us = (env.ingest_ns or env.sent_ns) // 1000
    if not _TS_US[0] <= ingest_us <= _TS_US[1]:
        return None
    return Framing(env.run, env.node, env.rank, env.producer, env.seq, ingest_us)


def _field(records: list[Any], name: str) -> list[Any]:
    return list(map(attrgetter(name), records))


def _text(values: list[str | None], default: str) -> Piece:
    """A text column whose values are ``str`` or ``None`` (``default``): a run when they are all one value."""
    first = values[0]
    n = len(values)
    if values.count(first) == n:  # identity is compared first: cheap when one object repeats
        return Run(default if first is None else first, n)
    if None in values:
        values = [default if v is None else v for v in values]
    return pa.array(values, type=_STRING)


def _int(values: list[int | None], default: int, kind: pa.DataType) -> Piece:
    """An integer column of in-range ``int`` or ``None`` (``default``) values: a run when all one value."""
    first = values[0]
    n = len(values)
    if values.count(first) == n:
        return Run(default if first is None else first, n)
    if None in values:
        values = [default if v is None else v for v in values]
    return pa.array(values, type=kind)


def _tags(values: list[list[str] | None]) -> Piece:
    first = values[0]
    n = len(values)
    if first is None and values.count(None) == n:
        return Run([], n)
    return pa.array([[] if v is None else v for v in values], type=_STRINGS)


def _times(values: list[int], counts: np.ndarray | None = None) -> pa.Array:
    """Nanosecond times as microsecond timestamps (floor division, as ``//``), each repeated ``counts`` times."""
    us = np.floor_divide(np.fromiter(values, np.int64, len(values)), 1000)
    return pa.array(us if counts is None else np.repeat(us, counts), type=_TS)


def decode_logs(value: bytes) -> tuple[Framing, list[Piece]] | None:
    """A clean ``logs`` message as its framing and the ``logs`` columns that vary per record, or None.

    Columns in the order of ``sinks.rows`` (``ts, stream, level, logger,
    line, tags, group, orig_bytes, idx, rank, node``).  None for anything the
    general path must look at (it may refuse it); never raises.
    """
    env: _Envelope[_PlainLogRecord] | _Envelope[_LogRecord]
    try:
        # Most envelopes hold only plain records: the five other columns are runs of their defaults
        # then, not five more passes over the records.  One with another field is decoded again.
        env = _PLAIN_LOG_DECODER.decode(value)
    except Exception:  # noqa: BLE001 - msgspec's errors, invalid UTF-8: try the full record, then the general path
        try:
            env = _LOG_DECODER.decode(value)
        except Exception:  # noqa: BLE001 - the general path decides, and owns the dead-letter reasons
            return None
    framing = _framing(env, "logs")
    if framing is None:
        return None
    records = env.records
    n = len(records)
    columns: list[Piece] = [
        _times(_field(records, "ts_ns")),
        _text(_field(records, "stream"), "stdout"),
        _text(_field(records, "level"), ""),
        _text(_field(records, "logger"), ""),
        pa.array(_field(records, "line"), type=_STRING),
    ]
    if type(records[0]) is _PlainLogRecord:  # not the subclass with every column
        columns += [Run([], n), Run("", n), Run(0, n), _index(records), Run(env.rank, n), Run(env.node, n)]
    else:
        columns += [
            _tags(_field(records, "tags")),
            _text(_field(records, "group"), ""),
            _int(_field(records, "orig_bytes"), 0, pa.uint32()),
            _index(records),
            _int(_field(records, "rank"), env.rank, pa.int32()),
            _text(_field(records, "node"), env.node),
        ]
    return framing, columns


def _index(records: list[Any]) -> pa.Array:
    """The records' ``i`` (each a UInt32 already)."""
    return pa.array(np.fromiter(_field(records, "i"), np.uint32, len(records)), type=pa.uint32())


_U16_MAX = 2**16 - 1


def decode_metrics(value: bytes) -> tuple[Framing, list[Piece]] | None:
    """A clean ``metrics`` message as its framing and the ``metrics`` columns that vary per point, or None.

    Columns in the order of ``sinks.rows`` (``name, step, ts, value, source,
    idx, sub``), one row per value of each record's ``values`` in its order (a
    record without values adds none).  None for anything the general path must
    look at; never raises.
    """
    try:
        env = _METRIC_DECODER.decode(value)
    except Exception:  # noqa: BLE001 - see decode_logs
        return None
    framing = _framing(env, "metrics")
    if framing is None:
        return None
    records = env.records
    vals: list[dict[str, float]] = _field(records, "values")
    n = len(records)
    counts = np.fromiter(map(len, vals), np.int64, n)
    total = int(counts.sum())
    if total and int(counts.max()) - 1 > _U16_MAX:
        return None  # a value position beyond UInt16: the general path refuses the record
    uniform = bool((counts == 1).all())  # one value per record (log-parsed points): nothing to repeat
    steps = _field(records, "step")
    if None in steps:
        steps = [-1 if s is None else s for s in steps]
    names = pa.array(list(chain.from_iterable(vals)), type=_STRING)
    values = pa.array(np.fromiter(chain.from_iterable(map(dict.values, vals)), np.float64, total))
    rep = None if uniform else counts
    if uniform:
        sub = np.zeros(total, np.uint16)
    else:
        starts = np.cumsum(counts) - counts
        sub = (np.arange(total, dtype=np.int64) - np.repeat(starts, counts)).astype(np.uint16)
    idx = np.fromiter(_field(records, "i"), np.uint32, n)
    step = np.fromiter(steps, np.int64, n)
    sources = _field(records, "source")
    source: Piece = (
        Run(sources[0], total)
        if sources.count(sources[0]) == n
        else pa.array(sources if rep is None else np.repeat(np.array(sources, dtype=object), rep), type=_STRING)
    )
    columns: list[Piece] = [
        names,
        pa.array(step if rep is None else np.repeat(step, rep), type=pa.int64()),
        _times(_field(records, "ts_ns"), rep),
        values,
        source,
        pa.array(idx if rep is None else np.repeat(idx, rep), type=pa.uint32()),
        pa.array(sub, type=pa.uint16()),
    ]
    return framing, columns
