"""The in-process hand-off of what the validators know of clean messages: exact bytes only, bounded."""

from __future__ import annotations

import tracemalloc

from runstream import wire
from streams.handoff import Handoff, Live, weight_of

TS = 1_795_428_000 * 1_000_000_000


def _env(seq: int) -> tuple[bytes, wire.Envelope]:
    env = wire.Envelope(
        kind="logs",
        producer="p",
        seq=seq,
        run="r",
        node="n",
        rank=0,
        sent_ns=TS,
        records=[{"ts_ns": TS, "line": f"line {seq}", "i": 0}],
        ingest_ns=TS,
    )
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
    small = Handoff(max_bytes=weight_of(items[0][0]) + 1)
    small.put(*items[0])
    small.put(*items[1])
    assert len(small) == 1 and small.take(items[1][0]) is items[1][1]


def test_handoff_does_not_keep_the_message_bytes() -> None:
    """What the hand-off holds for a message does not grow with the message: its bytes are not kept."""
    tracemalloc.start()
    try:
        handoff = Handoff()
        before = tracemalloc.get_traced_memory()[0]
        for seq in range(20):
            handoff.put(bytes([seq]) * 1_000_000, _env(seq)[1])
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(handoff) == 20 and held < 1_000_000


def test_same_length_and_ends_but_other_middle_is_not_taken() -> None:
    """A message equal to a held one in length, head and tail but not in between gets nothing."""
    data = b"h" * 100 + b"a" * 1000 + b"t" * 100
    other = b"h" * 100 + b"a" * 499 + b"b" + b"a" * 500 + b"t" * 100
    handoff = Handoff()
    handoff.put(data, _env(0)[1])
    assert handoff.take(other) is None and handoff.take(data) is not None


def test_live_state_comes_back_only_for_the_very_bytes_kept_and_once() -> None:
    """A kept state is taken back by the identical bytes object the table holds, once; an equal copy of those
    bytes (a value recovered from the changelog, or written by anyone else) gets nothing."""
    live: Live[list[int]] = Live()
    stored, state = wire.pack({"n": 1}), [1]
    live.keep("run", stored, state)
    assert live.take("run", bytes(bytearray(stored))) is None and len(live) == 0
    live.keep("run", stored, state)
    assert live.take("other", stored) is None
    assert live.take("run", stored) is state and live.take("run", stored) is None


def test_live_state_of_a_key_written_again_is_not_taken_for_the_old_bytes() -> None:
    """Keeping a key again replaces its entry: the bytes it was kept with before no longer give the state."""
    live: Live[str] = Live()
    old, new = wire.pack(1), wire.pack(2)
    live.keep("run", old, "old")
    live.keep("run", new, "new")
    assert live.take("run", old) is None
    live.keep("run", new, "new")
    assert live.take("run", new) == "new"


def test_live_states_are_bounded_by_count_least_recently_kept_first() -> None:
    """Beyond max_items the least recently kept key is forgotten (its state is then decoded)."""
    live: Live[int] = Live(max_items=2)
    values = [wire.pack(k) for k in range(3)]
    live.keep("a", values[0], 0)
    live.keep("b", values[1], 1)
    live.keep("a", values[0], 0)
    live.keep("c", values[2], 2)
    assert len(live) == 2 and live.take("b", values[1]) is None
    assert live.take("a", values[0]) == 0 and live.take("c", values[2]) == 2
