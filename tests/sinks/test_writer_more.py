"""The sink writer: alerts stored once per key, and partitions handed over without re-reading."""

from __future__ import annotations

import asyncio
import uuid

from runstream import kafka, tables, wire
from runstream.topics import RAW_KINDS, Topics
from sinks.queries import Queries
from sinks.store import Store
from sinks.writer import SinkWriter
from tests.conftest import scaled
from tests.sinks.conftest import BASE_NS, envelope, log_records
from tests.sinks.test_writer import _config, _eventually, _Running


async def _topics(broker: str, prefix: str) -> Topics:
    t = Topics(prefix)
    await kafka.ensure_topics(broker, [t.clean(k) for k in RAW_KINDS] + [t.dlq, t.alerts], partitions=2)
    return t


def _alert(key: str, kind: str, i: int, ts_ns: int) -> dict[str, object]:
    return {
        "ts_ns": ts_ns,
        "kind": kind,
        "message": f"{kind} on rank 3",
        "node": "node-1",
        "rank": 3,
        "key": key,
        "severity": "error",
        "i": i,
        "metric": "loss",
        "value": float("nan"),
    }


async def test_alerts_are_stored_once_per_key(broker: str, topic_prefix: str, store: Store) -> None:
    """The same alert from a replay and from a second worker is listed once; distinct keys all are."""
    topics = await _topics(broker, topic_prefix)
    producer = kafka.make_producer(broker)
    await producer.start()
    try:
        for worker in ("streams-a", "streams-b"):
            for replay in range(2):
                recs = [_alert("k-nan", "nan_loss", 0, BASE_NS + replay), _alert(f"k-oom-{worker}", "oom", 1, BASE_NS)]
                env = envelope("alerts", recs, run="run-a", producer=worker, seq=0)
                await producer.send_and_wait(topics.alerts, wire.encode(env), key=b"run-a")
    finally:
        await producer.stop()
    async with _Running(SinkWriter(store, broker, topics, _config())) as writer:
        assert await writer.drain(scaled(20))
    alerts = Queries(store).alerts("run-a")["alerts"]
    assert sorted(a["key"] for a in alerts) == ["k-nan", "k-oom-streams-a", "k-oom-streams-b"]
    assert {a["kind"] for a in alerts} == {"nan_loss", "oom"} and alerts[0]["value"] == "NaN"
    assert alerts[0]["node"] == "node-1" and alerts[0]["rank"] == 3


async def test_revoked_partitions_are_stored_and_committed_before_moving(
    broker: str, topic_prefix: str, tmp_path: object, store: Store
) -> None:
    """When a second sink joins, the first stores and commits what it read, so nothing is read twice."""
    topics = await _topics(broker, topic_prefix)
    producer = kafka.make_producer(broker)
    await producer.start()
    n_envelopes, per = 20, 10
    try:
        for n in range(n_envelopes):
            run = f"run-{n % 4}"
            env = envelope("logs", log_records([f"line {n}.{i}" for i in range(per)]), run=run, seq=n, producer=run)
            await producer.send_and_wait(topics.clean("logs"), wire.encode(env), key=run.encode())
    finally:
        await producer.stop()
    group = f"g-{uuid.uuid4().hex[:8]}"
    # The first writer never flushes by age: only the revocation can store its rows.
    first = SinkWriter(store, broker, topics, _config(group_id=group, max_age_ms=600_000))
    second = SinkWriter(store, broker, topics, _config(group_id=group))
    async with _Running(first):

        async def read_all() -> bool:
            return first.stats()["messages"] >= n_envelopes

        await _eventually(read_all, 20)
        assert first.stats()["pending_rows"] == n_envelopes * per
        async with _Running(second):

            async def stored() -> bool:
                rows = await store.call(store.query_rows, f"SELECT count() FROM {store.database}.{tables.LOGS}")
                return int(rows[0][0]) >= n_envelopes * per

            await _eventually(stored, 30)
            await asyncio.sleep(0.2)
            assert first.stats()["revocations"] >= 1
            assert second.stats()["messages"] == 0
    rows = store.query_rows(f"SELECT count(), uniqExact(producer, seq, idx) FROM {store.database}.{tables.LOGS}")
    assert rows == [(n_envelopes * per, n_envelopes * per)]
