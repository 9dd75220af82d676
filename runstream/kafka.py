"""The Kafka transport: the one module that imports aiokafka.

Thin factories with the options every stage agrees on (loopback defaults,
explicit topic creation, manual commits for consumers that store data) and
a lag probe used by ``runstream up`` to drain before it stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition, codec
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.codec import has_zstd
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
)
from aiokafka.record import default_records

__all__ = [
    "AIOKafkaConsumer",
    "AIOKafkaProducer",
    "ConsumerRebalanceListener",
    "KafkaConnectionError",
    "KafkaError",
    "KafkaTimeoutError",
    "TopicPartition",
    "assign_partitions",
    "ensure_topics",
    "end_offsets",
    "group_lag",
    "make_consumer",
    "make_producer",
    "wait_for_broker",
    "zstd_encode",
]


#: How producers compress record batches (``None`` where cramjam is missing: aiokafka has no zstd then).
COMPRESSION: str | None = "zstd" if has_zstd() else None
#: The zstd level of every record batch this process compresses.  aiokafka 0.14 has no setting for it and
#: takes the broker's default, 3; on batches of real log lines level 1 is faster and also smaller (per line,
#: 0.16 against 0.21 µs of CPU to compress, ratio 9.5 against 9.0), and as fast to decompress.
ZSTD_LEVEL = 1


def zstd_encode(payload: Any, level: int | None = None) -> bytes:
    """``payload`` compressed as this process's producers compress a zstd record batch (:data:`ZSTD_LEVEL`)."""
    return codec.zstd_encode(payload, ZSTD_LEVEL if level is None else level)


def _use_zstd_level() -> None:
    """Make aiokafka's record batch builders (its C extension's and the pure-Python one) compress at
    :data:`ZSTD_LEVEL`: they call ``zstd_encode`` through their module globals.  A builder that does not is
    left alone (a later aiokafka may have its own setting)."""
    modules: list[Any] = [default_records]
    try:
        from aiokafka.record._crecords import default_records as c_records  # noqa: PLC0415 - optional extension
    except ImportError:  # pure-Python aiokafka (AIOKAFKA_NO_EXTENSIONS)
        pass
    else:
        modules.append(c_records)
    for module in modules:
        if getattr(module, "zstd_encode", None) is codec.zstd_encode:
            module.zstd_encode = zstd_encode


_use_zstd_level()


def make_producer(bootstrap: str, **options: Any) -> AIOKafkaProducer:
    """A producer with acks from the leader, batching suited to envelopes, and zstd.

    zstd (``cramjam``, a base dependency) shrinks a batch of log lines about
    fourfold; measured on Tansu (``bench/broker.py``) it costs the producer
    about what sending the uncompressed bytes costs, and the broker and every
    consumer far less.  (The SDK sends with librdkafka instead:
    :mod:`producers.transport`.)
    """
    opts: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "acks": 1,
        "linger_ms": 5,
        "max_request_size": 16 * 1024 * 1024,
        "request_timeout_ms": 15_000,
        "compression_type": COMPRESSION,
    }
    opts.update(options)
    return AIOKafkaProducer(**opts)


def make_consumer(
    bootstrap: str,
    topics: Sequence[str],
    group_id: str | None,
    listener: ConsumerRebalanceListener | None = None,
    **options: Any,
) -> AIOKafkaConsumer:
    """A consumer that never auto-commits: the caller commits after storing.

    ``listener`` hears of partitions assigned and revoked by the group (its
    ``on_partitions_revoked`` runs before the partitions move, so the caller
    can store and commit what it read from them).
    """
    opts: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_partition_fetch_bytes": 16 * 1024 * 1024,
        "fetch_max_bytes": 64 * 1024 * 1024,
    }
    opts.update(options)
    if listener is None:
        return AIOKafkaConsumer(*topics, **opts)
    consumer = AIOKafkaConsumer(**opts)
    consumer.subscribe(list(topics), listener=listener)
    return consumer


async def wait_for_broker(bootstrap: str, timeout_s: float) -> None:
    """Return once the broker answers metadata; raise ``KafkaConnectionError`` after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except KafkaError:
            if loop.time() > deadline:
                raise KafkaConnectionError(f"broker at {bootstrap} did not answer in {timeout_s:.0f} s") from None
            await asyncio.sleep(0.2)
        finally:
            await admin.close()


async def ensure_topics(bootstrap: str, names: Iterable[str], partitions: int) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in missing]
                )
            except TopicAlreadyExistsError:
                pass
        return missing
    finally:
        await admin.close()


async def end_offsets(bootstrap: str, topics: Sequence[str], timeout_s: float = 5.0) -> dict[TopicPartition, int]:
    """The end offset (last record's offset + 1) of every partition of ``topics``.

    Not the broker's answer alone: Tansu answers its last record *batch*'s
    base offset + 1, so a partition whose last batch holds five records
    would read four short, and a lag computed from it 0 while records of
    that batch are unprocessed.  Each non-empty partition's last batch is
    read (:func:`_last_record_ends`) to count them; against Kafka, which
    answers the true end, that read changes nothing.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100, max_partition_fetch_bytes=1 << 20
    )
    await consumer.start()
    try:
        parts = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        if not parts:
            await consumer._client.force_metadata_update()  # noqa: SLF001 - first metadata fetch
            parts = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        if not parts:
            return {}
        ends = dict(await consumer.end_offsets(parts))
        return await _last_record_ends(consumer, ends, timeout_s)
    finally:
        await consumer.stop()


async def _last_record_ends(
    consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int], timeout_s: float
) -> dict[TopicPartition, int]:
    """``ends`` (as the broker answered) raised to each partition's last record offset + 1.

    Reads each non-empty partition from its answered end - 1: the broker
    returns the record batch holding that offset, whose records beyond it
    are what the answer left out.  A partition that returns nothing within
    ``timeout_s`` (the record was compacted or deleted, or is a control
    record) keeps the broker's answer.  ``consumer`` is left assigned to
    those partitions.
    """
    out = dict(ends)
    pending = {tp: end for tp, end in ends.items() if end > 0}
    if not pending:
        return out
    consumer.assign(list(pending))
    for tp, end in pending.items():
        consumer.seek(tp, end - 1)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while pending and loop.time() < deadline:
        got = await consumer.getmany(*pending, timeout_ms=max(1, int((deadline - loop.time()) * 1000)))
        for tp, records in got.items():
            if records and tp in pending:
                out[tp] = max(pending.pop(tp), records[-1].offset + 1)
    return out


async def committed_offsets(
    bootstrap: str, group_id: str, partitions: Sequence[TopicPartition]
) -> dict[TopicPartition, int]:
    """The offsets consumer group ``group_id`` has committed on ``partitions``.

    A partition the group never committed is left out.  The partitions are
    named, never "all the group has": Tansu cannot answer that form.  Asks the group's
    coordinator over a connection of its own (opened and closed here, so a
    caller holds no connection while nobody needs the answer); raises
    ``KafkaError`` or ``OSError`` when the broker cannot be asked.
    """
    if not partitions:
        return {}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    await admin.start()
    try:
        got = await admin.list_consumer_group_offsets(group_id, partitions=list(partitions))
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in got.items() if meta.offset >= 0}


async def group_lag(bootstrap: str, group_id: str, topics: Sequence[str]) -> int:
    """Messages in ``topics`` not yet committed by consumer group ``group_id``."""
    ends = await end_offsets(bootstrap, topics)
    committed = await committed_offsets(bootstrap, group_id, list(ends))
    lag = 0
    for tp, end in ends.items():
        lag += max(0, end - committed.get(tp, 0))
    return lag


async def assign_partitions(
    consumer: AIOKafkaConsumer, topics: Sequence[str], known: set[TopicPartition], at_end: bool
) -> list[TopicPartition]:
    """Assign (no consumer group) every partition of ``topics`` not in ``known``; return the new ones.

    A reader that must not take partitions from a group (the UI's live feed)
    uses this.  New partitions start at their end offset when ``at_end``,
    else at their beginning (a topic created after the reader started holds
    only new records).  ``known`` is updated in place.
    """
    await consumer._client.force_metadata_update()  # noqa: SLF001 - see topics created since start
    found = {TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or ())}
    new = sorted(found - known)
    if not new:
        return []
    # assign() replaces the assignment and forgets positions: keep those already read.
    kept = {tp: await consumer.position(tp) for tp in known}
    known.update(new)
    consumer.assign(sorted(known))
    for tp, offset in kept.items():
        consumer.seek(tp, offset)
    if at_end:
        await consumer.seek_to_end(*new)
    else:
        await consumer.seek_to_beginning(*new)
    return new
