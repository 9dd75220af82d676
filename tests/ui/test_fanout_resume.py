"""Resuming the feed from a cursor against a real chDB store: a resume too large for one read makes progress."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from runstream import tables
from runstream.topics import Topics
from sinks.store import Store
from ui.feed import Feed
from ui.history import History
from ui.hub import Client, Cursor, Hub, Rec
from ui.live import LiveSource

_EPOCH = datetime.fromtimestamp(0, tz=timezone.utc)


def _store_lines(store: Store, run: str, lines: list[tuple[str, int, int, str]]) -> None:
    """Rows of the logs table as the sink writes them: ``(producer, seq, ts_us, line)``."""
    columns = ["run_id", "ts", "node", "rank", "stream", "level", "logger", "line", "producer", "seq", "idx"]
    rows: list[list[Any]] = [
        [run, _EPOCH + timedelta(microseconds=ts_us), "node-0", 0, "stdout", "", "", line, producer, seq, 0]
        for producer, seq, ts_us, line in lines
    ]
    store.insert_rows(tables.LOGS, rows, columns)


async def test_resume_cut_by_its_row_bound_goes_on_past_a_producer_that_stopped_long_ago(
    broker: str, store: Store
) -> None:
    """Resuming again from each `dropped` cursor reaches the missed lines, though an old mark pins the oldest time."""
    run = f"resume-{uuid.uuid4().hex[:8]}"
    t0_us = time.time_ns() // 1000 - 60_000_000
    # Producer "a" logged once, long ago; producer "b" logs on: 200 lines, the client has up to b 150.
    lines = [("a", 0, t0_us, "a 0")] + [("b", n, t0_us + 1000 * (n + 1), f"b {n}") for n in range(200)]
    _store_lines(store, run, lines)
    have = Cursor()
    for producer, seq, ts_us, _ in (lines[0], lines[151]):
        have.advance(Rec((producer, seq, 0, 0), ts_us, {}))
    hub = Hub()
    client = Client(lambda: None)
    # The live source is not reading: this is about the store's side of a resume.
    live = LiveSource(hub, broker, Topics(f"t{uuid.uuid4().hex[:10]}."))
    feed = Feed(
        hub, live, History(store, {}, max_resume_rows=50), lambda r: None, store.read_call, live_ready_timeout_s=0
    )
    cursor, got, resumes = have.encode(), [], 0
    while resumes < 10:
        resumes += 1
        sub = hub.subscribe(client, {"sub": "s", "run": run, "stream": "logs", "cursor": cursor}, lambda r: r)
        hub.seed(sub, [])
        await feed._history(sub)  # noqa: SLF001 - the feed's hand-off, without a websocket around it
        frames = client.take_frames()
        got += [i["line"] for f in frames for i in f.get("items") or ()]
        if frames[-1]["type"] != "dropped":
            break
        cursor = frames[-1]["cursor"]
    assert got == [f"b {n}" for n in range(151, 200)]
    assert frames[-1].get("last") and resumes <= 6
