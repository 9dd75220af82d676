"""Cutting each partition's messages into insert segments: pure, no I/O.

A *segment* is a run of consecutive offsets of one topic partition that goes
into ClickHouse as one insert per table, with a deduplication token made of
its topic, partition, first and last offsets and digests of its first and
last messages.  Before inserting, the writer records the segment's span
(``sink_spans``); after a crash between insert and commit the same messages
are read again, and :class:`PartitionLog` cuts them at the recorded offsets,
so the replayed inserts carry the same tokens and ClickHouse stores them
once.  A recorded span whose first message has another digest belongs to an
older incarnation of the topic (an in-memory broker starts again at offset
0) and is ignored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from runstream import deadletter, wire
from runstream.errors import DecodeError
from sinks.columns import Piece
from sinks.fastdecode import Framing, decode_logs, decode_metrics
from sinks.rows import ColumnBuffer

#: Kinds with a typed decoder: the usual message goes straight to columns, anything else the general way.
_TYPED: dict[str, Callable[[bytes], tuple[Framing, list[Piece]] | None]] = {
    "logs": decode_logs,
    "metrics": decode_metrics,
}


def digest(value: bytes | None) -> str:
    """A short, stable digest of one message value."""
    return hashlib.blake2b(value or b"", digest_size=8).hexdigest()


@dataclass(frozen=True)
class Span:
    """A recorded segment: offsets ``first..last`` (inclusive) of one partition."""

    first: int
    last: int
    first_digest: str


def add_message(
    buffer: ColumnBuffer,
    *,
    kind: str | None,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
    value: bytes | None,
    typed: bool = True,
) -> int:
    """Decode one message into ``buffer``; return the data rows added.

    ``kind`` is the record kind of a clean topic, or ``None`` for the dead
    letter topic.  Whatever cannot be decoded becomes a ``dead_letters`` row
    stamped with the message's own timestamp (so a replay adds the same row).
    A usual ``logs`` or ``metrics`` message goes through the kind's typed
    decoder (:mod:`sinks.fastdecode`), anything else (and everything when
    ``typed`` is false) through :func:`runstream.wire.decode` and
    ``ColumnBuffer.add_envelope``: the same rows either way.
    """
    ts_ns = max(0, timestamp_ms) * 1_000_000
    if kind is None:
        try:
            buffer.add_dead_letter(deadletter.parse(value or b""))
        except DecodeError as exc:
            buffer.add_refusal(
                ts_ns=ts_ns,
                topic=topic,
                partition=partition,
                offset=offset,
                reason=f"unreadable dead letter: {exc}",
                sample=(value or b"")[:256],
            )
        return 0
    decoder = _TYPED.get(kind) if typed and value else None
    decoded = decoder(value) if decoder is not None and value else None
    if decoded is not None:
        return buffer.add_decoded(kind, *decoded)
    try:
        env = wire.decode(value)
    except DecodeError as exc:
        buffer.add_refusal(
            ts_ns=ts_ns,
            topic=topic,
            partition=partition,
            offset=offset,
            reason=f"sink could not decode a clean message: {exc}",
            sample=(value or b"")[:256],
        )
        return 0
    if env.kind != kind:
        buffer.add_refusal(
            ts_ns=ts_ns,
            topic=topic,
            partition=partition,
            offset=offset,
            reason=f"envelope of kind {env.kind!r} on the topic for {kind!r}",
            sample=env.kind,
            producer=env.producer,
            seq=env.seq,
            run=env.run,
        )
        return 0
    return buffer.add_envelope(env, topic=topic, partition=partition, offset=offset, ts_ns=ts_ns)


@dataclass
class Segment:
    """Consecutive messages of one partition, decoded into their own buffer."""

    topic: str
    partition: int
    first: int
    first_digest: str
    opened_s: float
    #: Offset this segment must end at (a recorded span) or before (the next recorded span).
    end_at: int | None = None
    #: True when the span is recorded already and must be reproduced exactly.
    recorded: bool = False
    last: int = -1
    #: The last message's value; its digest is taken when the token is (not for every message).
    last_value: bytes | None = None
    messages: int = 0
    closed: bool = False
    buffer: ColumnBuffer = field(default_factory=ColumnBuffer)

    def token(self, table: str) -> str:
        """The deduplication token of this segment's insert into ``table``."""
        return f"{table}:{self.topic}:{self.partition}:{self.first}-{self.last}:{self.first_digest}{self.last_digest}"

    @property
    def last_digest(self) -> str:
        return digest(self.last_value) if self.last >= 0 else ""

    @property
    def span(self) -> Span:
        return Span(self.first, self.last, self.first_digest)


class PartitionLog:
    """The open and closed segments of one partition, and the recorded spans to reproduce."""

    def __init__(self, topic: str, partition: int, kind: str | None) -> None:
        self.topic = topic
        self.partition = partition
        self.kind = kind
        self.segments: list[Segment] = []
        self._plan: dict[int, list[Span]] | None = None
        self._firsts: list[int] = []
        self._horizon: int | None = None
        self.last_offset = -1

    # -- recorded spans ---------------------------------------------------

    def needs_plan(self, offset: int) -> bool:
        """Whether recorded spans from ``offset`` on must be loaded before adding it."""
        if self._plan is None:
            return True
        return self._horizon is not None and offset > self._horizon and not self._open()

    def set_plan(self, spans: Iterable[Span], truncated: bool) -> None:
        """Recorded spans that end at or after the next offset; ``truncated`` if more exist."""
        plan: dict[int, list[Span]] = {}
        for span in spans:
            plan.setdefault(span.first, []).append(span)
        self._plan = plan
        self._firsts = sorted(plan)
        self._horizon = max((s.last for group in plan.values() for s in group), default=None) if truncated else None

    def _drop_plan(self) -> None:
        self._plan, self._firsts, self._horizon = {}, [], None

    # -- messages ---------------------------------------------------------

    def _open(self) -> Segment | None:
        if self.segments and not self.segments[-1].closed:
            return self.segments[-1]
        return None

    def forget_from(self, offset: int) -> int:
        """Drop unflushed segments reaching ``offset`` (the consumer went back); return how many."""
        keep = [s for s in self.segments if s.last < offset]
        dropped = len(self.segments) - len(keep)
        self.segments = keep
        if keep and not keep[-1].closed:
            keep[-1].closed = True
        self.last_offset = keep[-1].last if keep else offset - 1
        self._plan = None  # spans recorded since the plan was loaded may be read again
        return dropped

    def add(self, offset: int, timestamp_ms: int, value: bytes | None, now_s: float) -> int:
        """Add one message (offsets must increase); return the data rows it added."""
        seg = self._open()
        if seg is not None and seg.end_at is not None and offset > seg.end_at:
            seg.closed = True
            seg = None
        if seg is None:
            seg = self._start(offset, value, now_s)
        rows = add_message(
            seg.buffer,
            kind=self.kind,
            topic=self.topic,
            partition=self.partition,
            offset=offset,
            timestamp_ms=timestamp_ms,
            value=value,
        )
        seg.last = offset
        seg.last_value = value
        seg.messages += 1
        self.last_offset = offset
        if seg.end_at is not None and offset >= seg.end_at:
            seg.closed = True
        return rows

    def _start(self, offset: int, value: bytes | None, now_s: float) -> Segment:
        seg = Segment(self.topic, self.partition, offset, digest(value), now_s)
        plan = self._plan or {}
        candidates = plan.get(offset)
        if candidates:
            same = [s for s in candidates if s.first_digest == seg.first_digest]
            if same:
                seg.end_at = min(s.last for s in same)
                seg.recorded = True
            else:
                self._drop_plan()  # spans of an older incarnation of this topic
        if not seg.recorded:
            later = [f for f in self._firsts if f > offset]
            if later:
                seg.end_at = later[0] - 1
        self.segments.append(seg)
        return seg

    # -- flushing ---------------------------------------------------------

    def flushable(self, now_s: float, wait_s: float, give_up: bool = False) -> list[Segment]:
        """Segments ready to insert, closed by this call.

        An open segment that must reproduce a recorded span waits for its
        last message, at most ``wait_s`` (or not at all with ``give_up``); then
        it is cut where it is and stored under a new token.
        """
        ready: list[Segment] = []
        for seg in self.segments:
            if not seg.closed:
                if seg.recorded and not give_up and now_s - seg.opened_s < wait_s:
                    break
                seg.closed = True
                if seg.recorded and seg.last != seg.end_at:
                    seg.recorded = False
            ready.append(seg)
        return ready

    def pending_rows(self) -> int:
        return sum(s.buffer.rows for s in self.segments)

    def pending_bytes(self) -> int:
        return sum(s.buffer.nbytes for s in self.segments)

    def oldest_s(self) -> float | None:
        return self.segments[0].opened_s if self.segments else None

    def remove(self, flushed: list[Segment]) -> None:
        """Forget segments that were stored."""
        ids = {id(s) for s in flushed}
        self.segments = [s for s in self.segments if id(s) not in ids]
