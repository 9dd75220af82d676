"""Offsets against a real broker: what a consumer group has stored up to, where a partition ends, the lag.

Tansu answers a partition's end offset as its last record batch's base offset
+ 1 (Kafka answers the last record's offset + 1).  The SDK sends a cycle's
envelopes of one kind as one record batch, so a lag computed from Tansu's
answer alone would read 0 while records of that batch are unprocessed, and
``runstream up`` would stop its workers (and its memory-only broker) on them.
"""

from __future__ import annotations

import uuid

from runstream import kafka


async def _commit(broker: str, group: str, offsets: dict[kafka.TopicPartition, int]) -> None:
    """Commit ``offsets`` for group ``group`` (what the sink does after storing), on assigned partitions."""
    consumer = kafka.make_consumer(broker, [], group)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


async def test_committed_offsets_are_what_the_group_committed(broker: str) -> None:
    """The answer holds each partition's last committed offset, and leaves out partitions never committed."""
    topic = f"co-{uuid.uuid4().hex[:10]}"
    await kafka.ensure_topics(broker, [topic], 2)
    group = f"g-{uuid.uuid4().hex[:8]}"
    first, second = kafka.TopicPartition(topic, 0), kafka.TopicPartition(topic, 1)
    async with _producer(broker) as producer:
        for n in range(5):
            await producer.send_and_wait(topic, b"x%d" % n, partition=0)
    await _commit(broker, group, {first: 3})
    await _commit(broker, group, {first: 5})
    assert await kafka.committed_offsets(broker, group, [first, second]) == {first: 5}


async def test_a_group_that_never_committed_has_no_offsets(broker: str) -> None:
    """A group that does not exist answers an empty map, not an error."""
    topic = f"co-{uuid.uuid4().hex[:10]}"
    await kafka.ensure_topics(broker, [topic], 1)
    tp = kafka.TopicPartition(topic, 0)
    assert await kafka.committed_offsets(broker, f"g-{uuid.uuid4().hex[:8]}", [tp]) == {}


async def _produce(broker: str, topic: str, counts: list[int]) -> None:
    """Produce ``counts[i]`` records as one record batch, for each i, to partition 0 of ``topic``."""
    producer = kafka.make_producer(broker, linger_ms=0)
    await producer.start()
    try:
        n = 0
        for count in counts:
            batch = producer.create_batch()
            for i in range(count):
                assert batch.append(key=b"k", value=b"v%d" % (n + i), timestamp=None) is not None
            await (await producer.send_batch(batch, topic, partition=0))
            n += count
    finally:
        await producer.stop()


async def _topic(broker: str, partitions: int = 1) -> str:
    topic = f"eo-{uuid.uuid4().hex[:10]}"
    await kafka.ensure_topics(broker, [topic], partitions)
    return topic


async def test_end_offset_counts_every_record_of_a_batch(broker: str) -> None:
    """Five records in one batch end at offset 5; a second batch of three at 8; an empty partition at 0."""
    topic = await _topic(broker, 2)
    first, second = kafka.TopicPartition(topic, 0), kafka.TopicPartition(topic, 1)
    await _produce(broker, topic, [5])
    assert await kafka.end_offsets(broker, [topic]) == {first: 5, second: 0}
    await _produce(broker, topic, [3])
    assert await kafka.end_offsets(broker, [topic]) == {first: 8, second: 0}


async def test_end_offset_of_single_record_batches(broker: str) -> None:
    """Batches of one record each: the end is the record count (what the broker answers already)."""
    topic = await _topic(broker)
    await _produce(broker, topic, [1, 1, 1])
    assert await kafka.end_offsets(broker, [topic]) == {kafka.TopicPartition(topic, 0): 3}


async def test_group_lag_counts_the_unprocessed_records_of_the_last_batch(broker: str) -> None:
    """A group that committed past the first record of the last batch still lags by the rest of it."""
    topic = await _topic(broker)
    tp = kafka.TopicPartition(topic, 0)
    group = f"g-{uuid.uuid4().hex[:8]}"
    await _produce(broker, topic, [4, 6])
    await _commit(broker, group, {tp: 6})
    assert await kafka.group_lag(broker, group, [topic]) == 4
    await _commit(broker, group, {tp: 10})
    assert await kafka.group_lag(broker, group, [topic]) == 0


class _producer:
    def __init__(self, broker: str) -> None:
        self.producer = kafka.make_producer(broker, linger_ms=0)

    async def __aenter__(self) -> kafka.AIOKafkaProducer:
        await self.producer.start()
        return self.producer

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.stop()
