"""The in-process hand-off of what the validators know of clean messages: exact bytes only, bounded."""

from __future__ import annotations

import tracemalloc

from runstream import wire
from streams.detect import LogDigest
from streams.handoff import DIGEST_WEIGHT, Handoff, weight_of

TS = 1_795_428_000 * 1_000_000_000


def _env(seq: int) -> tuple[bytes, wire.Envelope]:
    env = wire.Envelope(kind="logs", producer="p", seq=seq, run="r", node="n", rank=0, sent_ns=TS,
                        records=[{"ts_ns": TS, "line": f"line {seq}", "i": 0}], ingest_ns=TS)
    return wire.encode(env), env


def test_take_gives_the_envelope_of_identical_bytes_once() -> None:
    """An envelope put under its bytes is taken back by an equal bytes object, once; other bytes get nothing."""
    handoff = Handoff()
    data, env = _env(0)
    handoff.put(data, env)
    assert handoff.take(_env(1)[0]) is None
    assert handoff.take(bytes(bytearray(data))) is env
    assert handoff.take(data) is None and len(handoff) == 0


def test_handoff_is_bounded_by_count_and_bytes() -> None:
    """Beyond max_items or max_bytes (of weight) the oldest envelopes are dropped (those messages are then
    decoded)."""
    handoff = Handoff(max_items=2)
    items = [_env(seq) for seq in range(3)]
    for data, env in items:
        handoff.put(data, env)
    assert len(handoff) == 2 and handoff.take(items[0][0]) is None and handoff.evicted == 1
    small = Handoff(max_bytes=weight_of(*items[0]) + 1)
    small.put(*items[0])
    small.put(*items[1])
    assert len(small) == 1 and small.take(items[1][0]) is items[1][1]


def _digest(seq: int, alerts: int = 0) -> LogDigest:
    return LogDigest(run="r", producer="p", seq=seq, node="n", rank=0, lines=1000, warnings=0, errors=0,
                     newest_ns=TS, alerts=[{"key": f"oom/{seq}/{k}"} for k in range(alerts)])


def test_digests_weigh_little_against_the_byte_bound() -> None:
    """A log digest counts DIGEST_WEIGHT (per alert too), not its message's length, against max_bytes."""
    big = [bytes([seq]) * 100_000 for seq in range(50)]
    assert weight_of(big[0], _env(0)[1]) > 100_000
    handoff = Handoff(max_bytes=100_000)
    for seq, data in enumerate(big):
        handoff.put(data, _digest(seq))
    assert len(handoff) == 50 and handoff.evicted == 0
    assert [handoff.take(data).seq for data in big] == list(range(50))  # type: ignore[union-attr]
    heavy = Handoff(max_bytes=3 * DIGEST_WEIGHT)
    heavy.put(big[0], _digest(0, alerts=2))
    heavy.put(big[1], _digest(1, alerts=2))
    assert len(heavy) == 1 and heavy.take(big[0]) is None


def test_handoff_does_not_keep_the_message_bytes() -> None:
    """What the hand-off holds for a message does not grow with the message: its bytes are not kept."""
    tracemalloc.start()
    try:
        handoff = Handoff()
        before = tracemalloc.get_traced_memory()[0]
        for seq in range(20):
            handoff.put(bytes([seq]) * 1_000_000, _digest(seq))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(handoff) == 20 and held < 1_000_000


def test_same_length_and_ends_but_other_middle_is_not_taken() -> None:
    """A message equal to a held one in length, head and tail but not in between gets nothing."""
    data = b"h" * 100 + b"a" * 1000 + b"t" * 100
    other = b"h" * 100 + b"a" * 499 + b"b" + b"a" * 500 + b"t" * 100
    handoff = Handoff()
    handoff.put(data, _digest(0))
    assert handoff.take(other) is None and handoff.take(data) is not None
