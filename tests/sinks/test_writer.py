"""The sink writer against the real broker (Tansu) and real chDB: stored once, committed after."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from runstream import deadletter, kafka, tables, wire
from runstream.errors import StorageUnavailable
from runstream.topics import RAW_KINDS, Topics
from sinks.store import StorageError, Store
from sinks.writer import SinkWriter, WriterConfig
from tests.conftest import scaled
from tests.sinks.conftest import BASE_NS, envelope, log_records

N_LOG_ENVELOPES = 40
LINES_PER_ENVELOPE = 25


def _config(**overrides: Any) -> WriterConfig:
    base: dict[str, Any] = {
        "group_id": f"g-{uuid.uuid4().hex[:8]}",
        "max_age_ms": 50,
        "retry_backoff_min_s": 0.05,
        "retry_backoff_max_s": 0.4,
        "session_timeout_ms": int(scaled(2000)),
        "heartbeat_interval_ms": 200,
    }
    base.update(overrides)
    return WriterConfig(**base)


@pytest.fixture
async def topics(broker: str, topic_prefix: str) -> Topics:
    t = Topics(topic_prefix)
    await kafka.ensure_topics(broker, [t.clean(k) for k in RAW_KINDS] + [t.dlq], partitions=2)
    return t


async def _produce(broker: str, topics: Topics, runs: int = 2) -> dict[str, int]:
    """Clean envelopes, a garbage message and a dead letter; the rows each table should get."""
    producer = kafka.make_producer(broker)
    await producer.start()
    try:
        for n in range(N_LOG_ENVELOPES):
            run = f"run-{n % runs}"
            lines = [f"envelope {n} line {i}" for i in range(LINES_PER_ENVELOPE)]
            env = envelope(
                "logs",
                log_records(lines, start_ns=BASE_NS + n * 10**9),
                run=run,
                seq=n,
                producer=f"prod-{run}",
            )
            await producer.send_and_wait(topics.clean("logs"), wire.encode(env), key=run.encode())
        metrics = envelope(
            "metrics",
            [{"ts_ns": BASE_NS, "step": s, "values": {"loss": 1 / (s + 1), "acc": 0.5}} for s in range(30)],
            run="run-0",
            seq=1000,
        )
        await producer.send_and_wait(topics.clean("metrics"), wire.encode(metrics), key=b"run-0")
        runs_env = envelope("runs", [{"ts_ns": BASE_NS, "event": "start", "project": "p"}], run="run-0", seq=1001)
        await producer.send_and_wait(topics.clean("runs"), wire.encode(runs_env), key=b"run-0")
        await producer.send_and_wait(topics.clean("logs"), b"\x00not msgpack", key=b"run-0")
        await producer.send_and_wait(
            topics.dlq,
            deadletter.make(topic=topics.raw("logs"), partition=0, offset=5, reason="bad level", sample="x"),
        )
    finally:
        await producer.stop()
    return {
        tables.LOGS: N_LOG_ENVELOPES * LINES_PER_ENVELOPE,
        tables.METRICS: 60,
        tables.RUN_EVENTS: 1,
        tables.DEAD_LETTERS: 2,
    }


def _counts(store: Store) -> dict[str, int]:
    return {
        t: store.query_rows(f"SELECT count() FROM {store.database}.{t}")[0][0]
        for t in (tables.LOGS, tables.METRICS, tables.RUN_EVENTS, tables.DEAD_LETTERS)
    }


async def _distinct_logs(store: Store) -> int:
    rows = await store.call(
        store.query_rows,
        f"SELECT count() FROM (SELECT DISTINCT producer, seq, idx FROM {store.database}.logs)",
    )
    return int(rows[0][0])


class _Running:
    """A writer task, stopped (and its error re-raised) on exit."""

    def __init__(self, writer: SinkWriter) -> None:
        self.writer = writer
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> SinkWriter:
        self.task = asyncio.create_task(self.writer.run())
        return self.writer

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.wait_for(self.writer.stop(), scaled(20))
        assert self.task is not None
        await self.task


async def _eventually(check: Callable[[], Awaitable[bool]], timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + scaled(timeout_s)
    while not await check():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_every_row_is_stored_once_and_committed(broker: str, topics: Topics, store: Store) -> None:
    """All clean rows and dead letters are stored exactly once and every offset is committed."""
    expected = await _produce(broker, topics)
    config = _config()
    async with _Running(SinkWriter(store, broker, topics, config)) as writer:
        assert await writer.drain(scaled(20))
        assert writer.healthy()
        stats = writer.stats()
    assert _counts(store) == expected
    assert await _distinct_logs(store) == expected[tables.LOGS]
    assert await kafka.group_lag(broker, config.group_id, writer.topic_names) == 0
    assert stats["rows"][tables.LOGS] == expected[tables.LOGS] and stats["messages"] == N_LOG_ENVELOPES + 4
    assert stats["dead_letters"] == 2 and stats["last_flush_ts"] is not None
    reasons = [r[0] for r in store.query_rows(f"SELECT reason FROM {store.database}.dead_letters ORDER BY reason")]
    assert reasons[0] == "bad level" and "could not decode" in reasons[1]
    assert not writer.healthy()


async def test_replay_from_the_start_stores_nothing_twice(broker: str, topics: Topics, store: Store) -> None:
    """A second consumer group reading everything again adds no visible row (dedup tokens)."""
    expected = await _produce(broker, topics)
    async with _Running(SinkWriter(store, broker, topics, _config(fetch_max_records=7))) as writer:
        assert await writer.drain(scaled(20))
    async with _Running(SinkWriter(store, broker, topics, _config(fetch_max_records=5000))) as again:
        assert await again.drain(scaled(20))
        assert again.stats()["replayed_segments"] > 0
    assert _counts(store) == expected


class _Wrapped:
    """The real store with one method replaced: a fault at our storage boundary, not a mock."""

    def __init__(self, real: Store) -> None:
        self.real = real
        self.attempts = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class _CrashAfterFirstInsert(_Wrapped):
    """The process "dies" on its second insert, after the first one was stored."""

    def insert_arrow(self, table: str, arrow_table: Any, dedup_token: str | None = None) -> None:
        self.attempts += 1
        if self.attempts == 2:
            raise RuntimeError("simulated crash between insert and commit")
        self.real.insert_arrow(table, arrow_table, dedup_token)


async def test_crash_between_insert_and_commit_is_deduplicated(broker: str, topics: Topics, store: Store) -> None:
    """After a crash with inserts done but not committed, the restart cuts at the recorded spans."""
    expected = await _produce(broker, topics)
    config = _config(fetch_max_records=3)
    crashing = SinkWriter(_CrashAfterFirstInsert(store), broker, topics, config)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="simulated crash"):
        await asyncio.wait_for(crashing.run(), scaled(20))
    assert 0 < sum(_counts(store).values()) < sum(expected.values())
    restarted = SinkWriter(store, broker, topics, _config(group_id=config.group_id, fetch_max_records=5000))
    async with _Running(restarted) as writer:
        assert await writer.drain(scaled(20))
        assert writer.stats()["replayed_segments"] > 0
    assert _counts(store) == expected


class _Unavailable(_Wrapped):
    """ClickHouse is "down" until ``up`` is set."""

    up = False

    def insert_arrow(self, table: str, arrow_table: Any, dedup_token: str | None = None) -> None:
        self.attempts += 1
        if not self.up:
            raise StorageUnavailable("connection refused")
        self.real.insert_arrow(table, arrow_table, dedup_token)


async def test_offsets_are_committed_only_after_the_insert(broker: str, topics: Topics, store: Store) -> None:
    """While ClickHouse is down nothing is committed and retries back off; then all is stored."""
    expected = await _produce(broker, topics)
    down = _Unavailable(store)
    config = _config()
    writer = SinkWriter(down, broker, topics, config)  # type: ignore[arg-type]
    async with _Running(writer):
        await _eventually(lambda: _true(writer.stats()["retries"] >= 3), 10)
        await asyncio.sleep(0.5)
        assert await kafka.group_lag(broker, config.group_id, writer.topic_names) == N_LOG_ENVELOPES + 4
        assert _counts(store)[tables.LOGS] == 0
        assert down.attempts < 15  # capped exponential backoff, not a busy loop
        down.up = True
        assert await writer.drain(scaled(20))
    assert _counts(store) == expected
    assert await kafka.group_lag(broker, config.group_id, writer.topic_names) == 0


class _RefusesPoison(_Wrapped):
    """ClickHouse refuses any batch holding a line with POISON."""

    def insert_arrow(self, table: str, arrow_table: Any, dedup_token: str | None = None) -> None:
        if table == tables.LOGS and any("POISON" in line for line in arrow_table.column("line").to_pylist()):
            raise StorageError("Code: 27. DB::Exception: Cannot parse input (CANNOT_PARSE_INPUT)", 27)
        self.real.insert_arrow(table, arrow_table, dedup_token)


async def test_refused_rows_become_dead_letters_and_the_rest_is_stored(
    broker: str, topics: Topics, store: Store
) -> None:
    """A permanent refusal is bisected: only the bad row becomes a dead letter, with the reason."""
    lines = [f"line {i}" for i in range(50)]
    lines[33] = "POISON line"
    producer = kafka.make_producer(broker)
    await producer.start()
    await producer.send_and_wait(topics.clean("logs"), wire.encode(envelope("logs", log_records(lines))), key=b"run-1")
    await producer.stop()
    config = _config()
    writer = SinkWriter(_RefusesPoison(store), broker, topics, config)  # type: ignore[arg-type]
    async with _Running(writer):
        assert await writer.drain(scaled(20))
        assert writer.stats()["refused_rows"] == 1
    assert _counts(store)[tables.LOGS] == 49
    ((reason, sample, idx),) = store.query_rows(f"SELECT reason, sample, idx FROM {store.database}.dead_letters")
    assert "CANNOT_PARSE_INPUT" in reason and "POISON" in sample and idx == 33
    assert await kafka.group_lag(broker, config.group_id, writer.topic_names) == 0


async def test_stop_stores_what_was_read(broker: str, topics: Topics, store: Store) -> None:
    """stop() flushes and commits everything received before it returns."""
    expected = await _produce(broker, topics)
    config = _config(max_age_ms=60_000)
    writer = SinkWriter(store, broker, topics, config)
    async with _Running(writer):
        await _eventually(lambda: _true(writer.stats()["messages"] == N_LOG_ENVELOPES + 4), 20)
        assert _counts(store)[tables.LOGS] == 0
    assert _counts(store) == expected
    assert await kafka.group_lag(broker, config.group_id, writer.topic_names) == 0


async def _true(value: bool) -> bool:
    return value
