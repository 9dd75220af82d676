"""The ClickHouse sink: clean topics and dead letters into tables, in batches.

Delivery is at-least-once and storage exactly-once:

* offsets are committed only after ClickHouse accepted everything read up
  to them;
* each partition's messages are cut into segments (:mod:`sinks.segments`),
  each inserted with a deduplication token derived from its offsets and
  content, and its span is recorded before the insert, so that messages read
  again after a crash are cut the same way and their inserts are no-ops;
* a transient storage error (:class:`~runstream.errors.StorageUnavailable`)
  backs off (capped, exponential) and retries the same insert; nothing is
  committed and at most one more fetch is taken meanwhile, so the buffers
  stay bounded;
* a flush runs while the next fetch is turned into rows (the insert itself
  runs on the store's write lane without the GIL), one flush at a time;
  rows wait ``max_age_ms`` for it while the stream is quiet and longer, up to
  ``busy_max_age_ms``, while flushes take long or the consumer is behind the
  log end (:func:`flush_age_ms`): every insert has a fixed cost, so a busy
  sink makes fewer, larger ones;
* a permanent error is narrowed down by bisection: ClickHouse stores the
  rows it accepts and each row it refuses becomes a ``dead_letters`` row
  with ClickHouse's reason;
* when the group takes partitions away (another sink joined), what was read
  from them is stored and committed first (a rebalance listener), so the
  new owner starts where this one stopped instead of reading it again.

Besides the clean topics and ``dlq`` it consumes ``alerts`` (at most one row
per run and alert key: the table replaces repeats).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from runstream import kafka, tables
from runstream.errors import StorageUnavailable
from runstream.topics import RAW_KINDS, Topics
from sinks.rows import ColumnBuffer
from sinks.segments import PartitionLog, Segment, Span
from sinks.store import StorageError, Store

log = logging.getLogger("runstream.sink")

#: Spans loaded per query when a partition is first read.
_PLAN_ROWS = 10_000
#: Permanent errors that blame the schema or the server, not the rows: stop, never dead-letter.
_FATAL_CODES = frozenset({16, 47, 60, 81, 164, 192, 193, 497, 516})
_HEALTHY_POLL_S = 10.0
SINK_SPANS = tables.SINK_SPANS


@dataclass(frozen=True)
class WriterConfig:
    """When to flush, how to back off, and the consumer group (settings built at the edge)."""

    max_rows: int = 200_000
    max_bytes: int = 64 * 1024 * 1024
    max_age_ms: int = 250
    #: While the sink is busy, a row may wait longer: the next flush starts no sooner than
    #: ``busy_age_factor`` times the last flush's duration after its oldest row arrived, and
    #: when the consumer is behind the log end it waits ``busy_max_age_ms``; never longer.
    #: Each insert costs chDB a fixed ~10-25 ms of CPU per table (more for ``metrics``, whose
    #: views write two more parts) plus merging the parts later, so under a sustained stream
    #: larger, fewer inserts cost far less CPU per row (bench/sink.py); a quiet stream's small
    #: flushes take a few tens of ms and keep ``max_age_ms``.
    busy_max_age_ms: int = 1000
    busy_age_factor: float = 2.0
    group_id: str = "runstream-sink"
    retry_backoff_max_s: float = 5.0
    retry_backoff_min_s: float = 0.1
    fetch_max_records: int = 5_000
    #: How long a replayed segment waits for the rest of its recorded span.
    replay_wait_s: float = 5.0
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    #: How long the broker may hold a fetch that finds nothing new.  Tansu answers such a
    #: fetch only after about a quarter of this wait even when records arrive meanwhile
    #: (measured one hop: 500 ms -> p50 128 ms, 50 ms -> 9 ms), so it is a direct part of freshness.
    fetch_max_wait_ms: int = 50


def flush_age_ms(config: WriterConfig, last_flush_s: float, behind: bool) -> float:
    """How long the oldest buffered row may wait before a flush, in milliseconds.

    ``max_age_ms`` for a quiet stream; ``busy_age_factor`` times the last
    flush's duration when that is longer; ``busy_max_age_ms`` when the consumer
    is ``behind`` the log end; never less than ``max_age_ms`` nor more than the
    larger of the two limits.
    """
    cap = max(config.max_age_ms, config.busy_max_age_ms)
    if behind:
        return float(cap)
    return float(min(cap, max(config.max_age_ms, config.busy_age_factor * last_flush_s * 1000)))


class _Stopping(Exception):
    """The writer was asked to stop while ClickHouse was unavailable."""


class _Revocations(kafka.ConsumerRebalanceListener):  # type: ignore[misc]
    """Stores and commits what was read from partitions before the group moves them."""

    def __init__(self, writer: SinkWriter) -> None:
        self.writer = writer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.writer._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        return None


class SinkWriter:
    """Consumes every clean topic and ``dlq`` and writes them to ClickHouse.

    ``run()`` until ``stop()``; ``drain()`` stores what the broker holds now.
    """

    def __init__(self, store: Store, bootstrap: str, topics: Topics, config: WriterConfig | None = None) -> None:
        self.store = store
        self.bootstrap = bootstrap
        self.topics = topics
        self.config = config or WriterConfig()
        self._kinds: dict[str, str | None] = {topics.clean(k): k for k in RAW_KINDS}
        self._kinds[topics.alerts] = "alerts"
        self._kinds[topics.dlq] = None
        self.topic_names = list(self._kinds)
        self._consumer: Any = None
        self._parts: dict[Any, PartitionLog] = {}
        self._committed: dict[Any, int] = {}
        self._stopping = False
        self._done = asyncio.Event()
        self._running = False
        self._last_poll_s = 0.0
        self._counts: dict[str, int] = dict.fromkeys(
            (
                "messages",
                "inserts",
                "retries",
                "dead_letters",
                "refused_rows",
                "discarded",
                "commits",
                "commit_failures",
                "flushes",
                "replayed_segments",
                "resets",
                "revocations",
            ),
            0,
        )
        self._rows: dict[str, int] = {}
        #: Seconds spent inserting into each table, summed (retries and isolation included).
        self._insert_s: dict[str, float] = {}
        self._last_flush_ns: int | None = None
        #: Seconds the last flush that inserted something took (sets the next flush's age).
        self._last_flush_took_s = 0.0
        #: Seconds spent in flushes (inserting, recording spans, committing), summed.
        self._flush_s = 0.0
        #: One flush at a time: the main loop's and a revocation's.
        self._flush_lock = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------

    async def run(self) -> None:
        """Consume, batch and write until :meth:`stop`.

        Raises :class:`StorageError` when ClickHouse refuses something no row
        can be blamed for (a missing table); nothing is committed then.
        """
        self._running = True
        # The flush in flight.  Its inserts run on the store's write lane and chDB releases
        # the GIL while inserting, so the next fetch and its row building overlap them
        # (bench/storage.py: end to end ~1.5x).  One flush at a time, and no fetch while
        # one is in flight and more is due (buffers stay bounded while ClickHouse is down).
        flushing: asyncio.Task[None] | None = None
        try:
            await self._start_consumer()
            while not self._stopping:
                batch = await self._consumer.getmany(timeout_ms=100, max_records=self.config.fetch_max_records)
                self._last_poll_s = time.monotonic()
                await self._accept(batch)
                if flushing is not None and (flushing.done() or self._due()):
                    task, flushing = flushing, None
                    await task  # raises what the flush raised
                if flushing is None and self._due():
                    flushing = asyncio.create_task(self._flush(), name="sink-flush")
            if flushing is not None:
                task, flushing = flushing, None
                await task
            await self._flush(final=True)
        except _Stopping:
            log.warning("Stopped while ClickHouse was unavailable; unstored messages are read again.")
        finally:
            if flushing is not None and not flushing.done():
                flushing.cancel()
                with contextlib.suppress(asyncio.CancelledError, _Stopping, StorageError, StorageUnavailable):
                    await flushing
            if self._consumer is not None:
                try:
                    await self._consumer.stop()
                except kafka.KafkaError as exc:
                    log.warning("Consumer did not stop cleanly. error=%s", exc)
            self._running = False
            self._done.set()

    async def stop(self) -> None:
        """Flush and commit what is buffered, then leave the consumer group."""
        self._stopping = True
        if self._running:
            await self._done.wait()

    async def drain(self, timeout_s: float) -> bool:
        """Store what the assigned partitions hold now; ``False`` if not committed in time.

        The end offsets are taken when called; needs :meth:`run` running in
        another task.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._consumer is None or not self._consumer.assignment():
            if loop.time() > deadline or self._done.is_set():
                return False
            await asyncio.sleep(0.05)
        ends = await kafka.end_offsets(self.bootstrap, self.topic_names)
        targets = {tp: end for tp, end in ends.items() if tp in self._consumer.assignment() and end > 0}
        asked: set[Any] = set()
        while loop.time() <= deadline and not self._done.is_set():
            for tp in targets:
                if tp not in self._committed and tp not in asked:
                    asked.add(tp)  # nothing read from it yet: maybe a previous run stored it all
                    try:
                        committed = await self._consumer.committed(tp)
                    except kafka.KafkaError:
                        asked.discard(tp)
                        continue
                    if committed is not None and tp not in self._committed:
                        self._committed[tp] = committed
            if all(self._committed.get(tp, 0) >= end for tp, end in targets.items()):
                return True
            await asyncio.sleep(0.05)
        return False

    def healthy(self) -> bool:
        """The consumer is running and polled within the last 10 s."""
        return (
            self._running
            and self._consumer is not None
            and not self._stopping
            and time.monotonic() - self._last_poll_s < _HEALTHY_POLL_S
        )

    def stats(self) -> dict[str, Any]:
        """Counters since start: messages, rows per table, inserts, retries, dead letters."""
        pending = sum(p.pending_rows() for p in self._parts.values())
        return {
            **self._counts,
            "rows": dict(self._rows),
            "pending_rows": pending,
            "last_flush_ts": self._last_flush_ns,
            "flush_s": round(self._flush_s, 3),
            "insert_s": {table: round(seconds, 3) for table, seconds in self._insert_s.items()},
        }

    async def _start_consumer(self) -> None:
        backoff = self.config.retry_backoff_min_s
        while not self._stopping:
            consumer = kafka.make_consumer(
                self.bootstrap,
                self.topic_names,
                self.config.group_id,
                session_timeout_ms=self.config.session_timeout_ms,
                heartbeat_interval_ms=self.config.heartbeat_interval_ms,
                max_poll_interval_ms=max(300_000, self.config.session_timeout_ms),
                fetch_max_wait_ms=self.config.fetch_max_wait_ms,
                listener=_Revocations(self),
            )
            try:
                await consumer.start()
            except kafka.KafkaError as exc:
                log.warning(
                    "Broker unavailable; retrying. bootstrap=%s backoff_s=%.1f error=%s",
                    self.bootstrap,
                    backoff,
                    exc,
                )
                await consumer.stop()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.config.retry_backoff_max_s)
                continue
            self._consumer = consumer
            self._last_poll_s = time.monotonic()
            return
        raise _Stopping

    # -- reading ---------------------------------------------------------

    async def _accept(self, batch: dict[Any, list[Any]]) -> None:
        assigned = self._consumer.assignment()
        for tp in [tp for tp in self._parts if tp not in assigned]:
            # Revoked: the new owner reads these from the committed offset.
            del self._parts[tp]
        now_s = time.monotonic()
        for tp, messages in batch.items():
            part = self._parts.get(tp)
            if part is None:
                part = self._parts[tp] = PartitionLog(tp.topic, tp.partition, self._kinds.get(tp.topic))
            for message in messages:
                if message.offset <= part.last_offset:
                    # The consumer went back to the committed offset (a rebalance): what is
                    # buffered from there on arrives again.
                    self._counts["resets"] += part.forget_from(message.offset)
                if part.needs_plan(message.offset):
                    await self._load_plan(part, message.offset)
                self._counts["messages"] += 1
                part.add(message.offset, message.timestamp, message.value, now_s)

    async def _load_plan(self, part: PartitionLog, offset: int) -> None:
        db = self.store.database
        rows = await self._retrying(
            self.store.query_rows,
            f"SELECT first_offset, last_offset, first_digest FROM {db}.{SINK_SPANS} "
            "WHERE topic = {topic:String} AND partition = {partition:Int32} "
            "AND last_offset >= {offset:Int64} "
            f"ORDER BY first_offset LIMIT {_PLAN_ROWS}",
            {"topic": part.topic, "partition": part.partition, "offset": offset},
        )
        part.set_plan([Span(int(a), int(b), str(d)) for a, b, d in rows], truncated=len(rows) >= _PLAN_ROWS)

    # -- writing ---------------------------------------------------------

    def _due(self) -> bool:
        parts = self._parts.values()
        if sum(p.pending_rows() for p in parts) >= self.config.max_rows:
            return True
        if sum(p.pending_bytes() for p in parts) >= self.config.max_bytes:
            return True
        oldest = min((t for p in parts if (t := p.oldest_s()) is not None), default=None)
        return oldest is not None and (time.monotonic() - oldest) * 1000 >= self._age_limit_ms()

    def _age_limit_ms(self) -> float:
        """How long the oldest buffered row may wait now (see ``WriterConfig.busy_max_age_ms``)."""
        return flush_age_ms(self.config, self._last_flush_took_s, self._behind())

    def _behind(self) -> bool:
        """Whether the broker held more than was read, at the last fetch, for a partition with rows buffered."""
        consumer = self._consumer
        if consumer is None:
            return False
        for tp, part in self._parts.items():
            if part.segments:
                end = consumer.highwater(tp)
                if end is not None and end > part.last_offset + 1:
                    return True
        return False

    async def _on_revoked(self, revoked: set[Any]) -> None:
        """Store and commit what was read from ``revoked``, then forget those partitions.

        Bounded by the session timeout: if ClickHouse does not accept the rows
        by then, the partitions are let go uncommitted and the new owner reads
        them again (the recorded spans keep the inserts deduplicated).
        """
        mine = {tp for tp in revoked if tp in self._parts}
        if not mine or self._consumer is None:
            return
        self._counts["revocations"] += 1
        try:
            await asyncio.wait_for(self._flush(final=True, only=mine), self.config.session_timeout_ms / 1000)
        except (asyncio.TimeoutError, _Stopping):
            log.warning("Partitions revoked before their rows were stored; the new owner reads them again.")
        except kafka.KafkaError as exc:
            log.warning("Could not commit revoked partitions. error=%s", exc)
        for tp in mine:
            self._parts.pop(tp, None)

    async def _flush(self, final: bool = False, only: set[Any] | None = None) -> None:
        """Insert every ready segment (of ``only`` those partitions), then commit the offsets after them."""
        async with self._flush_lock:
            started = time.monotonic()
            try:
                if await self._flush_locked(final, only):
                    self._last_flush_took_s = time.monotonic() - started
            finally:
                self._flush_s += time.monotonic() - started

    async def _flush_locked(self, final: bool, only: set[Any] | None) -> bool:
        """Insert and commit what is ready; whether there was anything."""
        now_s = time.monotonic()
        ready: list[tuple[PartitionLog, list[Segment]]] = []
        for tp, part in list(self._parts.items()):
            if only is not None and tp not in only:
                continue
            segs = part.flushable(now_s, self.config.replay_wait_s, give_up=final)
            if segs:
                ready.append((part, segs))
        if not ready:
            return False
        new_spans = [
            (s.topic, s.partition, s.first, s.last, s.first_digest) for _, segs in ready for s in segs if not s.recorded
        ]
        if new_spans:
            started = time.monotonic()
            await self._retrying(
                self.store.insert_values,
                SINK_SPANS,
                new_spans,
                ["topic", "partition", "first_offset", "last_offset", "first_digest"],
            )
            self._spent_inserting(SINK_SPANS, started)
        for _, segs in ready:
            for seg in segs:
                if seg.recorded:
                    self._counts["replayed_segments"] += 1
                for table in seg.buffer.tables():
                    await self._insert(seg, table, seg.buffer.to_arrow(table))
        offsets = {kafka.TopicPartition(part.topic, part.partition): segs[-1].last + 1 for part, segs in ready}
        assigned = self._consumer.assignment()
        to_commit = {tp: off for tp, off in offsets.items() if tp in assigned}
        if to_commit:
            try:
                await self._consumer.commit(to_commit)
                self._counts["commits"] += 1
                self._committed.update(to_commit)
            except kafka.KafkaError as exc:
                # Stored but not committed: read again later, and deduplicated by token.
                self._counts["commit_failures"] += 1
                log.warning("Commit failed; the stored messages will be read again. error=%s", exc)
        for part, segs in ready:
            part.remove(segs)
        self._counts["flushes"] += 1
        self._last_flush_ns = time.time_ns()
        return True

    async def _insert(self, seg: Segment, table: str, data: Any) -> None:
        started = time.monotonic()
        try:
            await self._insert_or_isolate(seg, table, data)
        finally:
            self._spent_inserting(table, started)

    def _spent_inserting(self, table: str, started: float) -> None:
        self._insert_s[table] = self._insert_s.get(table, 0.0) + time.monotonic() - started

    async def _insert_or_isolate(self, seg: Segment, table: str, data: Any) -> None:
        try:
            await self._retrying(self.store.insert_arrow, table, data, seg.token(table))
        except StorageError as exc:
            if exc.code in _FATAL_CODES:
                raise
            log.error(
                "ClickHouse refused a batch; isolating the bad rows. table=%s rows=%d error=%s",
                table,
                data.num_rows,
                exc,
            )
            await self._bisect(seg, table, data, seg.token(table), str(exc))
            return
        self._counts["inserts"] += 1
        self._rows[table] = self._rows.get(table, 0) + data.num_rows
        if table == tables.DEAD_LETTERS:
            self._counts["dead_letters"] += data.num_rows

    async def _bisect(self, seg: Segment, table: str, data: Any, token: str, error: str) -> None:
        """Store the rows ClickHouse accepts; turn each one it refuses into a dead letter."""
        if data.num_rows == 1:
            await self._refuse_row(seg, table, data, token, error)
            return
        half = data.num_rows // 2
        for start, part in ((0, data.slice(0, half)), (half, data.slice(half))):
            sub_token = f"{token}:{start}+{part.num_rows}"
            try:
                await self._retrying(self.store.insert_arrow, table, part, sub_token)
            except StorageError as exc:
                if exc.code in _FATAL_CODES:
                    raise
                await self._bisect(seg, table, part, sub_token, str(exc))
                continue
            self._counts["inserts"] += 1
            self._rows[table] = self._rows.get(table, 0) + part.num_rows

    async def _refuse_row(self, seg: Segment, table: str, data: Any, token: str, error: str) -> None:
        self._counts["refused_rows"] += 1
        row = data.to_pylist()[0]
        if table == tables.DEAD_LETTERS:
            self._counts["discarded"] += 1
            log.error("ClickHouse refused a dead letter; discarded. topic=%s error=%s", seg.topic, error)
            return
        letter = ColumnBuffer()
        letter.add_refusal(
            ts_ns=int(row["ingest_ts"].timestamp() * 1e6) * 1000 if row.get("ingest_ts") else 0,
            topic=seg.topic,
            partition=seg.partition,
            offset=-1,
            reason=f"ClickHouse refused the row for table {table} (offsets {seg.first}-{seg.last}): {error}",
            sample=row,
            producer=str(row.get("producer", "")),
            seq=int(row.get("seq", -1)),
            index=int(row.get("idx", -1)),
            run=str(row.get("run_id", "")),
        )
        try:
            await self._retrying(
                self.store.insert_arrow,
                tables.DEAD_LETTERS,
                letter.to_arrow(tables.DEAD_LETTERS),
                f"{token}:refused",
            )
        except StorageError as exc:
            self._counts["discarded"] += 1
            log.error(
                "ClickHouse refused a row and its dead letter; discarded. table=%s error=%s",
                table,
                exc,
            )
            return
        self._counts["dead_letters"] += 1

    async def _retrying(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` on the store thread, retried with capped backoff while storage is down."""
        backoff = self.config.retry_backoff_min_s
        while True:
            try:
                return await self.store.call(fn, *args)
            except StorageUnavailable as exc:
                if self._stopping:
                    raise _Stopping from exc
                self._counts["retries"] += 1
                log.warning("ClickHouse unavailable; retrying. backoff_s=%.1f error=%s", backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.config.retry_backoff_max_s)
