"""The sender's produce path: one request per cycle, per-kind order kept."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sdk_support import scaled

from producers.batch import Batch, Batcher
from producers.buffer import Buffer
from producers.options import Options
from producers.sender import MAX_REQUEST_BATCH_BYTES, Sender
from runstream import kafka
from runstream import settings as settings_mod
from runstream.topics import Topics


async def _read_values(bootstrap: str, topic: str, want: int) -> list[tuple[bytes | None, bytes | None]]:
    """(key, value) of the first ``want`` records of ``topic``, in offset order."""
    consumer = kafka.make_consumer(bootstrap, [topic], None)
    await consumer.start()
    got: list[tuple[bytes | None, bytes | None]] = []
    try:
        deadline = time.monotonic() + scaled(20)
        while len(got) < want and time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=200)).values():
                got += [(m.key, m.value) for m in messages]
    finally:
        await consumer.stop()
    return got


async def _produce(bootstrap: str, key: bytes, values: dict[str, list[bytes]]) -> dict[Any, Any]:
    producer = kafka.make_producer(bootstrap, fail_on_disconnect=True, linger_ms=0)
    await producer.start()
    try:
        parts = {t: await kafka.partition_for(producer, t, key) for t in values}
        return await kafka.produce(producer, key, {(t, parts[t]): v for t, v in values.items()})
    finally:
        await producer.stop()


def test_produce_delivers_each_partitions_values_in_order(sdk_broker: str, sdk_topics: Topics) -> None:
    """Values given to ``produce`` for two topics are acknowledged and stored in order, with the key."""
    logs, metrics = sdk_topics.raw("logs"), sdk_topics.raw("metrics")
    small = [b"one", b"two", b"three"]
    big = [bytes([65 + i]) * 3000 for i in range(3)]
    assert sum(map(len, big)) >= kafka.COMPRESS_MIN_BYTES > sum(map(len, small))  # one batch compressed, one not
    answers = asyncio.run(_produce(sdk_broker, b"run-1", {logs: big, metrics: small}))
    assert list(answers.values()) == [None, None]
    assert asyncio.run(_read_values(sdk_broker, logs, 3)) == [(b"run-1", v) for v in big]
    assert asyncio.run(_read_values(sdk_broker, metrics, 3)) == [(b"run-1", v) for v in small]


def test_produce_without_a_leader_answers_a_retriable_error(sdk_broker: str) -> None:
    """A partition with no known leader is answered ``LeaderNotAvailableError`` (retriable), not raised."""

    async def go() -> dict[Any, Any]:
        producer = kafka.make_producer(sdk_broker, linger_ms=0)
        await producer.start()
        try:
            return await kafka.produce(producer, b"k", {("no-such-topic-for-produce", 0): [b"x"]})
        finally:
            await producer.stop()

    (answer,) = asyncio.run(go()).values()
    assert isinstance(answer, kafka.KafkaError) and answer.retriable


def _sender(tmp_path: Any) -> Sender:
    settings = settings_mod.load({"kafka": "127.0.0.1:9", "data_dir": str(tmp_path)}, environ={})
    options = Options()
    return Sender(
        Buffer(options.bounds()),
        Batcher(producer="p", run="r", node="n", rank=0),
        settings=settings,
        options=options,
        key=b"r",
    )


def test_a_request_takes_one_batch_per_kind_and_no_envelope_overtakes(tmp_path: Any) -> None:
    """A kind whose envelopes exceed one request's batch leaves the rest, in order, for the next request."""
    sender = _sender(tmp_path)
    half = b"x" * (MAX_REQUEST_BATCH_BYTES // 2 + 1)
    sender._outbox.extend(
        [
            Batch("logs", 0, 0, 1, 1, half),
            Batch("metrics", 1, 0, 1, 1, b"m"),
            Batch("logs", 2, 1, 1, 1, half),
            Batch("logs", 3, 2, 1, 1, b"small"),
            Batch("metrics", 4, 1, 1, 1, b"m"),
        ]
    )
    first = sender._next_request()
    assert [b.seq for b in first] == [0, 1, 4]
    assert [b.seq for b in sender._outbox] == [2, 3]
    assert [b.seq for b in sender._next_request()] == [2, 3]
