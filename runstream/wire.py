"""The versioned wire format: one Kafka message carries one batch envelope.

An envelope is a MessagePack map (language-neutral; NaN and ±Inf survive
exactly, which JSON cannot do; chosen by ``bench/codec.py``, which also chose
msgspec's C codec over msgpack-python's: the same bytes, 1.5-3x faster to
decode a batch of log records)::

    {"v": 1, "v_minor": 0, "kind": "logs", "producer": "a1b2...", "seq": 17,
     "run": "3f9c...", "node": "gpu-node-1", "rank": 0, "sent_ns": 1732...,
     "records": [{...}, {...}]}

``producer`` is unique per producing process, ``seq`` counts that producer's
envelopes from 0, and a record's index in ``records`` completes its identity
``(producer, seq, index)``: a batch delivered twice is recognisable.  Fields
are only ever added: a reader ignores fields it does not know and keeps
reading an unknown *minor* version; an unknown *major* version is refused
with :class:`~runstream.errors.UnsupportedVersion`.

Validated envelopes on the ``clean.*`` topics keep the same shape; each
record there carries ``"i"``, its index in the producer's original batch,
and the envelope carries ``"ingest_ns"``, when the stream processor read it.
A clean record stamped more than ``Limits.max_future_skew_s`` after
``ingest_ns`` also carries ``"future_ns"``, how far ahead it was (kept, flagged).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from runstream.errors import DecodeError, UnsupportedVersion

SCHEMA_MAJOR = 1
SCHEMA_MINOR = 0

KINDS = ("runs", "metrics", "logs", "resources", "evals", "alerts")

_ENVELOPE_STR_FIELDS = ("kind", "producer", "run", "node")
_ENVELOPE_INT_FIELDS = ("seq", "rank", "sent_ns")

#: Longest producer id, run id and node name accepted in an envelope.
MAX_ID_CHARS = 128


@dataclass
class Envelope:
    """One decoded batch: where it came from and its records (still unvalidated)."""

    kind: str
    producer: str
    seq: int
    run: str
    node: str
    rank: int
    sent_ns: int
    records: list[Any]
    v_minor: int = SCHEMA_MINOR
    ingest_ns: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_map(self) -> dict[str, Any]:
        """The envelope as the map that goes on the wire."""
        out: dict[str, Any] = {
            "v": SCHEMA_MAJOR,
            "v_minor": self.v_minor,
            "kind": self.kind,
            "producer": self.producer,
            "seq": self.seq,
            "run": self.run,
            "node": self.node,
            "rank": self.rank,
            "sent_ns": self.sent_ns,
            "records": self.records,
        }
        if self.ingest_ns is not None:
            out["ingest_ns"] = self.ingest_ns
        return out


def _enc_hook(obj: Any) -> Any:
    # A float or int subclass (numpy.float64 is one) goes out as the plain number it is.
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, int):
        return int(obj)
    raise TypeError(f"cannot encode a {type(obj).__name__} object")


# Both are stateless between calls (safe to share across threads) and cheaper reused than built per call.
_ENCODER = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
_DECODER = msgspec.msgpack.Decoder()


def pack(obj: Any) -> bytes:
    """Encode any map/list/scalar tree as MessagePack (strings as str, bytes as bin).

    Raises ``TypeError`` for a value MessagePack has no form for (and
    ``OverflowError`` for an integer beyond 64 bits).
    """
    return _ENCODER.encode(obj)


def unpack(data: bytes) -> Any:
    """Decode MessagePack bytes; raise :class:`DecodeError` on anything malformed."""
    try:
        return _DECODER.decode(data)
    except Exception as exc:  # invalid UTF-8 raises UnicodeDecodeError, the rest msgspec.DecodeError
        raise DecodeError(f"not a MessagePack document: {type(exc).__name__}: {exc}") from None


def encode(envelope: Envelope) -> bytes:
    """Encode one envelope for a Kafka message value."""
    return pack(envelope.to_map())


def decode(data: bytes | None) -> Envelope:
    """Decode and check one envelope's framing (not its records).

    Raises :class:`UnsupportedVersion` for an unknown major version and
    :class:`DecodeError` for anything else that is not a well-formed envelope.
    """
    if not data:
        raise DecodeError("empty message")
    doc = unpack(data)
    if not isinstance(doc, dict):
        raise DecodeError(f"envelope is a {type(doc).__name__}, not a map")
    major = doc.get("v")
    if not isinstance(major, int) or isinstance(major, bool):
        raise DecodeError("envelope has no integer schema version 'v'")
    if major != SCHEMA_MAJOR:
        raise UnsupportedVersion(f"schema major version {major} is not supported (reads {SCHEMA_MAJOR})")
    for name in _ENVELOPE_STR_FIELDS:
        value = doc.get(name)
        if not isinstance(value, str) or not value:
            raise DecodeError(f"envelope field {name!r} must be a non-empty string")
        if len(value) > MAX_ID_CHARS:
            raise DecodeError(f"envelope field {name!r} is longer than {MAX_ID_CHARS} characters")
    for name in _ENVELOPE_INT_FIELDS:
        value = doc.get(name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise DecodeError(f"envelope field {name!r} must be an integer")
    if doc["kind"] not in KINDS:
        raise DecodeError(f"envelope kind {doc['kind']!r} is not one of {', '.join(KINDS)}")
    if doc["seq"] < 0:
        raise DecodeError("envelope field 'seq' must be >= 0")
    records = doc.get("records")
    if not isinstance(records, list):
        raise DecodeError("envelope field 'records' must be a list")
    v_minor = doc.get("v_minor", 0)
    ingest_ns = doc.get("ingest_ns")
    known = {"v", "v_minor", "records", "ingest_ns", *_ENVELOPE_STR_FIELDS, *_ENVELOPE_INT_FIELDS}
    return Envelope(
        kind=doc["kind"],
        producer=doc["producer"],
        seq=doc["seq"],
        run=doc["run"],
        node=doc["node"],
        rank=doc["rank"],
        sent_ns=doc["sent_ns"],
        records=records,
        v_minor=v_minor if isinstance(v_minor, int) else 0,
        ingest_ns=ingest_ns if isinstance(ingest_ns, int) else None,
        extra={k: v for k, v in doc.items() if k not in known},
    )
