"""Clean envelopes to table columns: pure, no I/O.

A :class:`ColumnBuffer` accumulates rows for every table as columns
(:mod:`sinks.columns`: whole-envelope Arrow arrays, runs of one value, lists)
and hands each table over as an Arrow table (the fastest insert path into
ClickHouse).  Log envelopes take the column-wise path; a record it cannot
take sends its envelope through the per-record path below.  Times become integer microseconds; ``config`` and evaluation
``data`` become JSON text in which NaN and ±Inf are the strings ``"NaN"``,
``"Infinity"`` and ``"-Infinity"``, so stored JSON is always valid.

Clean records were validated upstream, but the sink trusts no one: a record
that does not fit its table (missing field, wrong type, number out of the
column's range) becomes a ``dead_letters`` row with the reason, and the rest
of its envelope is stored.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

import pyarrow as pa

from runstream import deadletter, tables
from runstream.wire import Envelope
from sinks.columns import TS_NS, Column, Piece, Run, log_columns, piece_len, text_bytes
from sinks.fastdecode import Framing
from sinks.schemas import LOW_CARDINALITY, SCHEMAS

_I32 = (-(2**31), 2**31 - 1)
_U16 = (0, 2**16 - 1)
_U32 = (0, 2**32 - 1)
_U64 = (0, 2**64 - 1)
_I64 = (-(2**63), 2**63 - 1)
#: DateTime64(6) holds 1900-01-01 .. 2299-12-31; microseconds.
_TS_US = (-2_208_988_800_000_000, 10_413_791_999_999_999)


class RowError(ValueError):
    """A record does not fit its table; the message says which field and why."""


def json_safe(value: Any) -> Any:
    """``value`` with NaN/±Inf as strings, bytes as text and map keys as strings."""
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, Mapping):
        return {
            (k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)): json_safe(v) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def json_text(value: Any) -> str:
    """Valid JSON for ``value`` (NaN/Inf as strings); raises :class:`RowError` if impossible."""
    try:
        return json.dumps(
            json_safe(value),
            ensure_ascii=False,
            separators=(",", ":"),
            allow_nan=False,
            default=str,
        )
    except (ValueError, TypeError, RecursionError) as exc:
        raise RowError(f"not representable as JSON: {exc}") from None


def _int(value: Any, bounds: tuple[int, int], what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise RowError(f"{what} must be an integer, not {type(value).__name__}")
    if not bounds[0] <= value <= bounds[1]:
        raise RowError(f"{what} {value} is out of range [{bounds[0]}, {bounds[1]}]")
    return value


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise RowError(f"{what} must be a string, not {type(value).__name__}")
    return value


def _float(value: Any, what: str) -> float:
    if isinstance(value, float):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    raise RowError(f"{what} must be a number, not {type(value).__name__}")


def _strs(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RowError(f"{what} must be a list of strings")
    return value


def _ts_us(record: Mapping[str, Any]) -> int:
    return _int(record.get("ts_ns"), (_TS_US[0] * 1000, _I64[1]), "ts_ns") // 1000


def _opt(record: Mapping[str, Any], key: str, default: Any) -> Any:
    """``record[key]``, or ``default`` when it is absent or None (msgpack nil)."""
    value = record.get(key)
    return default if value is None else value


def _rec(record: Any) -> Mapping[str, Any]:
    if not isinstance(record, Mapping):
        raise RowError(f"record is a {type(record).__name__}, not a map")
    return record


def _index(record: Mapping[str, Any]) -> int:
    return _int(record.get("i"), _U32, "record index 'i'")


# Each row function turns one record into the values of the columns that vary
# per row (the names in _KINDS), one tuple per row; envelope-wide columns are
# filled by ColumnBuffer.add_envelope.  ``base`` is the envelope's (rank, node),
# which a log or alert record may override with its own.

_Base = tuple[int, str]


def _run_rows(r: Mapping[str, Any], base: _Base) -> list[tuple[Any, ...]]:
    event = _str(r.get("event"), "event")
    code = r.get("exit_code")
    config = json_text(r["config"]) if r.get("config") is not None else ""
    return [
        (
            _ts_us(r),
            event,
            _str(r.get("project", ""), "project"),
            _str(r.get("name", ""), "name"),
            _str(r.get("status", ""), "status"),
            None if code is None else _int(code, _I32, "exit_code"),
            _str(r.get("reason", ""), "reason"),
            config,
            _strs(r.get("tags"), "tags"),
            _str(r.get("host", ""), "host"),
            _int(r.get("pid", 0), _U32, "pid"),
            _int(r.get("world_size", 0), _U32, "world_size"),
            _strs(r.get("argv"), "argv"),
            _index(r),
        )
    ]


def _metric_rows(r: Mapping[str, Any], base: _Base) -> list[tuple[Any, ...]]:
    ts, idx = _ts_us(r), _index(r)
    source = _str(r.get("source", "sdk"), "source")
    step = r.get("step", -1)
    step = _int(-1 if step is None else step, _I64, "step")
    values = r.get("values")
    if not isinstance(values, Mapping):
        raise RowError("values must be a map of name to number")
    return [
        (
            _str(name, "metric name"),
            step,
            ts,
            _float(v, f"value of {str(name)[:64]!r}"),
            source,
            idx,
            _int(sub, _U16, "value position"),
        )
        for sub, (name, v) in enumerate(values.items())
    ]


def _resource_rows(r: Mapping[str, Any], base: _Base) -> list[tuple[Any, ...]]:
    ts, idx = _ts_us(r), _index(r)
    device = _str(r.get("device"), "device")
    values = r.get("values")
    if not isinstance(values, Mapping):
        raise RowError("values must be a map of name to number")
    return [
        (
            ts,
            device,
            _str(name, "measurement name"),
            _float(v, f"value of {str(name)[:64]!r}"),
            idx,
            _int(sub, _U16, "value position"),
        )
        for sub, (name, v) in enumerate(values.items())
    ]


def _log_rows(r: Mapping[str, Any], base: _Base) -> list[tuple[Any, ...]]:
    rank = r.get("rank")
    node = r.get("node")
    return [
        (
            _ts_us(r),
            _str(_opt(r, "stream", "stdout"), "stream"),
            _str(_opt(r, "level", ""), "level"),
            _str(_opt(r, "logger", ""), "logger"),
            _str(r.get("line"), "line"),
            _strs(r.get("tags"), "tags"),
            _str(r.get("group") or "", "group"),
            _int(_opt(r, "orig_bytes", 0), _U32, "orig_bytes"),
            _index(r),
            base[0] if rank is None else _int(rank, _I32, "rank"),
            base[1] if node is None else _str(node, "node"),
        )
    ]


def _alert_rows(r: Mapping[str, Any], base: _Base) -> list[tuple[Any, ...]]:
    key = _str(r.get("key"), "key")
    if not key:
        raise RowError("key must not be empty")
    value = r.get("value")
    rank = r.get("rank")
    node = r.get("node")
    return [
        (
            key,
            _ts_us(r),
            _str(r.get("kind"), "kind"),
            _str(r.get("severity", "warning"), "severity"),
            _str(r.get("message", ""), "message"),
            base[1] if node is None else _str(node, "node"),
            base[0] if rank is None else _int(rank, _I32, "rank"),
            _str(r.get("metric") or "", "metric"),
            None if value is None else _float(value, "value"),
            _index(r),
        )
    ]


def _eval_rows(r: Mapping[str, Any], base: _Base) -> list[tuple[Any, ...]]:
    data = r.get("data")
    if not isinstance(data, Mapping):
        raise RowError("data must be a map")
    return [
        (
            _ts_us(r),
            _str(r.get("name"), "name"),
            _str(r.get("type"), "type"),
            json_text(data),
            _index(r),
        )
    ]


# Fast paths: whole columns at once for the high-volume kinds.  They return
# None at the first thing that is not exactly as expected, and the slow path
# above then finds and refuses the offending records one by one.


def _all(values: list[Any], kind: type) -> bool:
    # set(map(type, ...)) runs in C: ~3x faster than a generator over 1000 records.
    return set(map(type, values)) <= {kind}


def _within(values: list[int], bounds: tuple[int, int]) -> bool:
    return not values or (bounds[0] <= min(values) and max(values) <= bounds[1])


_TS_NS = TS_NS


def _per_value(per_record: list[Any], counts: list[int], uniform: bool) -> list[Any]:
    """Each record's value repeated once per value of the record (C-level ``repeat``)."""
    return per_record if uniform else list(chain.from_iterable(map(repeat, per_record, counts)))


def _fast_values(records: list[Any], label: str, extra: str | None = None) -> list[list[Any]] | None:
    """Columns of metric (``label="step"``) or resource (``"device"``) records, or None.

    Whole columns per pass (``map``/``itemgetter``/``chain`` in C) rather than
    Python work per record: log lines give about one metric point each, so
    these envelopes hold ~1000 records of one value.  ``extra`` names a
    per-record text field (the metrics' ``source``, default ``"sdk"``) added
    as a last column.  A record without values adds no row, and its fields are
    then not checked (only that ``values``, ``ts_ns`` and ``i`` are there).
    """
    if not records:
        return [[] for _ in range(6 + (extra is not None))]
    try:
        vals = list(map(itemgetter("values"), records))
        ts = list(map(itemgetter("ts_ns"), records))
        idx = list(map(itemgetter("i"), records))
        if label == "step":
            labels = list(map(dict.get, records, repeat("step"), repeat(-1)))
        else:
            labels = list(map(itemgetter("device"), records))
        extras = list(map(dict.get, records, repeat(extra), repeat("sdk"))) if extra is not None else []
    except (KeyError, TypeError, AttributeError):
        return None
    if set(map(type, vals)) != {dict}:
        return None
    counts = list(map(len, vals))
    if 0 in counts:
        keep = [j for j, k in enumerate(counts) if k]
        pick = itemgetter(*keep) if len(keep) > 1 else (lambda seq: tuple(seq[j] for j in keep))
        vals, ts, idx, labels, counts = (list(pick(x)) for x in (vals, ts, idx, labels, counts))
        extras = list(pick(extras)) if extra is not None else []
    if label == "step" and None in labels:
        labels = [-1 if v is None else v for v in labels]
    ok = (
        _all(ts, int)
        and _within(ts, _TS_NS)
        and _all(idx, int)
        and _within(idx, _U32)
        and (not counts or max(counts) - 1 <= _U16[1])
        and (_all(labels, int) and _within(labels, _I64) if label == "step" else _all(labels, str))
        and (extra is None or _all(extras, str))
    )
    if not ok:
        return None
    names = list(chain.from_iterable(vals))
    if not _all(names, str):
        return None
    values = list(chain.from_iterable(map(dict.values, vals)))
    if not _all(values, float):
        if not all(type(v) is float or type(v) is int for v in values):
            return None
        values = [float(v) for v in values]
    uniform = set(counts) <= {1}
    us = _per_value([t // 1000 for t in ts], counts, uniform)
    idx = _per_value(idx, counts, uniform)
    labels = _per_value(labels, counts, uniform)
    sub = [0] * len(names) if uniform else list(chain.from_iterable(map(range, counts)))
    columns = [names, labels, us, values, idx, sub] if label == "step" else [us, labels, names, values, idx, sub]
    if extra is not None:
        columns.append(_per_value(extras, counts, uniform))
    return columns


def _fast_metrics(records: list[Any], base: _Base) -> list[list[Any]] | None:
    columns = _fast_values(records, "step", extra="source")
    if columns is None:
        return None
    names, steps, us, values, idx, sub, source = columns
    return [names, steps, us, values, source, idx, sub]


_FAST: dict[str, Callable[[list[Any], _Base], Sequence[Piece] | None]] = {
    "logs": lambda records, base: log_columns(records, base[0], base[1]),
    "metrics": _fast_metrics,
    "resources": lambda records, base: _fast_values(records, "device"),
}


_RowFn = Callable[[Mapping[str, Any], _Base], list[tuple[Any, ...]]]

#: kind -> (table, columns varying per row, row function)
_KINDS: dict[str, tuple[str, tuple[str, ...], _RowFn]] = {
    "runs": (
        tables.RUN_EVENTS,
        (
            "ts",
            "event",
            "project",
            "name",
            "status",
            "exit_code",
            "reason",
            "config",
            "tags",
            "host",
            "pid",
            "world_size",
            "argv",
            "idx",
        ),
        _run_rows,
    ),
    "metrics": (tables.METRICS, ("name", "step", "ts", "value", "source", "idx", "sub"), _metric_rows),
    "resources": (
        tables.RESOURCES,
        ("ts", "device", "name", "value", "idx", "sub"),
        _resource_rows,
    ),
    "logs": (
        tables.LOGS,
        ("ts", "stream", "level", "logger", "line", "tags", "group", "orig_bytes", "idx", "rank", "node"),
        _log_rows,
    ),
    "alerts": (
        tables.ALERTS,
        ("key", "ts", "kind", "severity", "message", "node", "rank", "metric", "value", "idx"),
        _alert_rows,
    ),
    "evals": (tables.EVALS, ("ts", "name", "type", "data", "idx"), _eval_rows),
}

#: Rough bytes per row beyond its long text, for the flush-by-size threshold.
_ROW_OVERHEAD = 64
#: The long text column of a table, counted for the flush-by-size threshold.
_TEXT_COLUMN = {tables.LOGS: "line", tables.RUN_EVENTS: "config", tables.EVALS: "data"}


class ColumnBuffer:
    """Rows for every table, as columns (:class:`sinks.columns.Column`), until :meth:`to_arrow` and :meth:`clear`."""

    def __init__(self) -> None:
        self._columns: dict[str, dict[str, Column]] = {
            table: {f.name: Column(f.type, f.name in LOW_CARDINALITY.get(table, ())) for f in schema}
            for table, schema in SCHEMAS.items()
        }
        self._rows: dict[str, int] = dict.fromkeys(SCHEMAS, 0)
        self.nbytes = 0

    @property
    def rows(self) -> int:
        """Rows buffered over all tables."""
        return sum(self._rows.values())

    def rows_in(self, table: str) -> int:
        """Rows buffered for ``table``."""
        return self._rows[table]

    def tables(self) -> list[str]:
        """The tables that have rows, data tables first and ``dead_letters`` last."""
        return [t for t in SCHEMAS if self._rows[t]]

    def add_envelope(
        self,
        env: Envelope,
        *,
        topic: str = "",
        partition: int = -1,
        offset: int = -1,
        ts_ns: int | None = None,
    ) -> int:
        """Fan a clean envelope's records out to rows; return how many data rows were added.

        A record that does not fit becomes a ``dead_letters`` row (stamped
        ``ts_ns``, default the envelope's ingest time) naming ``topic``,
        ``partition`` and ``offset``; the envelope's other records are kept.
        """
        stamp = ts_ns if ts_ns is not None else (env.ingest_ns or env.sent_ns)
        if env.kind not in _KINDS:
            self.add_refusal(
                ts_ns=stamp,
                topic=topic,
                partition=partition,
                offset=offset,
                reason=f"unknown record kind {env.kind!r}",
                sample=env.kind,
                producer=env.producer,
                seq=env.seq,
                run=env.run,
            )
            return 0
        table, varying, row_fn = _KINDS[env.kind]
        try:
            rank = _int(env.rank, _I32, "envelope rank")
            seq = _int(env.seq, _U64, "envelope seq")
            ingest = _int((env.ingest_ns or env.sent_ns) // 1000, _TS_US, "ingest time")
        except RowError as exc:
            self.add_refusal(
                ts_ns=stamp,
                topic=topic,
                partition=partition,
                offset=offset,
                reason=f"envelope does not fit the tables: {exc}",
                sample=env.to_map(),
                producer=env.producer,
                seq=-1,
                run=env.run,
            )
            return 0
        fast = _FAST.get(env.kind)
        base = (rank, env.node)
        columns: Sequence[Piece] | None = fast(env.records, base) if fast is not None else None
        if columns is None:
            columns = self._slow_rows(env, table, row_fn, base, stamp, topic, partition, offset, seq)
        return self._add_columns(table, varying, columns, Framing(env.run, env.node, rank, env.producer, seq, ingest))

    def add_decoded(self, kind: str, framing: Framing, columns: Sequence[Piece]) -> int:
        """Add a clean envelope decoded by :mod:`sinks.fastdecode` (its values fit the columns); return its rows."""
        table, varying, _ = _KINDS[kind]
        return self._add_columns(table, varying, columns, framing)

    def _add_columns(self, table: str, varying: tuple[str, ...], columns: Sequence[Piece], framing: Framing) -> int:
        """Add one envelope's per-row ``columns`` and its envelope-wide values; return the rows added."""
        n = piece_len(columns[0]) if columns else 0
        if not n:
            return 0
        cols = self._columns[table]
        for name, piece in zip(varying, columns, strict=True):
            cols[name].add(piece)
        for name, value in (
            ("run_id", framing.run),
            ("node", framing.node),
            ("rank", framing.rank),
            ("producer", framing.producer),
            ("seq", framing.seq),
            ("ingest_ts", framing.ingest_us),
        ):
            if name in cols and name not in varying:
                cols[name].add(Run(value, n))
        self._rows[table] += n
        size = _ROW_OVERHEAD * n + len(framing.run) + len(framing.producer)
        text = _TEXT_COLUMN.get(table)
        if text is not None:
            size += text_bytes(columns[varying.index(text)])
        self.nbytes += size
        return n

    def _slow_rows(
        self,
        env: Envelope,
        table: str,
        row_fn: _RowFn,
        base: _Base,
        stamp: int,
        topic: str,
        partition: int,
        offset: int,
        seq: int,
    ) -> list[list[Any]]:
        """Columns of the records that fit, one record at a time; the others become dead letters."""
        good: list[tuple[Any, ...]] = []
        for position, record in enumerate(env.records):
            try:
                good.extend(row_fn(_rec(record), base))
            except (RowError, KeyError, TypeError) as exc:
                index = record.get("i", position) if isinstance(record, Mapping) else position
                self.add_refusal(
                    ts_ns=stamp,
                    topic=topic,
                    partition=partition,
                    offset=offset,
                    reason=f"clean {env.kind} record does not fit table {table}: {exc}",
                    sample=record,
                    producer=env.producer,
                    seq=seq,
                    index=index if isinstance(index, int) else position,
                    run=env.run,
                )
        return [list(column) for column in zip(*good, strict=True)]

    def add_dead_letter(self, doc: Mapping[str, Any]) -> None:
        """Add one dead letter read from ``dlq`` (see :func:`runstream.deadletter.parse`)."""

        def num(key: str, bounds: tuple[int, int], default: int) -> int:
            value = doc.get(key, default)
            ok = isinstance(value, int) and not isinstance(value, bool) and bounds[0] <= value <= bounds[1]
            return value if ok else default

        ts_us = num("ts_ns", _TS_NS, 0) // 1000
        self._add_dead_letter_row(
            (
                ts_us,
                str(doc.get("topic", ""))[:256],
                num("partition", _I32, -1),
                num("offset", _I64, -1),
                str(doc.get("reason", ""))[: deadletter.MAX_REASON_CHARS],
                deadletter.sample_of(doc.get("sample", "")),
                str(doc.get("producer", ""))[:256],
                num("seq", _I64, -1),
                num("index", _I32, -1),
                str(doc.get("run", ""))[:256],
            )
        )

    def add_refusal(
        self,
        *,
        ts_ns: int,
        topic: str,
        partition: int,
        offset: int,
        reason: str,
        sample: Any,
        producer: str = "",
        seq: int = -1,
        index: int = -1,
        run: str = "",
    ) -> None:
        """Add a ``dead_letters`` row for something the sink itself could not store."""
        self.add_dead_letter(
            {
                "ts_ns": ts_ns,
                "topic": topic,
                "partition": partition,
                "offset": offset,
                "reason": reason,
                "sample": sample,
                "producer": producer,
                "seq": seq,
                "index": index,
                "run": run,
            }
        )

    def _add_dead_letter_row(self, row: tuple[Any, ...]) -> None:
        cols = self._columns[tables.DEAD_LETTERS]
        for name, value in zip(SCHEMAS[tables.DEAD_LETTERS].names, row, strict=True):
            cols[name].append(value)
        self._rows[tables.DEAD_LETTERS] += 1
        self.nbytes += _ROW_OVERHEAD + len(row[4]) + len(row[5])

    def to_arrow(self, table: str) -> pa.Table:
        """The rows buffered for ``table`` as an Arrow table with the table's column types.

        A ``LowCardinality`` text column (:data:`sinks.schemas.LOW_CARDINALITY`)
        may come as ``dictionary<int32, string>`` instead of ``string``: the same values.
        """
        schema = SCHEMAS[table]
        cols = self._columns[table]
        arrays = [cols[f.name].to_arrow() for f in schema]
        if any(isinstance(a, pa.DictionaryArray) for a in arrays):
            schema = pa.schema([f.with_type(a.type) for f, a in zip(schema, arrays, strict=True)])
        return pa.Table.from_arrays(arrays, schema=schema)

    def clear(self) -> None:
        """Forget every buffered row."""
        for cols in self._columns.values():
            for column in cols.values():
                column.clear()
        self._rows = dict.fromkeys(SCHEMAS, 0)
        self.nbytes = 0
