"""A typed decoder for the usual raw ``logs`` message: framing and every record checked while decoding.

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
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from itertools import count, repeat
from operator import itemgetter, setitem
from typing import Annotated, Any, Literal

import msgspec

from runstream import wire
from runstream.events.limits import MIN_TS_NS, Limits
from runstream.events.logs import STREAMS

LogDecoder = Callable[[bytes], "wire.Envelope | None"]

#: The levels the general path keeps unchanged (it maps ``None`` and aliases such as ``warn``).
_LEVELS = ("", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_get_line = itemgetter("line")


def log_decoder(limits: Limits) -> LogDecoder:
    """A decoder of raw ``logs`` messages under ``limits``: the envelope (records normalised, each with ``"i"``)
    when the message and all its records are plainly well-formed, else ``None``; never raises."""
    ident: Any = Annotated[str, msgspec.Meta(min_length=1, max_length=wire.MAX_ID_CHARS)]
    stream: Any = Literal.__getitem__(tuple(sorted(STREAMS)))  # type: ignore[attr-defined]
    level: Any = Literal.__getitem__(_LEVELS)  # type: ignore[attr-defined]
    record: Any = msgspec.defstruct("LogRecord", [
        ("ts_ns", Annotated[int, msgspec.Meta(ge=MIN_TS_NS)]),
        # At most max_line_bytes // 4 characters: at most max_line_bytes UTF-8 bytes (see fastpath).
        ("line", Annotated[str, msgspec.Meta(max_length=limits.max_line_bytes // 4)]),
        ("stream", stream, "stdout"),
        ("level", level, ""),
        ("logger", Annotated[str, msgspec.Meta(max_length=limits.max_text_field_chars)], ""),
    ], forbid_unknown_fields=True)
    envelope: Any = msgspec.defstruct("LogEnvelope", [
        ("v", Literal[wire.SCHEMA_MAJOR]),
        ("kind", Literal["logs"]),
        ("producer", ident),
        ("seq", Annotated[int, msgspec.Meta(ge=0)]),
        ("run", ident),
        ("node", ident),
        ("rank", int),
        ("sent_ns", int),
        ("records", Annotated[list[record], msgspec.Meta(min_length=1, max_length=limits.max_records_per_batch)]),
        ("v_minor", int, wire.SCHEMA_MINOR),
    ])  # other envelope fields (``ingest_ns``, later additions) are skipped: a clean envelope does not carry them
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
        return wire.Envelope(kind="logs", producer=doc.producer, seq=doc.seq, run=doc.run, node=doc.node,
                             rank=doc.rank, sent_ns=doc.sent_ns, records=records, v_minor=doc.v_minor)

    return decode
