"""Typed decoders for the usual raw ``logs`` and ``metrics`` messages: framing and every record checked while decoding.

:func:`runstream.wire.decode` builds a dict per record, and the batch
checker (:mod:`streams.fastpath`) then walks those dicts again with C-level
``map``/``set`` passes.  Here msgspec decodes the message straight into
typed structs whose constraints are exactly what both of them accept (the
envelope's framing rules; a record with only the known fields, an integer
``ts_ns`` from 2000 on, a ``line`` short enough never to need truncating, a
known stream, a canonical level, a short ``logger``), and turns the records
back into dicts in one C call.  Anything else — a ``None`` or alias level, a
NUL in a line, an unknown field, another kind, an oversized batch, a byte
that is not MessagePack — answers ``None``, and the caller takes the general
path, which owns every dead-letter reason.  ``tests/streams/test_fastdecode.py``
holds the two paths equal on arbitrary envelopes.

The records come out with their fields in one order (``ts_ns``, ``line``,
``stream``, ``level``, ``logger``, then ``i``): the order the SDK sends them
in, so its batches give the same bytes as the general path; a producer
sending the fields in another order gets the same map in this order.

:func:`metric_decoder` does the same for ``metrics``: ``ts_ns`` from 2000 on,
an integer ``step`` >= -1 (absent: -1; a ``None`` step takes the general
path), and ``values`` a non-empty map of at most ``max_metric_keys_per_record``
names to numbers (an integer becomes a float, as the validator makes it;
NaN and ±Inf are kept exactly; a bool is refused).  The names (1 to
``max_metric_name_chars`` printable characters) are checked on the batch's
distinct names after decoding, remembering the names already seen (bounded),
as :mod:`streams.fastpath` does.  Records keep the producer's field order, a
missing ``step`` added before ``i``: what the general path gives the SDK's
batches, byte for byte.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from itertools import count, repeat
from operator import itemgetter, setitem
from typing import Annotated, Any, Literal, TypedDict

import msgspec

from runstream import wire
from runstream.events.limits import MIN_TS_NS, Limits
from runstream.events.logs import STREAMS

LogDecoder = Callable[[bytes], "wire.Envelope | None"]
#: Either typed decoder: raw message bytes -> the envelope, or ``None`` for the general path.
TypedDecoder = LogDecoder

#: The levels the general path keeps unchanged (it maps ``None`` and aliases such as ``warn``).
_LEVELS = ("", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_get_line = itemgetter("line")


def log_decoder(limits: Limits) -> LogDecoder:
    """A decoder of raw ``logs`` messages under ``limits``: the envelope (records normalised, each with ``"i"``)
    when the message and all its records are plainly well-formed, else ``None``; never raises."""
    stream: Any = Literal.__getitem__(tuple(sorted(STREAMS)))  # type: ignore[attr-defined]
    level: Any = Literal.__getitem__(_LEVELS)  # type: ignore[attr-defined]
    record: Any = msgspec.defstruct(
        "LogRecord",
        [
            ("ts_ns", Annotated[int, msgspec.Meta(ge=MIN_TS_NS)]),
            # At most max_line_bytes // 4 characters: at most max_line_bytes UTF-8 bytes (see fastpath).
            ("line", Annotated[str, msgspec.Meta(max_length=limits.max_line_bytes // 4)]),
            ("stream", stream, "stdout"),
            ("level", level, ""),
            ("logger", Annotated[str, msgspec.Meta(max_length=limits.max_text_field_chars)], ""),
        ],
        forbid_unknown_fields=True,
        gc=False,
    )  # see _envelope
    envelope = _envelope("LogEnvelope", "logs", record, limits)
    decoder = msgspec.msgpack.Decoder(envelope)
    to_builtins = msgspec.to_builtins

    def decode(data: bytes) -> wire.Envelope | None:
        try:
            doc = decoder.decode(data)
        except Exception:  # noqa: BLE001 - not plainly well-formed (msgspec's errors, invalid UTF-8): the general
            return None  # path decides, and owns the dead-letter reasons
        records: list[dict[str, Any]] = to_builtins(doc.records)
        if "\x00" in "".join(map(_get_line, records)):  # a NUL is replaced by the validator
            return None
        deque(map(setitem, records, repeat("i"), count()), maxlen=0)  # each record's index, in a C loop
        return wire.Envelope(
            kind="logs",
            producer=doc.producer,
            seq=doc.seq,
            run=doc.run,
            node=doc.node,
            rank=doc.rank,
            sent_ns=doc.sent_ns,
            records=records,
            v_minor=doc.v_minor,
        )

    return decode


def _envelope(name: str, kind: str, record: Any, limits: Limits) -> Any:
    """The struct type of a ``kind`` envelope whose records decode as ``record``, framed as :func:`wire.decode`
    requires (at least one record, at most ``max_records_per_batch``)."""
    ident: Any = Annotated[str, msgspec.Meta(min_length=1, max_length=wire.MAX_ID_CHARS)]
    return msgspec.defstruct(
        name,
        [
            ("v", Literal[wire.SCHEMA_MAJOR]),
            ("kind", Literal.__getitem__(kind)),  # type: ignore[attr-defined]
            ("producer", ident),
            ("seq", Annotated[int, msgspec.Meta(ge=0)]),
            ("run", ident),
            ("node", ident),
            ("rank", int),
            ("sent_ns", int),
            ("records", Annotated[list[record], msgspec.Meta(min_length=1, max_length=limits.max_records_per_batch)]),
            ("v_minor", int, wire.SCHEMA_MINOR),
            # Other envelope fields (``ingest_ns``, later additions) are skipped: a clean envelope does not carry them.
            # Untracked by the cycle collector (gc=False, as the log records): a decoded message holds scalars and
            # lists of them, never a cycle, and tracking a batch's thousand structs cost 4 % of the log decode.
        ],
        gc=False,
    )


#: A record's optional ``step`` (module level: the TypedDict below names it in a string annotation).
_Step = Annotated[int, msgspec.Meta(ge=-1)] | None
_get_step = itemgetter("step")
_get_values = itemgetter("values")
#: The most metric names a decoder remembers as checked (a producer inventing names cannot grow it without limit).
MAX_REMEMBERED_NAMES = 4096


def metric_decoder(limits: Limits) -> TypedDecoder:
    """A decoder of raw ``metrics`` messages under ``limits``: the envelope (records normalised, each with ``"i"``)
    when the message and all its records are plainly well-formed, else ``None``; never raises."""
    max_name = limits.max_metric_name_chars
    # A TypedDict decodes straight to dicts (no struct -> dict copy of every ``values`` map), the producer's
    # field order kept, as the general path keeps it; an unknown field is skipped, as the validator drops it.
    MetricRecordRequired: Any = TypedDict(  # type: ignore[misc]  # a type, built from the limits at run time
        "MetricRecordRequired",
        {
            "ts_ns": Annotated[int, msgspec.Meta(ge=MIN_TS_NS)],
            # Names as plain ``str``: a constraint on a map's keys costs msgspec twice the whole decode (its key
            # cache is skipped); the batch's distinct names are checked below instead.
            "values": Annotated[
                dict[str, float], msgspec.Meta(min_length=1, max_length=limits.max_metric_keys_per_record)
            ],
        },
    )

    class MetricRecord(MetricRecordRequired, total=False):  # type: ignore[misc]  # (``typing.NotRequired`` needs Python 3.11)
        step: _Step

    decoder = msgspec.msgpack.Decoder(_envelope("MetricEnvelope", "metrics", MetricRecord, limits))
    good_names: set[str] = set()

    def decode(data: bytes) -> wire.Envelope | None:
        try:
            doc = decoder.decode(data)
        except Exception:  # noqa: BLE001 - not plainly well-formed: the general path decides (see log_decoder)
            return None
        records: list[dict[str, Any]] = doc.records
        new = set().union(*map(_get_values, records)) - good_names  # one C call (a chain of keys: +40 %)
        if new:
            if "" in new or max(map(len, new)) > max_name or not all(map(str.isprintable, new)):
                return None  # the validator refuses an empty, long or unprintable name
            if len(good_names) + len(new) <= MAX_REMEMBERED_NAMES:
                good_names.update(new)
        sizes = set(map(len, records))
        if sizes == {3}:  # every record has a step
            if None in map(_get_step, records):
                return None  # the general path makes it -1 (rare: the SDK leaves a missing step out)
        elif sizes == {2}:  # none has: -1, added last, as the general path adds it
            deque(map(setitem, records, repeat("step"), repeat(-1)), maxlen=0)
        else:
            return None
        deque(map(setitem, records, repeat("i"), count()), maxlen=0)
        return wire.Envelope(
            kind="metrics",
            producer=doc.producer,
            seq=doc.seq,
            run=doc.run,
            node=doc.node,
            rank=doc.rank,
            sent_ns=doc.sent_ns,
            records=records,
            v_minor=doc.v_minor,
        )

    return decode
