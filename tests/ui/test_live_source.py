"""The live source against a real broker: what ``caught_up`` promises the feed's hand-off."""

from __future__ import annotations

import asyncio
import uuid

from runstream import kafka
from runstream.topics import Topics
from tests.conftest import scaled
from tests.ui.feedclient import Broker, Emitter
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


async def test_caught_up_gives_up_when_the_source_is_not_reading(broker: str) -> None:
    """No reading source: the hand-off is told it is not caught up, without waiting out its bound."""
    live = LiveSource(Hub(), broker, Topics(f"t{uuid.uuid4().hex[:10]}."), LiveConfig(catch_up_timeout_s=30))
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert not await live.caught_up("logs")
    assert loop.time() - began < 10
