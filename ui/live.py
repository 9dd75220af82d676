"""The live feed's source: the ``clean.*`` and ``alerts`` topics, read from Kafka in this process.

A consumer with no group (manual assignment of every partition) so it never
takes partitions from the sink; live records
reach browsers without waiting for the sink's insert.  A message is decoded
only when someone watches its run: the clean topics are keyed by run id, so
a message of a run nobody subscribed to is kept as its raw bytes in a short
per-(run, stream) window of recent messages (:class:`ui.recent.Recent`) and costs no
decoding at all.  A message of a watched run is decoded once, published to
:meth:`ui.hub.Hub.publish` and kept decoded in the window.  A subscription
starts from that window (decoding what is still raw), so a record read here
before the subscription but not yet stored by the sink is not missed.  The
window must outlast the sink's insert delay; its bounds are ``recent_s``,
``recent_messages`` and ``recent_bytes``.

Where reading starts: on the first start, ``start_lookback_s`` back (by
message time) rather than at the end, so the window also holds what was
produced just before this process started and is not stored yet (the sink
of a fresh process is still joining its group); after losing the broker,
exactly where it stopped, so a subscriber misses nothing of the outage.

The hand-off: the sink reads the same topics on its own, and can store a
record before this source has read it (the source lags under load: a hundred
pages opening at once).  A history read then would hold that record while
older ones still come live after it, out of order.  So after reading a
history the feed waits (bounded) in :meth:`LiveSource.caught_up` until this
source has published every message the broker held after that read: every
stored record is then one the hub has, in the recent window or the
subscription's buffer, and the merge puts it in time order.  The wait is
bounded: a source that lags further (or is not reading) must not hold every
new page empty.  Past the bound the hand-off goes on and still loses and
repeats nothing (the source publishes what it reads later to the live
subscription, which skips copies of the history's records by identity); only
time order may break for the records read late, and a cursor taken from such
a history may be ahead of a late record (a client that reconnects before
that record comes skips it).  So the bound is on *progress*: a source that
keeps reading is waited for (up to ``catch_up_max_s``), one that does not
move for ``catch_up_timeout_s`` is not.

The window's edge: a record read here before a subscription came and
already pushed out of the recent window (``recent_s``/``recent_messages``/
``recent_bytes``; at 100k lines/s the 8 MB window holds under a second, less
than the sink's insert delay under load) is in neither the window nor, if the
sink has not stored it yet, the history.  So :class:`ui.recent.Recent` remembers per
(run, stream) and partition the offset after the newest message it let go
(:meth:`ui.recent.Recent.evicted`), and before reading the history the feed waits in
:meth:`LiveSource.stored` until the sink's consumer group (``sink_group_id``;
it commits only what it stored) has committed up to there: history, window
and live records then cover every record.  Usually nothing was let go, or
the offsets last seen cover it, and nothing is asked.  The wait is bounded
like ``caught_up`` (``stored_timeout_s`` without the sink progressing,
``stored_max_s`` in all); past it the client gets a ``gap`` frame after its
history, so a missing record is never silent.  The marks stay bounded: an
idle run's marks (its window emptied) are dropped once the sink's committed
offsets pass them, which this source asks for every ``rescan_s`` while such
marks wait.

Still assumed, not checked: a record older than where this source started
reading (``start_lookback_s``/``start_lookback_messages`` before its first
start) was stored by the sink before a subscription's history is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from runstream import kafka, wire
from runstream.errors import RunstreamError
from runstream.topics import Topics
from ui.hub import Hub, Rec
from ui.recent import Recent
from ui.records import alerts_of, records_of

log = logging.getLogger("runstream.live")

#: Record kind on the clean topics -> feed stream.
STREAM_OF_KIND = {"logs": "logs", "metrics": "metrics", "resources": "resources", "runs": "status"}


@dataclass(frozen=True)
class LiveConfig:
    """How long and how much of each run's recent messages to keep, and how often to look for new topics."""

    recent_s: float = 120.0
    recent_messages: int = 2_000
    recent_bytes: int = 8 * 1024 * 1024
    poll_ms: int = 50
    rescan_s: float = 5.0
    #: How long one fetch may wait at the broker for data.  Kept short: Tansu does not answer a
    #: waiting fetch when data arrives (it holds an empty one for about a quarter of this wait),
    #: so aiokafka's 500 ms default put up to half a second between the clean topic and the
    #: browser.  Not shorter either: every empty fetch costs this process CPU, all the time,
    #: watched or not.  Measured against Tansu (produce -> Hub.publish p50; CPU of the idle
    #: consumer): 10 ms 5 ms, 9.5 %; 40 ms 6 ms, 3.7 %; 60 ms 12 ms; 100 ms 28 ms, 1.7 %.
    fetch_max_wait_ms: int = 40
    #: On the first start, read back this far (by message time) instead of from the end offsets: a
    #: record produced just before this process started, not yet stored by the sink (a fresh sink
    #: is still joining its group), would otherwise be in neither a subscription's history nor its
    #: live records.  As long as ``recent_s``: the same promise, that the sink stores within it.
    start_lookback_s: float = 120.0
    #: ... but never more than this many messages back per partition (a longer backlog is the sink's
    #: to store; the feed would only lag behind it).
    start_lookback_messages: int = 20_000
    #: How long a subscription's hand-off waits for this source to read up to the broker's end
    #: (:meth:`LiveSource.caught_up`) while the source makes no progress, before going live anyway.
    #: A source that keeps reading is waited for longer (a hundred pages opening at once put it
    #: seconds behind), up to ``catch_up_max_s``.
    catch_up_timeout_s: float = 3.0
    #: The most a hand-off waits for this source in all, progressing or not.
    catch_up_max_s: float = 30.0
    #: The sink's consumer group (``WriterConfig.group_id``): it commits a partition's offset only
    #: after storing what it read, so its committed offset is "stored up to" (:meth:`LiveSource.stored`).
    sink_group_id: str = "runstream-sink"
    #: How long a hand-off waits for the sink to store what the recent window pushed out while the
    #: sink's committed offsets do not move (its insert delay under load is about a second) ...
    stored_timeout_s: float = 5.0
    #: ... and the most it waits in all, progressing or not; then the client gets a ``gap`` frame.
    stored_max_s: float = 30.0
    #: How often the sink's committed offsets are asked for while a hand-off waits on them (never otherwise).
    stored_poll_ms: int = 100


async def _wait_for_progress(
    behind: Callable[[], int],
    changed: Callable[[], asyncio.Event],
    timeout_s: float,
    give_up_at: float,
    going: Callable[[], bool] = lambda: True,
) -> bool:
    """Wait until ``behind()`` (messages still missing) is 0: True.  False once it has not fallen for
    ``timeout_s`` (each fall starts that bound again), at loop time ``give_up_at``, or when ``going()`` turns
    false.  ``changed()`` is the event set when ``behind()`` may have changed; it is taken before each look,
    so a change between the look and the wait is not missed."""
    loop = asyncio.get_running_loop()
    least = behind()
    stalled_at = loop.time() + timeout_s
    while True:
        event = changed()
        short = behind()
        if short == 0:
            return True
        if short < least:  # progress: the no-progress bound starts again
            least = short
            stalled_at = loop.time() + timeout_s
        left = min(stalled_at, give_up_at) - loop.time()
        if left <= 0 or not going():
            return False
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
            await asyncio.wait_for(event.wait(), left)


class LiveSource:
    """Reads the clean topics and ``alerts`` until :meth:`stop`, publishing to a hub."""

    def __init__(self, hub: Hub, bootstrap: str, topics: Topics, config: LiveConfig | None = None) -> None:
        self.hub = hub
        self.bootstrap = bootstrap
        self.config = config or LiveConfig()
        self.recent = Recent(self.config.recent_s, self.config.recent_messages, self.config.recent_bytes, self._decode)
        self._kinds = {topics.clean(k): k for k in STREAM_OF_KIND}
        self._alerts = topics.alerts
        self._stopping = False
        self._running = False
        #: Per partition, the offset of the next message to read: a restarted consumer resumes there.
        self._positions: dict[Any, int] = {}
        self._consumer: Any = None
        self._stream_topics = {topic: STREAM_OF_KIND[kind] for topic, kind in self._kinds.items()}
        self._stream_topics[self._alerts] = "alerts"
        #: Set (and replaced) whenever the read positions advanced.
        self._advanced = asyncio.Event()
        #: End-offset requests: the one in flight, and the next (which callers join until it is sent).
        self._ends_sent: asyncio.Task[dict[Any, int]] | None = None
        self._ends_next: asyncio.Task[dict[Any, int]] | None = None
        #: The sink group's committed offsets as last asked (they only grow), and who waits on them.
        self._committed: dict[Any, int] = {}
        self._committed_moved = asyncio.Event()
        self._stored_waiters: list[Mapping[Any, int]] = []
        self._committed_poller: asyncio.Task[None] | None = None
        #: A one-off ask for the committed offsets that idle runs' eviction marks wait on (see run()).
        self._refresher: asyncio.Future[None] | None = None
        self.counts = {"messages": 0, "records": 0, "undecodable": 0, "restarts": 0, "failures": 0}

    @property
    def topic_names(self) -> list[str]:
        return [*self._kinds, self._alerts]

    def running(self) -> bool:
        return self._running

    async def run(self) -> None:
        """Consume and publish until :meth:`stop`.

        Never raises (but ``CancelledError``): a lost broker, or any other
        failure (logged with its traceback), restarts the consumer a second
        later from where it had read, counted in ``counts["restarts"]``
        (``counts["failures"]`` for the non-Kafka ones).
        """
        while not self._stopping:
            consumer = kafka.make_consumer(
                self.bootstrap, [], None, auto_offset_reset="latest", fetch_max_wait_ms=self.config.fetch_max_wait_ms
            )
            try:
                await consumer.start()
                await self._consume(consumer)
            except kafka.KafkaError as exc:
                self.counts["restarts"] += 1
                log.warning("Live feed lost the broker; retrying. error=%s", exc)
                await asyncio.sleep(1.0)
            except Exception:
                # Whatever went wrong, the feed must not go quiet for good: every page would stop
                # updating with nothing said.  Resume from the positions read so far.
                self.counts["restarts"] += 1
                self.counts["failures"] += 1
                log.exception("Live feed failed; restarting it. restarts=%d", self.counts["restarts"])
                await asyncio.sleep(1.0)
            finally:
                self._running = False
                self._consumer = None
                await consumer.stop()

    async def _consume(self, consumer: Any) -> None:
        known: set[Any] = set()
        new = await kafka.assign_partitions(consumer, self.topic_names, known, at_end=True)
        await self._start_positions(consumer, new)
        self._consumer = consumer
        self._running = True
        loop = asyncio.get_running_loop()
        rescan_at = loop.time() + self.config.rescan_s
        while not self._stopping:
            if not known or loop.time() >= rescan_at:
                await kafka.assign_partitions(consumer, self.topic_names, known, at_end=False)
                rescan_at = loop.time() + self.config.rescan_s
                idle_marks = self.recent.prune(self._committed)
                if idle_marks and (self._refresher is None or self._refresher.done()):
                    # Idle runs' eviction marks go once the sink is known to have stored past them.
                    self._refresher = asyncio.ensure_future(self._ask_committed(list(idle_marks)))
            if not known:
                await asyncio.sleep(self.config.poll_ms / 1000)
                continue
            batch = await consumer.getmany(timeout_ms=self.config.poll_ms, max_records=5000)
            for tp, messages in batch.items():
                for message in messages:
                    self._positions[tp] = message.offset + 1
                    self._accept(tp, message.offset, message.key, message.value)
                    # Let connection writers drain between messages: a large fetch must not fill
                    # every client's queue before any of them had a chance to send.
                    await asyncio.sleep(0)
            if batch:
                self._advanced.set()
                self._advanced = asyncio.Event()

    def stats(self) -> dict[str, Any]:
        """Whether it is reading now, and its counters (for the health report)."""
        return {"running": self._running, **self.counts}

    async def caught_up(self, stream: str) -> bool:
        """Wait until every message of ``stream``'s topic that the broker holds now is published.

        Whether it caught up.  The wait is bounded: it gives up when this
        source's read positions on that topic have not moved towards those
        end offsets for ``catch_up_timeout_s`` (or it stops reading, or the
        broker cannot be asked), and after ``catch_up_max_s`` in all; a source
        that lags but keeps reading is waited for.  Called after a history was
        read: its records are then all ones this source has read (see the
        module's note on the hand-off, and what a False answer costs: time
        order, never a record).
        """
        loop = asyncio.get_running_loop()
        timeout_s = self.config.catch_up_timeout_s
        give_up_at = loop.time() + max(timeout_s, self.config.catch_up_max_s)
        try:
            ends = await asyncio.wait_for(asyncio.shield(self._end_offsets()), timeout_s)
        except (kafka.KafkaError, OSError, TimeoutError, asyncio.TimeoutError):
            return False
        wanted = {tp: end for tp, end in ends.items() if self._stream_topics.get(tp.topic) == stream}

        def behind() -> int:
            return sum(max(0, end - self._positions.get(tp, 0)) for tp, end in wanted.items())

        return await _wait_for_progress(
            behind, lambda: self._advanced, timeout_s, give_up_at, going=lambda: self._running
        )

    def _end_offsets(self) -> asyncio.Task[dict[Any, int]]:
        """The broker's end offsets of every partition read, asked *after* this call.

        Callers share one request: those that come while one is in flight join
        the next, which is sent when that one is answered (an answer to a
        request sent before the caller came could predate its history).
        """
        if self._ends_next is None:
            self._ends_next = asyncio.ensure_future(self._ask_ends(self._ends_sent))
            # Its callers may have given up waiting: retrieve a failure so it is not logged as lost.
            self._ends_next.add_done_callback(lambda t: t.cancelled() or t.exception())
        return self._ends_next

    async def _ask_ends(self, previous: asyncio.Task[dict[Any, int]] | None) -> dict[Any, int]:
        if previous is not None:
            await asyncio.wait([previous])
        self._ends_sent, self._ends_next = self._ends_next, None
        consumer = self._consumer
        if consumer is None or not self._running:
            raise kafka.KafkaError("the live source is not reading")
        partitions = [tp for tp in consumer.assignment() if tp in self._positions]
        return dict(await consumer.end_offsets(partitions)) if partitions else {}

    async def _start_positions(self, consumer: Any, partitions: list[Any]) -> None:
        """Seek ``partitions`` (just assigned, at their end) to where reading starts.

        A partition read before (the consumer was restarted after losing the
        broker) resumes at its next offset; one never read starts
        ``start_lookback_s`` back by message time, at most
        ``start_lookback_messages`` before its end, or at its end when nothing
        is that recent.  Blocks on the broker's offset answers.
        """
        fresh = []
        for tp in partitions:
            if tp in self._positions:
                consumer.seek(tp, self._positions[tp])
            else:
                fresh.append(tp)
        if not fresh:
            return
        found = {}
        if self.config.start_lookback_s > 0:
            since_ms = int((time.time() - self.config.start_lookback_s) * 1000)
            found = await consumer.offsets_for_times({tp: since_ms for tp in fresh})
        for tp in fresh:
            end = await consumer.position(tp)
            hit = found.get(tp)
            # Nothing that recent: Kafka answers None, Tansu offset 0 with timestamp -1.
            if hit is not None and hit.timestamp >= 0 and hit.offset < end:
                start = max(hit.offset, end - self.config.start_lookback_messages)
                consumer.seek(tp, start)
                end = start
            self._positions[tp] = end

    def _accept(self, tp: Any, offset: int, key: bytes | None, value: bytes | None) -> None:
        self.counts["messages"] += 1
        topic = tp.topic
        if topic == self._alerts:
            try:
                run, recs = alerts_of(value)
            except (RunstreamError, ValueError, TypeError):
                self.counts["undecodable"] += 1
                return
            self._keep(run, "alerts", value or b"", recs, tp, offset)
            return
        stream = STREAM_OF_KIND.get(self._kinds.get(topic, ""), "")
        run = key.decode("utf-8", "replace") if key else ""
        if not stream or not value:
            return
        if run and not self.hub.wants(run, stream):
            self.recent.add(run, stream, value, None, tp, offset)  # nobody watches this run: keep the bytes
            return
        try:
            envelope = wire.decode(value)
        except (RunstreamError, ValueError, TypeError):
            self.counts["undecodable"] += 1  # the sink dead-letters it; the feed just skips it
            return
        if STREAM_OF_KIND.get(envelope.kind) != stream:
            return
        self._keep(envelope.run, stream, value, records_of(envelope), tp, offset)

    def _keep(self, run: str, stream: str, value: bytes, recs: list[Rec], tp: Any, offset: int) -> None:
        if not run or not recs:
            return
        self.counts["records"] += len(recs)
        self.recent.add(run, stream, value, recs, tp, offset)
        self.hub.publish(run, stream, recs)

    def _decode(self, value: bytes) -> list[Rec]:
        """A kept message's records (none when it does not decode)."""
        try:
            return records_of(wire.decode(value))
        except (RunstreamError, ValueError, TypeError):
            self.counts["undecodable"] += 1
            return []

    async def stored(self, needed: Mapping[Any, int]) -> bool:
        """Wait until the sink has stored every message below ``needed`` (per partition, from :meth:`Recent.evicted`).

        Whether it has: the sink group's committed offset on each partition
        reached ``needed``.  True at once, without asking Kafka, when the
        offsets last seen already cover it (they only grow).  Otherwise one
        poller shared by every waiter asks every ``stored_poll_ms`` while
        anyone waits; the wait gives up when the committed offsets have not
        moved towards ``needed`` for ``stored_timeout_s`` (the sink is stuck,
        gone, or the broker cannot be asked), and after ``stored_max_s`` in all.
        """
        if self._short(needed) == 0:
            return True
        loop = asyncio.get_running_loop()
        timeout_s = self.config.stored_timeout_s
        give_up_at = loop.time() + max(timeout_s, self.config.stored_max_s)
        self._stored_waiters.append(needed)
        if self._committed_poller is None or self._committed_poller.done():
            self._committed_poller = asyncio.ensure_future(self._poll_committed())
        try:
            return await _wait_for_progress(
                lambda: self._short(needed), lambda: self._committed_moved, timeout_s, give_up_at
            )
        finally:
            self._stored_waiters.remove(needed)

    def _short(self, needed: Mapping[Any, int]) -> int:
        """How many messages below ``needed`` the sink has not committed yet (as last asked)."""
        committed = self._committed
        return sum(max(0, end - committed.get(tp, 0)) for tp, end in needed.items())

    async def _poll_committed(self) -> None:
        """Ask the sink group's committed offsets every ``stored_poll_ms`` while :meth:`stored` has waiters."""
        interval_s = self.config.stored_poll_ms / 1000
        while self._stored_waiters:
            await self._ask_committed(list({tp: None for needed in self._stored_waiters for tp in needed}))
            await asyncio.sleep(interval_s)

    async def _ask_committed(self, partitions: list[Any]) -> None:
        """Ask the sink group's committed offsets on ``partitions`` once; what grew is kept, and waiters woken.

        Never raises: a broker that cannot answer within ``stored_timeout_s``
        leaves the offsets as they were (waiters give up on their own bounds,
        and a hand-off that does becomes a visible gap).
        """
        try:
            got = await asyncio.wait_for(
                kafka.committed_offsets(self.bootstrap, self.config.sink_group_id, partitions),
                self.config.stored_timeout_s,
            )
        except (kafka.KafkaError, OSError, TimeoutError, asyncio.TimeoutError) as exc:
            log.debug("Could not read the sink's committed offsets. error=%s", exc)
            return
        for tp, offset in got.items():
            if offset > self._committed.get(tp, -1):
                self._committed[tp] = offset
        moved, self._committed_moved = self._committed_moved, asyncio.Event()
        moved.set()

    async def stop(self) -> None:
        """Stop reading (:meth:`run` returns) and asking for the sink's committed offsets."""
        self._stopping = True
        for task in (self._committed_poller, self._refresher):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
