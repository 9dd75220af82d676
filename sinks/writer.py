"""The ClickHouse sink: clean topics and dead letters into tables, in batches.

Offsets are committed only after ClickHouse accepted every row of what was
read.  A transient storage error backs off (capped) and retries the same
batch, with the same deduplication token, fetching nothing meanwhile; a
permanent error is narrowed down by bisection so that only the offending
rows become dead letters and the rest is stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from runstream import deadletter, kafka, tables, wire
from runstream.errors import DecodeError, StorageUnavailable
from runstream.topics import RAW_KINDS, Topics
from sinks.rows import Batch, ColumnBuffer
from sinks.store import StorageError, Store

log = logging.getLogger("runstream.sink")


@dataclass(frozen=True)
class WriterConfig:
    """When to flush, and how to back off."""

    max_rows: int = 200_000
    max_bytes: int = 64 * 1024 * 1024
    max_age_ms: int = 250
    group_id: str = "runstream-sink"
    fetch_max_records: int = 5_000
    retry_backoff_max_s: float = 5.0


class SinkWriter:
    """Consumes the clean topics and ``dlq`` and writes them to ClickHouse."""

    def __init__(self, store: Store, bootstrap: str, topics: Topics, config: WriterConfig | None = None) -> None:
        self.store = store
        self.bootstrap = bootstrap
        self.topics = topics
        self.config = config or WriterConfig()
        self.topic_names = [topics.clean(k) for k in RAW_KINDS] + [topics.dlq]
        self._consumer: Any = None
        self._batch = Batch()
        self._spans: dict[Any, tuple[int, int]] = {}
        self._batch_started = 0.0
        self._committed: dict[Any, int] = {}
        self._stopping = False
        self._stopped = asyncio.Event()
        self._last_poll = 0.0
        self._counts: dict[str, int] = {"messages": 0, "inserts": 0, "retries": 0, "dead_letters": 0,
                                        "decode_errors": 0, "commits": 0}
        self._rows: dict[str, int] = {}

    # -- lifecycle -------------------------------------------------------

    async def run(self) -> None:
        """Consume, batch and write until :meth:`stop`; raises only on a bug."""
        self._consumer = kafka.make_consumer(self.bootstrap, self.topic_names, self.config.group_id)
        await self._consumer.start()
        try:
            while not self._stopping:
                got = await self._consumer.getmany(timeout_ms=100, max_records=self.config.fetch_max_records)
                self._last_poll = time.monotonic()
                for tp, messages in got.items():
                    for message in messages:
                        self._add(message)
                    first = self._spans.get(tp, (messages[0].offset, 0))[0]
                    self._spans[tp] = (first, messages[-1].offset)
                    if not self._batch_started:
                        self._batch_started = time.monotonic()
                if self._due():
                    await self._flush()
            await self._flush()
        finally:
            await self._consumer.stop()
            self._stopped.set()

    async def stop(self) -> None:
        """Flush and commit what is buffered, then leave the consumer group."""
        self._stopping = True
        if self._consumer is not None:
            await self._stopped.wait()

    async def drain(self, timeout_s: float) -> bool:
        """Store everything on the assigned partitions up to their end offsets now; True if done in time."""
        deadline = time.monotonic() + timeout_s
        while self._consumer is None or not self._consumer.assignment():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        ends = await kafka.end_offsets(self.bootstrap, self.topic_names)
        target = {tp: end for tp, end in ends.items() if tp in self._consumer.assignment() and end > 0}
        while time.monotonic() < deadline:
            if all(self._committed.get(tp, 0) >= end for tp, end in target.items()):
                return True
            await asyncio.sleep(0.05)
        return False

    def healthy(self) -> bool:
        """The consumer is running and polled within the last 10 s."""
        return self._consumer is not None and not self._stopping and time.monotonic() - self._last_poll < 10

    def stats(self) -> dict[str, Any]:
        """Counters since start: messages, rows per table, inserts, retries, dead letters."""
        return {**self._counts, "rows": dict(self._rows)}

    # -- batching --------------------------------------------------------

    def _add(self, message: Any) -> None:
        self._counts["messages"] += 1
        if message.topic == self.topics.dlq:
            try:
                self._batch.add_dead_letter(deadletter.parse(message.value))
            except DecodeError as exc:
                self._own_dead_letter(message, f"unreadable dead letter: {exc}")
            return
        try:
            env = wire.decode(message.value)
        except DecodeError as exc:
            self._own_dead_letter(message, f"sink could not decode a clean message: {exc}")
            return
        saved = {name: {c: len(v) for c, v in buf.columns.items()} for name, buf in self._batch.buffers.items()}
        counts = {name: (buf.rows, buf.bytes) for name, buf in self._batch.buffers.items()}
        try:
            self._batch.add_envelope(env)
        except (KeyError, TypeError, ValueError) as exc:
            for name, buf in self._batch.buffers.items():  # roll the partial envelope back
                for col, length in saved[name].items():
                    del buf.columns[col][length:]
                buf.rows, buf.bytes = counts[name]
            self._own_dead_letter(message, f"clean record does not fit the table: {type(exc).__name__}: {exc}",
                                  env)

    def _own_dead_letter(self, message: Any, reason: str, env: wire.Envelope | None = None) -> None:
        self._counts["decode_errors"] += 1
        self._batch.add_dead_letter(deadletter.parse(deadletter.make(
            topic=message.topic, partition=message.partition, offset=message.offset, reason=reason,
            sample=message.value[:256] if message.value else message.value,
            producer=env.producer if env else "", seq=env.seq if env else -1, run=env.run if env else "")))

    def _due(self) -> bool:
        if not self._spans:
            return False
        return (self._batch.rows >= self.config.max_rows or self._batch.bytes >= self.config.max_bytes
                or (time.monotonic() - self._batch_started) * 1000 >= self.config.max_age_ms)

    # -- writing ---------------------------------------------------------

    async def _flush(self) -> None:
        if not self._spans:
            return
        span_id = ";".join(f"{tp.topic}:{tp.partition}:{a}-{b}"
                           for tp, (a, b) in sorted(self._spans.items(), key=lambda x: (x[0].topic, x[0].partition)))
        order = [t for t in self._batch.buffers if t != tables.DEAD_LETTERS] + [tables.DEAD_LETTERS]
        for name in order:
            buf = self._batch.buffers[name]
            if buf.rows:
                await self._insert(buf, f"{name}|{span_id}")
        offsets = {tp: last + 1 for tp, (_, last) in self._spans.items()}
        await self._consumer.commit(offsets)
        self._counts["commits"] += 1
        self._committed.update(offsets)
        self._batch.clear()
        self._spans.clear()
        self._batch_started = 0.0

    async def _insert(self, buf: ColumnBuffer, token: str) -> None:
        data = buf.to_arrow()
        try:
            await self._insert_retrying(buf.table, data, token)
        except StorageError as exc:
            log.error("ClickHouse refused a batch; isolating bad rows. table=%s rows=%d error=%s",
                      buf.table, data.num_rows, exc)
            await self._bisect(buf.table, data, token, str(exc))
        self._counts["inserts"] += 1
        self._rows[buf.table] = self._rows.get(buf.table, 0) + data.num_rows

    async def _insert_retrying(self, table: str, data: Any, token: str) -> None:
        """Insert, retrying transient errors with capped backoff; raises StorageError if refused."""
        backoff = 0.1
        while True:
            try:
                await self.store.call(self.store.insert_arrow, table, data, token)
                return
            except StorageUnavailable as exc:
                self._counts["retries"] += 1
                log.warning("ClickHouse unavailable; retrying. table=%s backoff_s=%.1f error=%s",
                            table, backoff, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.config.retry_backoff_max_s)

    async def _bisect(self, table: str, data: Any, token: str, error: str) -> None:
        """Insert what ClickHouse accepts; turn each row it refuses into a dead letter."""
        if data.num_rows == 1:
            if table == tables.DEAD_LETTERS:
                log.error("Dead letter refused by ClickHouse; dropped. error=%s", error)
                return
            row = data.to_pylist()[0]
            batch = Batch()
            batch.add_dead_letter(deadletter.parse(deadletter.make(
                topic=f"{self.topics.prefix}table.{table}", partition=-1, offset=-1,
                reason=f"ClickHouse refused the row: {error}", sample=row,
                producer=str(row.get("producer", "")), seq=int(row.get("seq", -1) or -1),
                index=int(row.get("idx", -1) or -1), run=str(row.get("run_id", "")))))
            letters = batch.buffers[tables.DEAD_LETTERS].to_arrow()
            await self._insert_retrying(tables.DEAD_LETTERS, letters, f"{token}|dl")
            self._counts["dead_letters"] += 1
            return
        half = data.num_rows // 2
        for part, suffix in ((data.slice(0, half), "a"), (data.slice(half), "b")):
            try:
                await self._insert_retrying(table, part, f"{token}|{suffix}")
            except StorageError as exc:
                await self._bisect(table, part, f"{token}|{suffix}", str(exc))
