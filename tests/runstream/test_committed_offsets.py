"""``kafka.committed_offsets`` against a real broker: what a consumer group has stored up to."""

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


class _producer:
    def __init__(self, broker: str) -> None:
        self.producer = kafka.make_producer(broker, linger_ms=0)

    async def __aenter__(self) -> kafka.AIOKafkaProducer:
        await self.producer.start()
        return self.producer

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.stop()
