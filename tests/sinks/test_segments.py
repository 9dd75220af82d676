"""Cutting a partition into insert segments, and reproducing recorded cuts on replay (pure)."""

from __future__ import annotations

from runstream import tables, wire
from sinks.segments import PartitionLog, Span, digest
from tests.sinks.conftest import BASE_NS, envelope, log_records

TOPIC = "t.clean.logs"


def _value(n: int) -> bytes:
    return wire.encode(envelope("logs", log_records([f"line {n}"]), seq=n, producer="p"))


def _feed(part: PartitionLog, offsets: range, now_s: float = 0.0) -> None:
    for o in offsets:
        part.add(o, BASE_NS // 1_000_000, _value(o), now_s)


def _cuts(part: PartitionLog) -> list[tuple[int, int]]:
    return [(s.first, s.last) for s in part.flushable(now_s=100.0, wait_s=5.0)]


def test_without_recorded_spans_everything_buffered_is_one_segment() -> None:
    """With nothing recorded, a flush takes all buffered messages as one segment."""
    part = PartitionLog(TOPIC, 0, "logs")
    part.set_plan([], truncated=False)
    _feed(part, range(0, 10))
    assert _cuts(part) == [(0, 9)]


def test_recorded_spans_are_reproduced_exactly() -> None:
    """Messages read again are cut at the recorded offsets, whatever arrives in one fetch."""
    part = PartitionLog(TOPIC, 0, "logs")
    part.set_plan([Span(0, 3, digest(_value(0))), Span(4, 6, digest(_value(4)))], truncated=False)
    _feed(part, range(0, 10))
    assert _cuts(part) == [(0, 3), (4, 6), (7, 9)]
    assert [s.recorded for s in part.segments] == [True, True, False]


def test_tokens_repeat_for_the_same_messages() -> None:
    """The same span of the same messages gives the same token; other content another token."""
    a, b = PartitionLog(TOPIC, 0, "logs"), PartitionLog(TOPIC, 0, "logs")
    for part in (a, b):
        part.set_plan([], truncated=False)
        _feed(part, range(0, 5))
    assert a.segments[0].token(tables.LOGS) == b.segments[0].token(tables.LOGS)
    c = PartitionLog(TOPIC, 0, "logs")
    c.set_plan([], truncated=False)
    for o in range(0, 5):
        c.add(o, 0, _value(o + 100), 0.0)
    assert c.segments[0].token(tables.LOGS) != a.segments[0].token(tables.LOGS)


def test_spans_of_another_topic_incarnation_are_ignored() -> None:
    """A recorded span whose first message differs (a recreated topic) imposes no cuts."""
    part = PartitionLog(TOPIC, 0, "logs")
    part.set_plan([Span(0, 2, "0000000000000000"), Span(3, 5, "1111111111111111")], truncated=False)
    _feed(part, range(0, 8))
    assert _cuts(part) == [(0, 7)]


def test_a_new_segment_stops_before_the_next_recorded_span() -> None:
    """Unrecorded messages before a recorded span are cut just before it."""
    part = PartitionLog(TOPIC, 0, "logs")
    part.set_plan([Span(5, 7, digest(_value(5)))], truncated=False)
    _feed(part, range(2, 9))
    assert _cuts(part) == [(2, 4), (5, 7), (8, 8)]


def test_incomplete_recorded_span_waits_then_gives_up() -> None:
    """A replayed segment waits for its last message, then is cut where it is, unrecorded."""
    part = PartitionLog(TOPIC, 0, "logs")
    part.set_plan([Span(0, 9, digest(_value(0)))], truncated=False)
    _feed(part, range(0, 5), now_s=0.0)
    assert part.flushable(now_s=1.0, wait_s=5.0) == []
    (seg,) = part.flushable(now_s=6.0, wait_s=5.0)
    assert (seg.first, seg.last, seg.recorded) == (0, 4, False)


def test_going_back_forgets_what_arrives_again() -> None:
    """When offsets go back (the consumer was reset), buffered segments from there are dropped."""
    part = PartitionLog(TOPIC, 0, "logs")
    part.set_plan([], truncated=False)
    _feed(part, range(0, 6))
    assert part.forget_from(0) == 1 and part.segments == []
    assert part.needs_plan(0)


def test_undecodable_message_becomes_a_dead_letter_row() -> None:
    """Garbage on a clean topic is a dead_letters row naming topic, partition and offset."""
    part = PartitionLog(TOPIC, 3, "logs")
    part.set_plan([], truncated=False)
    part.add(17, 1_700_000_000_000, b"\xc1garbage", 0.0)
    (row,) = part.segments[0].buffer.to_arrow(tables.DEAD_LETTERS).to_pylist()
    assert (row["topic"], row["partition"], row["offset"]) == (TOPIC, 3, 17)
    assert "could not decode" in row["reason"]


def test_wrong_kind_on_a_clean_topic_is_a_dead_letter() -> None:
    """An envelope of another kind on a clean topic is refused with the reason."""
    part = PartitionLog(TOPIC, 0, "logs")
    part.set_plan([], truncated=False)
    part.add(0, 0, wire.encode(envelope("metrics", [{"ts_ns": BASE_NS, "values": {"a": 1}}])), 0.0)
    buf = part.segments[0].buffer
    assert buf.rows_in(tables.METRICS) == 0 and buf.rows_in(tables.DEAD_LETTERS) == 1
