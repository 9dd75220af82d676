"""The live feed end to end: a real broker, the real server process (sink + chDB + feed), real websockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from runstream import kafka
from runstream.topics import Topics
from tests.conftest import scaled
from tests.ui.conftest import TOKEN, Server, start_server, stop_server
from tests.ui.feedclient import (
    Broker,
    Emitter,
    RawSlowClient,
    collect,
    connect,
    has_lines,
    items,
    lines_of,
    stored_lines,
    subscribe,
)


def new_run() -> str:
    return f"feed-{uuid.uuid4().hex[:10]}"


async def test_history_then_live_has_no_gap_and_no_duplicate(server: Server) -> None:
    """Lines produced before, during and after subscribing arrive once each, in order."""
    run = new_run()
    expected = [f"line {n}" for n in range(300)]
    async with Emitter(server, run) as emit:
        for start in range(0, 100, 5):
            await emit.lines(expected[start : start + 5])
        await asyncio.sleep(0.3)  # some stored by the sink, the newest maybe not yet

        async def more() -> None:
            for start in range(100, 300, 5):
                await emit.lines(expected[start : start + 5])
                await asyncio.sleep(0.005)

        producing = asyncio.create_task(more())
        async with connect(server) as ws:
            await subscribe(ws, run)
            frames = await collect(ws, has_lines(300))
            await producing
            await emit.lines(["after"])
            frames += await collect(ws, lambda f: "after" in lines_of(f))
    assert lines_of(frames) == [*expected, "after"]
    assert [f["type"] for f in frames if f.get("last")] == ["history"]


async def test_clients_subscribing_while_lines_flow_miss_no_line(server: Server) -> None:
    """Clients subscribing with a one-line history while lines flow each get every line sent after they subscribed."""
    run = new_run()
    sent: list[int] = []
    subscribed = asyncio.Event()
    async with Emitter(server, run) as emit, contextlib.AsyncExitStack() as stack:

        async def produce() -> None:
            # Lines flow before, while and for a while after the clients subscribe.
            while not subscribed.is_set() or len(sent) < stop_at:
                await emit.lines([f"line {len(sent)}"])
                sent.append(len(sent))
                await asyncio.sleep(0.005)

        stop_at = 1 << 30
        producing = asyncio.create_task(produce())
        await stored_lines(server, run, 1)  # a one-line history of this run is cut from now on
        sockets = [await stack.enter_async_context(connect(server)) for _ in range(100)]

        async def join(ws: Any) -> tuple[Any, int, list[dict[str, Any]]]:
            await subscribe(ws, run, filters={"limit": 1})
            # The feed answers messages in order: this error says the subscription is registered.
            await ws.send(json.dumps({"op": "unsubscribe", "sub": "probe"}))
            frames = await collect(ws, lambda f: any(x.get("type") == "error" for x in f))
            return ws, len(sent) + 1, frames  # +1: the line in flight may predate the subscription

        # All at once, as a hundred open pages do: their histories queue on the read lane while lines flow.
        clients = await asyncio.gather(*(join(ws) for ws in sockets))
        stop_at = len(sent) + 50
        subscribed.set()
        await producing
        await emit.lines(["after"])
        for ws, first_after, frames in clients:
            frames += await collect(ws, lambda f: "after" in lines_of(f))
            got = lines_of(frames)
            first = int(got[0].split()[1])
            assert not [f for f in frames if f.get("type") == "dropped"]
            assert got == [*(f"line {n}" for n in range(first, len(sent))), "after"] and first <= first_after


async def test_lines_sent_just_before_the_server_started_reach_a_subscriber(broker: str, tmp_path: Path) -> None:
    """Lines produced just before the server started, and not stored yet, reach a new subscription."""
    topics = Topics(f"t{uuid.uuid4().hex[:10]}.")
    await kafka.ensure_topics(broker, topics.all(), 2)
    run = new_run()
    async with Emitter(Broker(broker, topics), run) as emit:
        await emit.lines(["before 0", "before 1"])
    # No sink: nothing is stored, so only the live source can know these lines (as when a cold sink
    # is still joining its group while the first subscriber's history is read).
    fresh = await asyncio.to_thread(start_server, broker, tmp_path, "--no-sink", topics=topics)
    try:
        async with connect(fresh) as ws:
            await subscribe(ws, run)
            frames = await collect(ws, has_lines(2))
            async with Emitter(fresh, run) as emit:
                await emit.lines(["after"])
            frames += await collect(ws, lambda f: "after" in lines_of(f))
    finally:
        await asyncio.to_thread(stop_server, fresh)
    assert lines_of(frames) == ["before 0", "before 1", "after"]


async def test_reconnect_with_cursor_gets_exactly_what_was_missed(server: Server) -> None:
    """After a disconnect, resubscribing with the last cursor delivers only the lines sent meanwhile."""
    run = new_run()
    async with Emitter(server, run) as emit:
        await emit.lines([f"first {n}" for n in range(10)])
        async with connect(server) as ws:
            await subscribe(ws, run)
            frames = await collect(ws, has_lines(10))
            await emit.lines([f"live {n}" for n in range(5)])
            frames += await collect(ws, has_lines(5))
        cursor = frames[-1]["cursor"]
        missed = [f"missed {n}" for n in range(7)]
        await emit.lines(missed)
        async with connect(server) as ws:
            await subscribe(ws, run, cursor=cursor)
            again = await collect(ws, lambda f: any(x.get("last") for x in f) and len(lines_of(f)) >= 7)
            await emit.lines(["new"])
            again += await collect(ws, lambda f: "new" in lines_of(f))
    assert lines_of(again) == [*missed, "new"]


async def test_log_filters_apply_to_history_and_live(server: Server) -> None:
    """A keyword and level filter selects the same lines from storage and from Kafka."""
    run = new_run()
    async with Emitter(server, run) as emit:
        await emit.lines(["CUDA out of memory", "epoch 1"], level="ERROR")
        await emit.lines(["cuda OUT OF MEMORY again"], level="INFO")
        async with connect(server) as ws:
            await subscribe(ws, run, filters={"q": "out of memory", "level": "ERROR"})
            frames = await collect(ws, has_lines(1))
            await emit.lines(["out of memory live", "nothing"], level="ERROR")
            frames += await collect(ws, has_lines(1))
    assert lines_of(frames) == ["CUDA out of memory", "out of memory live"]


async def test_rank_filter_selects_a_line_by_its_own_rank_in_history_and_live(server: Server) -> None:
    """A line whose rank came from its torchrun prefix (not its producer's) passes a rank filter live as in history."""
    run = new_run()
    async with Emitter(server, run, rank=0) as emit:
        # One console, ranks in the text: the stream processors give each record its own rank.
        await emit.send("logs", [{"line": "[rank3]: stored", "rank": 3}, {"line": "[rank0]: other", "rank": 0}])
        await stored_lines(server, run, 2)
        async with connect(server) as ws:
            await subscribe(ws, run, filters={"rank": 3})
            frames = await collect(ws, has_lines(1))
            await emit.send("logs", [{"line": "[rank3]: live", "rank": 3}, {"line": "[rank0]: not", "rank": 0}])
            await emit.lines(["after"])  # the envelope's rank (0): not for this subscription
            frames += await collect(ws, lambda f: "[rank3]: live" in lines_of(f))
    assert lines_of(frames) == ["[rank3]: stored", "[rank3]: live"]
    assert {i["rank"] for i in items(frames)} == {3}


async def test_posix_class_regex_selects_the_same_lines_live_as_in_history(server: Server) -> None:
    """A regex with a POSIX class (RE2 syntax, as the history query reads it) selects matching lines live too."""
    run = new_run()
    async with Emitter(server, run) as emit:
        await emit.lines(["37 it/s", "slow :] it/s"])
        await stored_lines(server, run, 2)
        async with connect(server) as ws:
            await subscribe(ws, run, filters={"regex": "^[[:digit:]]+ it/s"})
            frames = await collect(ws, has_lines(1))
            await emit.lines([":] it/s", "41 it/s"])
            frames += await collect(ws, has_lines(1))
    assert lines_of(frames) == ["37 it/s", "41 it/s"]


async def test_metric_point_arrives_live(server: Server) -> None:
    """A metric logged after subscribing arrives as a live item with its step and value."""
    run = new_run()
    async with Emitter(server, run) as emit, connect(server) as ws:
        await subscribe(ws, run, stream="metrics")
        await collect(ws, lambda f: any(x.get("last") for x in f))
        await emit.metric(7, {"loss": 0.25, "acc": float("nan")})
        frames = await collect(ws, lambda f: len(items(f)) >= 2)
    got = {i["name"]: (i["step"], i["value"]) for i in items(frames)}
    assert got == {"loss": (7, 0.25), "acc": (7, "NaN")}


async def test_slow_client_does_not_stall_a_fast_one_and_gets_a_drop_marker(server: Server) -> None:
    """A client that stops reading is dropped with a marker; another on the same run gets every line."""
    run = new_run()
    big = "x" * 4000
    expected = [f"{n} {big}" for n in range(3000)]
    slow = RawSlowClient(server, {"op": "subscribe", "sub": "slow", "run": run, "stream": "logs"})
    try:
        async with Emitter(server, run) as emit, connect(server, max_size=None) as fast:
            await subscribe(fast, run)
            await collect(fast, lambda f: any(x.get("last") for x in f))
            for start in range(0, len(expected), 50):
                await emit.lines(expected[start : start + 50])
            frames = await collect(fast, has_lines(len(expected)), timeout_s=60)
        stalled = await asyncio.to_thread(slow.read_all)
    finally:
        slow.close()
    assert lines_of(frames) == expected
    assert stalled.count(b'"type":"dropped"') == 1 and stalled.count(big.encode()) < len(expected)


async def test_wrong_token_is_refused(server: Server) -> None:
    """A handshake with a wrong token is refused with 403."""
    with pytest.raises(InvalidStatus) as refused:
        async with connect(server, additional_headers={"Authorization": "Bearer wrong"}):
            pass
    assert refused.value.response.status_code == 403


async def test_token_in_query_string_is_accepted(server: Server) -> None:
    """A client that cannot set headers may pass ?token= on the websocket URL."""
    from websockets.asyncio.client import connect as ws_connect

    async with ws_connect(f"{server.ws_url}?token={TOKEN}") as ws:
        await ws.send(json.dumps({"op": "nope"}))
        assert json.loads(await ws.recv())["type"] == "error"


async def test_foreign_origin_is_refused(server: Server) -> None:
    """A browser page on another site cannot open the feed, even with the token's cookie."""
    headers = {"Cookie": f"runstream_token={TOKEN}", "Origin": "http://evil.example"}
    with pytest.raises(InvalidStatus) as refused:
        async with connect(server, additional_headers=headers):
            pass
    assert refused.value.response.status_code == 403


async def test_own_origin_with_cookie_is_accepted(server: Server) -> None:
    """The page's own origin with the sign-in cookie opens the feed."""
    headers = {"Cookie": f"runstream_token={TOKEN}", "Origin": server.url}
    async with connect(server, additional_headers=headers) as ws:
        await ws.send(json.dumps({"op": "unsubscribe", "sub": "none"}))
        assert json.loads(await ws.recv())["type"] == "error"


async def test_oversized_frame_closes_the_connection(server: Server) -> None:
    """A client frame over the size limit closes the connection with code 1009."""
    async with connect(server) as ws:
        await ws.send(json.dumps({"op": "subscribe", "pad": "x" * 100_000}))
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(scaled(10)):
                await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_malformed_subscription_gets_an_error_frame(server: Server) -> None:
    """A subscription with an unknown stream is answered with an error naming the problem."""
    async with connect(server) as ws:
        await subscribe(ws, "run-x", stream="everything")
        frame = json.loads(await ws.recv())
    assert frame["type"] == "error" and frame["sub"] == "s1" and "stream" in frame["error"]
