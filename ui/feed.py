"""``WS /ws``: the live feed, on the same Starlette app and port as the page and the API.

Protocol: JSON text frames.  Client to server::

    {"op": "subscribe", "sub": "<client-chosen id>", "run": "<run id>",
     "stream": "logs" | "metrics" | "resources" | "status" | "alerts",
     "filters": {...}, "cursor": null | "<cursor from an earlier frame>"}
    {"op": "unsubscribe", "sub": "<id>"}

Filters: logs ``q`` (case-insensitive substring of the text without ANSI
codes), ``regex`` (RE2 syntax, as ClickHouse's ``match`` reads it; live lines
are matched the same way, see :func:`ui.filters.live_pattern`), ``level`` (one or
a list/comma list), ``stream``, ``node``, ``rank``, ``since`` (RFC 3339, epoch
seconds or a duration ago: only lines from then on), ``limit``; metrics
``names``, ``node``, ``rank``, ``limit``; resources ``names``, ``device``,
``node``, ``rank``, ``limit``; alerts ``limit``.  ``limit`` (default 1000, at most 10000) is how many of the newest
stored records the history holds when no cursor is given.

Server to client::

    {"sub": ..., "type": "history", "items": [...], "cursor": "...", "last": true}
    {"sub": ..., "type": "live", "items": [...], "cursor": "...", "coalesced": N}
    {"sub": ..., "type": "dropped", "count": N, "cursor": "..."}
    {"sub": ..., "type": "gap", "reason": "sink_behind", "cursor": "..."}
    {"type": "error", "error": "...", "sub": ...}

A subscription answers with ``history`` frames (the last one says
``"last": true``; ``status`` history is the run as ``GET /api/runs/{id}``
gives it), then ``live`` frames, with no gap and no duplicate between them
(see :mod:`ui.hub`).  Every frame's ``cursor`` says what the client has;
resubscribing with it after a disconnect gives exactly what was missed.  A
client that does not keep up has its metrics/resources/status coalesced
(newest value per series, ``coalesced`` counts what was skipped) and its
logs/alerts subscription ended with a ``dropped`` frame whose cursor resumes
it.  A ``gap`` frame (right after the last ``history`` frame; the
subscription goes on live) says records between the history and the live
ones may be missing: the live source's recent window had already let go of
records the sink had not stored yet, and the sink did not store them within
the hand-off's bound (see :meth:`ui.live.LiveSource.stored`).  A resume with
its cursor cannot fill that gap (the cursor is past it); a fresh subscription
without a cursor, once the sink has caught up, has those records: the page
says so ("some lines between history and live may be missing; reload").

No cap on sessions; a connection needs the token (cookie, ``Authorization:
Bearer``, or ``?token=``), an allowed Host and, when it sends one, the
server's own Origin (:mod:`ui.auth`); a client frame over
``max_message_bytes`` closes the connection with code 1009.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from runstream.errors import QueryError, RunstreamError
from ui.filters import FeedError
from ui.history import History
from ui.hub import Client, Hub, Rec, Subscription
from ui.live import LiveSource
from ui.params import check_run_id
from ui.responses import dumps

log = logging.getLogger("runstream.feed")

Call = Callable[..., Awaitable[Any]]
GetRun = Callable[[str], Any]

#: Close code for a frame over the size limit (RFC 6455 "message too big").
CLOSE_TOO_BIG = 1009


def _check_run(run: str) -> str:
    try:
        return check_run_id(run)
    except QueryError as exc:
        raise FeedError(str(exc)) from None


class Feed:
    """The websocket endpoint: one :class:`ui.hub.Client` per connection over a shared hub."""

    def __init__(
        self,
        hub: Hub,
        live: LiveSource,
        history: History,
        get_run: GetRun,
        call: Call,
        *,
        max_message_bytes: int = 64 * 1024,
        max_pending_items: int = 10_000,
        resume_slack_s: float = 5.0,
        live_ready_timeout_s: float = 10.0,
    ) -> None:
        self.hub = hub
        self.live = live
        self.history = history
        self.get_run = get_run
        self.call = call
        self.max_message_bytes = max_message_bytes
        self.max_pending_items = max_pending_items
        self.resume_slack_us = int(resume_slack_s * 1e6)
        self.live_ready_timeout_s = live_ready_timeout_s
        self.connections = 0
        #: Hand-offs that went on before the live source caught up (their records may come out of time order).
        self.catch_up_gave_up = 0
        #: Hand-offs that went on before the sink stored what the recent window let go (a ``gap`` frame each).
        self.gaps = 0

    def stats(self) -> dict[str, int]:
        """Open connections, hand-off give-ups and gaps, and the hub's record counters (for the health report)."""
        return {
            "connections": self.connections,
            "catch_up_gave_up": self.catch_up_gave_up,
            "gaps": self.gaps,
            **{f"records_{name}": n for name, n in self.hub.counts.items() if name != "gaps"},
        }

    async def endpoint(self, ws: WebSocket) -> None:
        """Serve one connection until the client leaves (auth was checked by the middleware)."""
        await ws.accept()
        ready = asyncio.Event()
        client = Client(ready.set, self.max_pending_items)
        tasks: set[asyncio.Task[None]] = set()
        writer = asyncio.create_task(self._write(ws, client, ready))
        self.connections += 1
        try:
            await self._read(ws, client, tasks)
        finally:
            self.connections -= 1
            self.hub.drop_client(client)
            for task in (*tasks, writer):
                task.cancel()
            for task in (*tasks, writer):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _read(self, ws: WebSocket, client: Client, tasks: set[asyncio.Task[None]]) -> None:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                raw = message.get("bytes") or b""
                size = len(raw)
            else:
                size = len(text.encode("utf-8", "replace"))
            if size > self.max_message_bytes:
                with contextlib.suppress(Exception):
                    await ws.close(CLOSE_TOO_BIG, "message too big")
                return
            doc: Any = None
            try:
                doc = json.loads(text if text is not None else raw)
                self._handle(doc, client, tasks)
            except (FeedError, ValueError) as exc:
                frame: dict[str, Any] = {"type": "error", "error": str(exc)[:500]}
                if isinstance(doc, dict) and isinstance(doc.get("sub"), str):
                    frame["sub"] = doc["sub"][:64]
                client.errors.append(frame)
                client.notify()

    def _handle(self, doc: Any, client: Client, tasks: set[asyncio.Task[None]]) -> None:
        if not isinstance(doc, dict):
            raise FeedError("a message must be a JSON object")
        op = doc.get("op")
        if op == "subscribe":
            sub = self.hub.subscribe(client, doc, _check_run)
            self.hub.seed(sub, self.live.recent.get(sub.run, sub.stream))
            # Taken with the seed: what the window let go before it must be stored before the history is read.
            task = asyncio.create_task(self._history(sub, self.live.recent.evicted(sub.run, sub.stream)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        elif op == "unsubscribe":
            if not self.hub.unsubscribe(client, str(doc.get("sub"))):
                raise FeedError(f"no subscription {str(doc.get('sub'))[:64]!r}")
        else:
            raise FeedError("op must be subscribe or unsubscribe")

    async def _history(self, sub: Subscription, evicted: Mapping[Any, int] | None = None) -> None:
        """Read the subscription's history and hand it to the hub (which then goes live).

        ``evicted``: what the live source's recent window had let go of this
        run and stream when the subscription was seeded (:meth:`ui.recent.Recent.evicted`).
        Before the history is read, waits in :meth:`LiveSource.stored` until
        the sink has stored all of it, so history, window and live records
        cover every record; when that wait gives up, the client gets a ``gap``
        frame after the history (counted in ``gaps`` and logged): never a
        silent hole.  Then blocks on the history read and on :meth:`LiveSource.caught_up`,
        which waits while the live source makes progress (3 s without any
        gives up; 30 s at most).  When that wait gives up (the source is stuck
        or not reading), the hand-off goes on anyway rather than hold the page
        empty: the connected client loses and repeats no record (the source
        publishes what it reads later; a copy of a record the history held is
        skipped by its identity), only time order may break (a record the
        source reads later, older than the history's newest, comes after it).
        Counted in ``catch_up_gave_up`` and logged.
        """
        try:
            await self._live_ready()
            gap = bool(evicted) and not await self.live.stored(evicted or {})
            if gap:
                self.gaps += 1
                log.warning(
                    "Feed hand-off went on before the sink stored what the live window let go; the client was "
                    "told records may be missing. run=%s stream=%s gaps=%d",
                    sub.run,
                    sub.stream,
                    self.gaps,
                )
            if sub.stream == "status":
                run = await self.call(self.get_run, sub.run)
                now_us = time.time_ns() // 1000
                recs = [Rec(("~snapshot", now_us, 0, 0), now_us, {"run": run})] if run is not None else []
                self.hub.complete_history(sub, recs, None)
                if gap:
                    self.hub.mark_gap(sub)
                return
            since = sub.start_cursor.since_us(self.resume_slack_us)
            recs, more = await self.call(self.history.read, sub.run, sub.stream, sub.filters, since)
            # Every record that history holds is then one the live source has published too (to this
            # subscription's buffer, or before it, to the recent window): the hand-off keeps time order.
            if not await self.live.caught_up(sub.stream):
                self.catch_up_gave_up += 1
                log.warning(
                    "Feed hand-off went on before the live source caught up; later records may come out of order. "
                    "stream=%s gave_up=%d",
                    sub.stream,
                    self.catch_up_gave_up,
                )
            cut_at = recs[0] if more and since is None and recs else None
            self.hub.complete_history(sub, recs, cut_at.key if cut_at else None, cut_at.ts_us if cut_at else None)
            if gap:
                self.hub.mark_gap(sub)
            if more and since is not None:
                # Too much to resume at once: end here; the client resumes from the marker's cursor, which
                # goes on from the last record read (every older one was in this read).
                sub.cursor.floor_us = recs[-1].ts_us
                self.hub.end_with_marker(sub)
        except RunstreamError as exc:
            self.hub.unsubscribe(sub.client, sub.sub_id)
            sub.client.errors.append({"type": "error", "sub": sub.sub_id, "error": str(exc)[:500]})
            sub.client.notify()

    async def _live_ready(self) -> None:
        """Wait (bounded) until the live source reads its partitions, so the hand-off has no gap."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.live_ready_timeout_s
        while not self.live.running() and loop.time() < deadline:
            await asyncio.sleep(0.05)

    async def _write(self, ws: WebSocket, client: Client, ready: asyncio.Event) -> None:
        try:
            while True:
                await ready.wait()
                ready.clear()
                for frame in client.take_frames():
                    await ws.send_text(dumps(frame).decode("utf-8"))
        except (WebSocketDisconnect, RuntimeError, OSError):
            return  # the reader sees the disconnect and cleans up
