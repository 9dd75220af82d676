"""Dead letters: what could not be processed, with the reason, on the ``dlq`` topic.

A dead letter is a MessagePack map (see :func:`make`).  ``index`` is the
record's position in its batch, or -1 when the whole message was refused
(garbage bytes, unsupported version).  ``sample`` is a bounded, printable
excerpt of what was refused, never the whole payload.
"""

from __future__ import annotations

import time
from typing import Any

from runstream.wire import SCHEMA_MAJOR, pack, unpack

MAX_SAMPLE_CHARS = 1024
MAX_REASON_CHARS = 1024


def sample_of(value: Any) -> str:
    """A printable excerpt of at most :data:`MAX_SAMPLE_CHARS` characters."""
    text = repr(value) if not isinstance(value, str) else value
    if len(text) > MAX_SAMPLE_CHARS:
        text = text[: MAX_SAMPLE_CHARS - 1] + "…"
    return text


def make(
    *,
    topic: str,
    partition: int,
    offset: int,
    reason: str,
    sample: Any,
    producer: str = "",
    seq: int = -1,
    index: int = -1,
    run: str = "",
    ts_ns: int | None = None,
) -> bytes:
    """Encode one dead letter for the ``dlq`` topic."""
    return pack(
        {
            "v": SCHEMA_MAJOR,
            "kind": "dead_letter",
            "ts_ns": time.time_ns() if ts_ns is None else ts_ns,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "reason": reason[:MAX_REASON_CHARS],
            "sample": sample_of(sample),
            "producer": producer,
            "seq": seq,
            "index": index,
            "run": run,
        }
    )


def parse(data: bytes) -> dict[str, Any]:
    """Decode a dead letter written by :func:`make` (raises ``DecodeError``)."""
    doc = unpack(data)
    if not isinstance(doc, dict) or doc.get("kind") != "dead_letter":
        from runstream.errors import DecodeError

        raise DecodeError("not a dead letter")
    return doc
