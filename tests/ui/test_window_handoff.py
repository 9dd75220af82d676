"""The hand-off at the recent window's edge: lines the window let go before the sink stored them.

A live source with a two-message window reads ten messages of a run while
the sink has stored none; a subscription then comes.  The eight messages the
window let go are in neither the window nor ClickHouse.  Real broker, real
sink writer into real chDB.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from runstream import kafka
from runstream.topics import Topics
from sinks.store import Store
from sinks.writer import SinkWriter, WriterConfig
from tests.conftest import scaled
from tests.ui.feedclient import Broker, Emitter
from ui.feed import Feed
from ui.history import History
from ui.hub import Client, Hub
from ui.live import LiveConfig, LiveSource
from ui.recent import Recent

LINES = 10


def _config(group: str, **overrides: Any) -> LiveConfig:
    return LiveConfig(recent_messages=2, sink_group_id=group, **overrides)


def _sink(store: Store, broker: str, topics: Topics, group: str) -> SinkWriter:
    return SinkWriter(
        store,
        broker,
        topics,
        WriterConfig(group_id=group, max_age_ms=50, session_timeout_ms=int(scaled(2000)), heartbeat_interval_ms=200),
    )


async def _read_all(live: LiveSource, messages: int) -> None:
    """Wait (bounded) until the live source has read ``messages`` messages."""
    for _ in range(int(scaled(20) / 0.02)):
        if live.counts["messages"] >= messages:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the live source read {live.counts['messages']} of {messages} messages")


async def _ten_lines_read_past_the_window(broker: str, topics: Topics, run: str, live: LiveSource) -> None:
    """Put ten one-line messages of ``run`` on the logs topic (made before the source) and wait until it read them."""
    for _ in range(int(scaled(20) / 0.02)):
        if live.running():
            break
        await asyncio.sleep(0.02)
    async with Emitter(Broker(broker, topics), run) as emit:
        for n in range(LINES):
            await emit.lines([f"line {n}"])
    await _read_all(live, LINES)


def _subscribe(feed: Feed, client: Client, run: str) -> asyncio.Task[None]:
    """Subscribe as a websocket message would, returning the subscription's hand-off task."""
    tasks: set[asyncio.Task[None]] = set()
    feed._handle({"op": "subscribe", "sub": "s", "run": run, "stream": "logs"}, client, tasks)  # noqa: SLF001
    (task,) = tasks
    return task


async def test_lines_the_window_let_go_reach_a_subscriber_once_the_sink_stores_them(broker: str, store: Store) -> None:
    """A subscription that comes while the sink has not stored what the window let go gets every line, once."""
    topics = Topics(f"t{uuid.uuid4().hex[:10]}.")
    run, group = f"win-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    await kafka.ensure_topics(broker, topics.all(), 2)
    hub = Hub()
    live = LiveSource(hub, broker, topics, _config(group, stored_timeout_s=scaled(30), stored_max_s=scaled(60)))
    reading = asyncio.create_task(live.run())
    feed = Feed(hub, live, History(store, {}), lambda run: None, store.read_call)
    client = Client(lambda: None)
    sink = _sink(store, broker, topics, group)
    storing: asyncio.Task[None] | None = None
    try:
        await _ten_lines_read_past_the_window(broker, topics, run, live)
        hand_off = _subscribe(feed, client, run)
        await asyncio.sleep(0.2)  # the hand-off is under way before the sink stores anything
        storing = asyncio.create_task(sink.run())
        await asyncio.wait_for(hand_off, scaled(60))
        frames = client.take_frames()
    finally:
        await sink.stop()
        if storing is not None:
            await storing
        await live.stop()
        await asyncio.wait_for(reading, scaled(10))
    assert [i["line"] for f in frames for i in f.get("items") or ()] == [f"line {n}" for n in range(LINES)]
    assert [f for f in frames if f["type"] == "gap"] == []


async def test_a_hand_off_the_sink_does_not_catch_up_with_ends_its_history_with_a_gap_frame(
    broker: str, store: Store
) -> None:
    """No sink storing what the window let go: the history is followed by a ``gap`` frame, never a silent hole."""
    topics = Topics(f"t{uuid.uuid4().hex[:10]}.")
    run, group = f"win-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    await kafka.ensure_topics(broker, topics.all(), 2)
    hub = Hub()
    live = LiveSource(hub, broker, topics, _config(group, stored_timeout_s=scaled(1), stored_max_s=scaled(1)))
    reading = asyncio.create_task(live.run())
    feed = Feed(hub, live, History(store, {}), lambda run: None, store.read_call)
    client = Client(lambda: None)
    try:
        await _ten_lines_read_past_the_window(broker, topics, run, live)
        await asyncio.wait_for(_subscribe(feed, client, run), scaled(30))
        frames = client.take_frames()
    finally:
        await live.stop()
        await asyncio.wait_for(reading, scaled(10))
    assert [f["type"] for f in frames] == ["history", "gap"]
    assert [i["line"] for i in frames[0]["items"]] == [f"line {n}" for n in range(LINES - 2, LINES)]
    assert frames[1]["cursor"] == frames[0]["cursor"]
    assert (feed.gaps, hub.counts["gaps"]) == (1, 1)


def test_the_window_remembers_the_offset_after_the_newest_message_it_let_go() -> None:
    """Recent.evicted is, per partition, one past the newest message pushed out; empty while none was."""
    recent = Recent(60.0, 2, 1 << 20, lambda value: [])
    recent.add("r", "logs", b"a", None, ("clean.logs", 0), 40)
    recent.add("r", "logs", b"b", None, ("clean.logs", 0), 41)
    assert recent.evicted("r", "logs") == {}
    recent.add("r", "logs", b"c", None, ("clean.logs", 0), 45)
    recent.add("r", "logs", b"d", None, ("clean.logs", 0), 47)
    assert recent.evicted("r", "logs") == {("clean.logs", 0): 42}
    assert recent.evicted("r", "metrics") == {}


def test_prune_forgets_eviction_marks_only_once_the_sink_stored_past_them() -> None:
    """An emptied window's eviction mark outlives pruning until the committed offsets cover it."""
    now = [0.0]
    recent = Recent(10.0, 1, 1 << 20, lambda value: [], clock=lambda: now[0])
    tp = ("clean.logs", 0)
    recent.add("r", "logs", b"a", None, tp, 7)
    recent.add("r", "logs", b"b", None, tp, 8)
    now[0] = 60.0
    assert recent.prune({tp: 8}) == {tp}  # kept: the caller asks for fresher offsets of that partition
    assert recent.evicted("r", "logs") == {tp: 9}
    assert recent.prune({tp: 9}) == set()
    assert recent.evicted("r", "logs") == {}


async def test_the_sink_offsets_are_asked_only_while_a_hand_off_waits_on_them(broker: str) -> None:
    """``stored`` asks Kafka while it waits, answers from what it saw when that covers the need, and stops asking."""
    topics = Topics(f"t{uuid.uuid4().hex[:10]}.")
    await kafka.ensure_topics(broker, topics.all(), 2)
    group = f"g-{uuid.uuid4().hex[:8]}"
    tp = kafka.TopicPartition(topics.clean("logs"), 0)
    committer = kafka.make_consumer(broker, [], group)
    await committer.start()
    try:
        committer.assign([tp])
        await committer.commit({tp: 3})  # as the sink does once it stored offsets 0-2
    finally:
        await committer.stop()
    live = LiveSource(Hub(), broker, topics, _config(group, stored_timeout_s=scaled(10), stored_max_s=scaled(10)))
    try:
        assert await live.stored({tp: 3})
        poller = live._committed_poller  # noqa: SLF001 - whether anyone still asks Kafka
        assert poller is not None
        await asyncio.wait_for(poller, scaled(5))  # nobody waits any more: the poller ends
        assert await live.stored({tp: 2})  # covered by what it saw: no new poller
        assert live._committed_poller is poller  # noqa: SLF001
    finally:
        await live.stop()


async def test_an_idle_runs_eviction_marks_go_once_the_sink_committed_past_them(broker: str) -> None:
    """Nobody subscribing: the live source asks for the sink's offsets itself, so idle runs' marks do not pile up."""
    topics = Topics(f"t{uuid.uuid4().hex[:10]}.")
    run, group = f"win-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    await kafka.ensure_topics(broker, topics.all(), 1)
    live = LiveSource(Hub(), broker, topics, _config(group, recent_s=0.5, rescan_s=0.2))
    reading = asyncio.create_task(live.run())
    try:
        await _ten_lines_read_past_the_window(broker, topics, run, live)
        tp = kafka.TopicPartition(topics.clean("logs"), 0)
        assert live.recent.evicted(run, "logs") != {}
        committer = kafka.make_consumer(broker, [], group)
        await committer.start()
        try:
            committer.assign([tp])
            await committer.commit({tp: LINES})  # the sink stored all ten
        finally:
            await committer.stop()
        for _ in range(int(scaled(10) / 0.05)):
            if live.recent.evicted(run, "logs") == {}:
                break
            await asyncio.sleep(0.05)
        assert live.recent.evicted(run, "logs") == {}
    finally:
        await live.stop()
        await asyncio.wait_for(reading, scaled(10))
