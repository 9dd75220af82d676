"""The live feed's protocol logic, sans I/O: subscriptions, cursors, bounded queues.

Nothing here awaits or touches a socket, so all of it is unit-tested
directly.  :mod:`ui.feed` moves frames between a websocket and a
:class:`Client`; :mod:`ui.live` feeds :meth:`Hub.publish` from Kafka; the
subscription filters and how live records are matched are :mod:`ui.filters`.

A subscription starts *buffering*: live records for its run and stream are
kept (in arrival order) while its history is read from ClickHouse, after the
live source's recent window (records read before the subscription, maybe not
stored yet).  :meth:`Hub.complete_history` then queues the history merged
with the buffered and recent records it does not hold (by identity), in time
order, and switches to *live*.  When the history is the newest ``limit``
records, recent-window records older than its first are outside the window
asked for and left out; a record that arrived *after* the subscription is
never left out (the history may have been read after the sink stored it, and
then cut it by the limit: the client asked before that record existed).
When the feed could not make sure the history holds what the recent window
had already let go (:meth:`ui.live.LiveSource.stored` gave up),
:meth:`Hub.mark_gap` follows the history with a ``gap`` frame.  A
live record the history already held (the live source read it after the sink
stored it) is skipped by its identity (never by its producer's mark: a record
that comes late, out of order, is still delivered).

Identity and cursor: every record is identified by ``(producer, seq, idx,
sub)`` (``sub`` is the position of a value inside a metrics/resources
record, 0 otherwise).  A producer's records reach the feed in ``(seq, idx,
sub)`` order, so "what a client has" is one high-water mark per producer.
The cursor is that map, ``{"v": 1, "p": {producer: [seq, idx, sub, ts_us]},
"t": floor_us}`` as URL-safe base64 JSON; a client resubscribing with it gets
exactly the records above every mark, and all records of producers it has
not seen, from ``min(ts_us) - slack``, or from ``t`` when that is later: a
resume too large for one read ends at the last record it read, and ``t``
(that record's time) makes the next one go on from there (a producer that
stopped logging long ago would otherwise pin every resume to the same first
rows).  ``t`` is optional: cursors without it stay valid.  The map keeps at
most :data:`MAX_CURSOR_PRODUCERS` producers (the oldest marks are forgotten
first).

Bounded queues: a client holds at most ``max_pending_items`` undelivered
records per subscription.  Over it, a *coalescing* stream (metrics,
resources, status) keeps only the newest record per series; a *dropping*
stream (logs, alerts) stops taking records, and once what was queued is
sent the client gets ``{"type": "dropped", "count": N, "cursor": ...}``
and the subscription ends: resubscribing with that cursor fills the gap
from ClickHouse with nothing lost and nothing repeated.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ui.filters import FeedError, Filters, matcher, parse_filters

STREAMS = ("logs", "metrics", "resources", "status", "alerts")
COALESCING = frozenset({"metrics", "resources", "status"})
MAX_CURSOR_PRODUCERS = 4096
MAX_CURSOR_CHARS = 512 * 1024
MAX_SUB_ID_CHARS = 64
#: Records per frame: a large history goes as several frames.
FRAME_ITEMS = 1000

Key = tuple[str, int, int, int]


@dataclass(slots=True)
class Rec:
    """One record on the feed: its identity, its time and what the client receives."""

    key: Key
    ts_us: int
    data: dict[str, Any]


# -- cursor ----------------------------------------------------------------


@dataclass
class Cursor:
    """Per-producer high-water marks of what a client has received."""

    marks: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    #: Where a resumed history starts at the earliest (set when a resume was cut by its row bound).
    floor_us: int | None = None

    def seen(self, key: Key) -> bool:
        """Whether the record ``key`` is at or below its producer's mark."""
        mark = self.marks.get(key[0])
        return mark is not None and key[1:] <= mark[:3]

    def advance(self, rec: Rec) -> None:
        """Move the producer's mark up to ``rec`` (never down)."""
        mark = self.marks.get(rec.key[0])
        if mark is None or rec.key[1:] > mark[:3]:
            self.marks[rec.key[0]] = (*rec.key[1:], rec.ts_us)
            if len(self.marks) > MAX_CURSOR_PRODUCERS:
                oldest = min(self.marks, key=lambda p: self.marks[p][3])
                del self.marks[oldest]

    def since_us(self, slack_us: int) -> int | None:
        """Where a resumed history starts: the oldest mark's time minus ``slack_us``, or the floor if later."""
        if not self.marks:
            return None
        since = min(m[3] for m in self.marks.values()) - slack_us
        return since if self.floor_us is None else max(since, self.floor_us)

    def copy(self) -> Cursor:
        return Cursor(dict(self.marks), self.floor_us)

    def encode(self) -> str:
        """The cursor as an opaque URL-safe string."""
        doc: dict[str, Any] = {"v": 1, "p": {p: list(m) for p, m in self.marks.items()}}
        if self.floor_us is not None:
            doc["t"] = self.floor_us
        raw = json.dumps(doc, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str | None) -> Cursor:
        """Parse a cursor from :meth:`encode`; an empty one for ``None``; :class:`FeedError` if malformed."""
        if text is None or text == "":
            return cls()
        if not isinstance(text, str) or len(text) > MAX_CURSOR_CHARS:
            raise FeedError("cursor must be a string from a previous frame")
        try:
            doc = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
            marks = doc["p"]
            if doc.get("v") != 1 or not isinstance(marks, dict) or len(marks) > MAX_CURSOR_PRODUCERS:
                raise ValueError("bad shape")
            out: dict[str, tuple[int, int, int, int]] = {}
            for producer, mark in marks.items():
                if not (
                    isinstance(mark, list)
                    and len(mark) == 4
                    and all(isinstance(x, int) and not isinstance(x, bool) for x in mark)
                ):
                    raise ValueError("bad mark")
                out[producer] = (mark[0], mark[1], mark[2], mark[3])
            floor = doc.get("t")
            if floor is not None and (not isinstance(floor, int) or isinstance(floor, bool)):
                raise ValueError("bad floor")
        except (ValueError, KeyError, TypeError, binascii.Error, AttributeError) as exc:
            raise FeedError(f"cursor is malformed ({exc})") from None
        return cls(out, floor)


def series_key(stream: str, rec: Rec) -> tuple[Any, ...]:
    """The series a record belongs to, for coalescing (the newest per series is kept)."""
    d = rec.data
    if stream == "metrics":
        return (d.get("name"), d.get("node"), d.get("rank"))
    if stream == "resources":
        return (d.get("name"), d.get("device"), d.get("node"), d.get("rank"))
    return (d.get("node"), d.get("rank"))


# -- subscriptions and clients ----------------------------------------------


class Subscription:
    """One ``subscribe``: its run, stream, filters, cursor and undelivered records."""

    def __init__(self, client: Client, sub_id: str, run: str, stream: str, filters: Filters, cursor: Cursor) -> None:
        self.client = client
        self.sub_id = sub_id
        self.run = run
        self.stream = stream
        self.filters = filters
        self.match = matcher(stream, filters)
        self.start_cursor = cursor.copy()
        #: What the client has once every queued frame is sent.
        self.cursor = cursor
        #: Identities of the records the history delivered: the live source may read them again
        #: (after the sink stored them); those copies are skipped.  Emptied as they come.
        self.history_keys: set[Key] = set()
        #: Identities of the newest live records queued (bounded): a message the stream worker
        #: forwarded twice (at-least-once after a restart) is sent once.
        self.live_keys: set[Key] = set()
        self.live_order: deque[Key] = deque()
        self.live = False
        #: The live source's recent window when the subscription came (read before it, maybe not stored).
        self.recent: list[Rec] = []
        #: Live records that arrived after the subscription, while its history was read.
        self.buffer: list[Rec] = []
        self.pending: list[Rec] = []
        self.frames: list[dict[str, Any]] = []
        self.dropping = False
        self.dropped = 0
        self.coalesced = 0
        self.ended = False

    @property
    def coalescing(self) -> bool:
        return self.stream in COALESCING


class Client:
    """One websocket connection's subscriptions; ``notify()`` is called when frames are ready."""

    def __init__(self, notify: Callable[[], None], max_pending_items: int = 10_000) -> None:
        self.notify = notify
        self.max_pending_items = max_pending_items
        self.subs: dict[str, Subscription] = {}
        #: ``error`` frames not sent yet.
        self.errors: list[dict[str, Any]] = []

    def take_frames(self) -> list[dict[str, Any]]:
        """Every frame ready to send, in order, and the queues emptied.

        Live records become ``live`` frames of at most :data:`FRAME_ITEMS`; a
        subscription that overflowed ends with its ``dropped`` frame.
        """
        out, self.errors = self.errors, []
        for sub in list(self.subs.values()):
            out.extend(sub.frames)
            sub.frames = []
            if sub.pending:
                out.extend(_frames(sub, "live", sub.pending))
                sub.pending = []
                if sub.coalesced:
                    out[-1]["coalesced"] = sub.coalesced
                    sub.coalesced = 0
            if sub.dropping:
                out.append({"sub": sub.sub_id, "type": "dropped", "count": sub.dropped, "cursor": sub.cursor.encode()})
                sub.ended = True
                del self.subs[sub.sub_id]
        return out

    def pending_items(self) -> int:
        return sum(len(s.pending) for s in self.subs.values())


def _frames(sub: Subscription, kind: str, recs: list[Rec], last: bool = False) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    for start in range(0, len(recs), FRAME_ITEMS):
        chunk = recs[start : start + FRAME_ITEMS]
        for rec in chunk:
            sub.cursor.advance(rec)
        frames.append(
            {"sub": sub.sub_id, "type": kind, "items": [r.data for r in chunk], "cursor": sub.cursor.encode()}
        )
    if last:
        if not frames:
            frames.append({"sub": sub.sub_id, "type": kind, "items": [], "cursor": sub.cursor.encode()})
        frames[-1]["last"] = True
    return frames


#: Live record identities remembered per subscription to drop repeats.
MAX_LIVE_KEYS = 2048


def _unsent(sub: Subscription, recs: list[Rec]) -> list[Rec]:
    """``recs`` less those already sent: copies of history records, and repeats of recent live ones."""
    held, sent, order = sub.history_keys, sub.live_keys, sub.live_order
    out = []
    for rec in recs:
        key = rec.key
        if key in sent:
            continue
        if key in held:
            held.discard(key)
            continue
        out.append(rec)
        sent.add(key)
        order.append(key)
        if len(order) > MAX_LIVE_KEYS:
            sent.discard(order.popleft())
    return out


class Hub:
    """Routes live records to subscriptions; one per server process."""

    def __init__(self) -> None:
        self._index: dict[tuple[str, str], set[Subscription]] = {}
        self.counts: dict[str, int] = {"published": 0, "delivered": 0, "dropped": 0, "coalesced": 0, "gaps": 0}

    def subscribe(self, client: Client, message: Mapping[str, Any], check_run: Callable[[str], str]) -> Subscription:
        """Register a ``subscribe`` message's subscription, buffering live records until its history is in.

        ``check_run`` validates the run id (raising :class:`FeedError`); raises
        :class:`FeedError` for any other malformed field or a reused ``sub`` id.
        """
        sub_id = message.get("sub")
        if not isinstance(sub_id, str) or not 0 < len(sub_id) <= MAX_SUB_ID_CHARS:
            raise FeedError(f"sub must be a non-empty string of at most {MAX_SUB_ID_CHARS} characters")
        if sub_id in client.subs:
            raise FeedError(f"sub {sub_id!r} is already subscribed; unsubscribe it first")
        run = message.get("run")
        if not isinstance(run, str):
            raise FeedError("run must be a run id")
        run = check_run(run)
        stream = message.get("stream")
        if stream not in STREAMS:
            raise FeedError(f"stream must be one of {', '.join(STREAMS)}")
        filters = parse_filters(stream, message.get("filters"))
        cursor = Cursor.decode(message.get("cursor"))
        sub = Subscription(client, sub_id, run, stream, filters, cursor)
        client.subs[sub_id] = sub
        self._index.setdefault((run, stream), set()).add(sub)
        return sub

    def unsubscribe(self, client: Client, sub_id: str) -> bool:
        """Forget one subscription; whether it existed."""
        sub = client.subs.pop(sub_id, None)
        if sub is None:
            return False
        self._forget(sub)
        return True

    def drop_client(self, client: Client) -> None:
        """Forget every subscription of a closed connection."""
        for sub in list(client.subs.values()):
            self._forget(sub)
        client.subs.clear()

    def _forget(self, sub: Sub) -> None:
        sub.ended = True
        subs = self._index.get((sub.run, sub.stream))
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._index[(sub.run, sub.stream)]

    def seed(self, sub: Subscription, recent: Iterable[Rec]) -> None:
        """Keep the records the live source saw before the subscription (its recent window) for the hand-off."""
        if not sub.live:
            sub.recent = [r for r in recent if sub.match(r)]

    def complete_history(
        self, sub: Subscription, history: list[Rec], window_start: Key | None, window_ts_us: int | None = None
    ) -> None:
        """Queue ``history`` merged with the recent and buffered records it lacks, in time order, and go live.

        ``history`` is in time order.  ``window_start``/``window_ts_us``: when
        the history was cut by its limit, the oldest record it kept; records of
        the recent window older than it lie outside the window asked for and
        are skipped.  Records buffered since the subscription are never
        skipped (only those the history or the cursor already holds): the
        client subscribed before they arrived, so they are live to it even if
        the sink stored them before the history was read and the limit cut them.
        """
        if sub.ended:
            return
        have = {r.key for r in history}
        fresh = [r for r in history if not sub.start_cursor.seen(r.key)]
        arrived = {r.key for r in sub.buffer}
        extra: list[Rec] = []
        cut = (window_ts_us, window_start) if window_start is not None and window_ts_us is not None else None
        for rec in sub.recent:
            if rec.key in have or rec.key in arrived or sub.start_cursor.seen(rec.key):
                continue
            if cut is not None and (rec.ts_us, rec.key) < cut:
                continue
            have.add(rec.key)
            extra.append(rec)
        for rec in sub.buffer:
            if rec.key in have or sub.start_cursor.seen(rec.key):
                continue
            have.add(rec.key)
            extra.append(rec)
        sub.recent = []
        sub.buffer = []
        sub.live = True
        out = fresh + extra
        if extra and sub.stream != "status":
            # A record buffered since the subscription may be older than the history's newest (stored
            # before the history was read, then cut by its limit): the frame stays in time order.  Not
            # status: its history is a snapshot of the run that the events after it must follow.
            out.sort(key=lambda r: (r.ts_us, r.key))
        sub.frames.extend(_frames(sub, "history", out, last=True))
        sub.history_keys = {r.key for r in fresh}
        self.counts["delivered"] += len(out)
        sub.client.notify()

    def wants(self, run: str, stream: str) -> bool:
        """Whether any subscription watches ``(run, stream)`` (records of other runs need no decoding)."""
        return (run, stream) in self._index

    def publish(self, run: str, stream: str, recs: list[Rec]) -> None:
        """Fan live records out to every subscription of ``(run, stream)``; never blocks."""
        subs = self._index.get((run, stream))
        self.counts["published"] += len(recs)
        if not subs:
            return
        for sub in list(subs):
            matched = [r for r in recs if sub.match(r)]
            if not matched:
                continue
            if not sub.live:
                sub.buffer.extend(matched)
                continue
            matched = _unsent(sub, matched)
            if matched:
                self._queue(sub, matched)

    def _queue(self, sub: Subscription, recs: list[Rec]) -> None:
        if sub.dropping:
            sub.dropped += len(recs)
            self.counts["dropped"] += len(recs)
            return
        limit = sub.client.max_pending_items
        sub.pending.extend(recs)
        if len(sub.pending) > limit and sub.coalescing:
            newest: OrderedDict[tuple[Any, ...], Rec] = OrderedDict()
            for rec in sub.pending:
                k = series_key(sub.stream, rec)
                newest.pop(k, None)
                newest[k] = rec
            gone = len(sub.pending) - len(newest)
            sub.coalesced += gone
            self.counts["coalesced"] += gone
            sub.pending = list(newest.values())
        if len(sub.pending) > limit:
            over = len(sub.pending) - limit
            del sub.pending[limit:]
            sub.dropping = True
            sub.dropped += over
            self.counts["dropped"] += over
            self._forget(sub)
        else:
            self.counts["delivered"] += len(recs)
        sub.client.notify()

    def mark_gap(self, sub: Subscription) -> None:
        """Tell ``sub``'s client, after its history, that records between history and live may be missing.

        A ``gap`` frame (the subscription goes on live): the hand-off could
        not make sure the history held everything the live source's recent
        window had let go (the sink had not stored it).  Counted in ``gaps``.
        """
        if sub.ended:
            return
        sub.frames.append({"sub": sub.sub_id, "type": "gap", "reason": "sink_behind", "cursor": sub.cursor.encode()})
        self.counts["gaps"] += 1
        sub.client.notify()

    def end_with_marker(self, sub: Subscription) -> None:
        """End ``sub`` once its queued frames are sent, with a ``dropped`` frame whose cursor resumes it."""
        sub.dropping = True
        self._forget(sub)
        sub.client.notify()

    def subscriptions(self) -> int:
        return sum(len(s) for s in self._index.values())


Sub = Subscription
