"""The in-process hand-off of decoded clean envelopes: exact bytes only, bounded."""

from __future__ import annotations

from runstream import wire
from streams.handoff import Handoff

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
    """Beyond max_items or max_bytes the oldest envelopes are dropped (those messages are then decoded)."""
    handoff = Handoff(max_items=2)
    items = [_env(seq) for seq in range(3)]
    for data, env in items:
        handoff.put(data, env)
    assert len(handoff) == 2 and handoff.take(items[0][0]) is None and handoff.evicted == 1
    small = Handoff(max_bytes=len(items[0][0]) + 1)
    small.put(*items[0])
    small.put(*items[1])
    assert len(small) == 1 and small.take(items[1][0]) is items[1][1]
