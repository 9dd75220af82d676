"""The live source against a real broker: what ``caught_up`` promises the feed's hand-off."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from runstream import kafka, tables
from runstream.topics import Topics
from sinks.store import Store
from tests.conftest import scaled
from tests.ui.feedclient import Broker, Emitter
from ui.feed import Feed
from ui.history import History
from ui.hub import Client, Hub
from ui.live import LiveConfig, LiveSource


def _subscribe(hub: Hub, run: str, stream: str = "logs") -> object:
    return hub.subscribe(Client(lambda: None), {"sub": "s", "run": run, "stream": stream}, lambda r: r)


async def _running(live: LiveSource) -> None:
    for _ in range(int(scaled(20) / 0.01)):
        if live.running():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the live source did not start reading")


async def test_caught_up_returns_once_every_message_in_the_broker_is_published(broker: str) -> None:
    """A source still reading a backlog is caught up only when it has published all of it (and the later lines)."""
    topics = Topics(f"t{uuid.uuid4().hex[:10]}.")
    await kafka.ensure_topics(broker, topics.all(), 2)
    run = f"live-{uuid.uuid4().hex[:8]}"
    async with Emitter(Broker(broker, topics), run) as emit:
        for start in range(0, 3000, 10):  # a backlog the source reads from its start_lookback
            await emit.lines([f"line {n}" for n in range(start, start + 10)])
        hub = Hub()
        sub = _subscribe(hub, run)
        live = LiveSource(hub, broker, topics, LiveConfig(catch_up_timeout_s=scaled(20)))
        task = asyncio.create_task(live.run())
        try:
            await _running(live)
            await emit.lines(["after"])
            assert await live.caught_up("logs")
            got = [r.data["line"] for r in sub.buffer]  # type: ignore[attr-defined]
            assert got == [*(f"line {n}" for n in range(3000)), "after"]
            # Another stream's topic holds nothing: caught up at once.
            assert await live.caught_up("metrics")
        finally:
            await live.stop()
            await asyncio.wait_for(task, scaled(10))


async def test_caught_up_waits_for_a_source_that_lags_but_keeps_reading(broker: str) -> None:
    """A source further behind than catch_up_timeout_s that keeps reading is waited for, not given up on."""
    topics = Topics(f"t{uuid.uuid4().hex[:10]}.")
    await kafka.ensure_topics(broker, topics.all(), 2)
    run = f"live-{uuid.uuid4().hex[:8]}"
    async with Emitter(Broker(broker, topics), run) as emit:
        for start in range(0, 3000, 100):
            await asyncio.gather(*(emit.lines([f"line {n}"]) for n in range(start, start + 100)))
    hub = Hub()
    sub = _subscribe(hub, run)
    stop = asyncio.Event()

    async def busy() -> None:
        # A loaded server: every turn of the event loop costs 3 ms (scaled), so reading the 3000
        # messages (one turn each) takes at least three times the no-progress bound.
        turn_s = scaled(0.003)
        while not stop.is_set():
            time.sleep(turn_s)
            await asyncio.sleep(0)

    hog = asyncio.create_task(busy())
    live = LiveSource(hub, broker, topics, LiveConfig(catch_up_timeout_s=scaled(3), catch_up_max_s=scaled(120)))
    task = asyncio.create_task(live.run())
    try:
        await _running(live)
        assert await live.caught_up("logs")
        assert len(sub.buffer) == 3000  # type: ignore[attr-defined]
    finally:
        stop.set()
        await hog
        await live.stop()
        await asyncio.wait_for(task, scaled(10))


async def test_caught_up_gives_up_when_the_source_is_not_reading(broker: str) -> None:
    """No reading source: the hand-off is told it is not caught up, without waiting out its bound."""
    live = LiveSource(Hub(), broker, Topics(f"t{uuid.uuid4().hex[:10]}."), LiveConfig(catch_up_timeout_s=30))
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert not await live.caught_up("logs")
    assert loop.time() - began < 10


def _stored(store: Store, run: str, producer: str, lines: list[tuple[int, int, str]]) -> None:
    """Rows of the logs table as the sink writes them: ``(seq, ts_ns, line)``, node-0, rank 0."""
    columns = ["run_id", "ts", "node", "rank", "stream", "level", "logger", "line", "producer", "seq", "idx"]
    epoch = datetime.fromtimestamp(0, tz=timezone.utc)
    rows: list[list[Any]] = [
        [run, epoch + timedelta(microseconds=ts_ns // 1000), "node-0", 0, "stdout", "", "", line, producer, seq, 0]
        for seq, ts_ns, line in lines
    ]
    store.insert_rows(tables.LOGS, rows, columns)


async def test_hand_off_that_gives_up_waiting_for_the_live_source_loses_and_repeats_no_line(
    broker: str, store: Store
) -> None:
    """A history holding lines the live source has not read (its wait gave up) still leaves every line once."""
    topics = Topics(f"t{uuid.uuid4().hex[:10]}.")
    await kafka.ensure_topics(broker, topics.all(), 2)
    run = f"live-{uuid.uuid4().hex[:8]}"
    base_ns = time.time_ns() - 5_000_000_000
    sent: list[tuple[int, int, str]] = []
    async with Emitter(Broker(broker, topics), run) as emit:
        for n in range(10):
            sent.append((emit.seq, base_ns + n * 1_000_000, f"line {n}"))
            await emit.send("logs", [{"line": f"line {n}", "ts_ns": base_ns + n * 1_000_000}])
    # The sink is ahead of the live source: it stored the first six, the source has read none.
    _stored(store, run, emit.producer_id, sent[:6])
    hub = Hub()
    client = Client(lambda: None)
    live = LiveSource(hub, broker, topics, LiveConfig(catch_up_timeout_s=scaled(1)))
    history = History(store, {})
    feed = Feed(hub, live, history, lambda run: None, store.read_call, live_ready_timeout_s=0)
    sub = hub.subscribe(client, {"sub": "s", "run": run, "stream": "logs"}, lambda r: r)
    hub.seed(sub, live.recent.get(run, "logs"))
    assert not await live.caught_up("logs")  # the source is not reading: the wait gives up
    await feed._history(sub)  # noqa: SLF001 - the feed's hand-off, without a websocket around it
    got = [i["line"] for f in client.take_frames() for i in f.get("items") or ()]
    assert got == [line for _, _, line in sent[:6]]
    task = asyncio.create_task(live.run())  # the source catches up late: it reads all ten
    try:
        for _ in range(int(scaled(20) / 0.02)):
            got += [i["line"] for f in client.take_frames() for i in f.get("items") or ()]
            if len(got) >= 10:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # a repeat would come now
        got += [i["line"] for f in client.take_frames() for i in f.get("items") or ()]
    finally:
        await live.stop()
        await asyncio.wait_for(task, scaled(10))
    assert got == [line for _, _, line in sent]
