"""The SDK's librdkafka transport against a real broker: order, key, partition, and failing fast."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from sdk_support import free_port, scaled, start_broker, stop_broker

from producers.transport import SendError, Transport
from runstream import kafka
from runstream.topics import Topics


async def _read(bootstrap: str, topic: str, want: int) -> list[tuple[int, bytes | None, bytes | None]]:
    """(partition, key, value) of the first ``want`` records of ``topic``, in offset order per partition."""
    consumer = kafka.make_consumer(bootstrap, [topic], None)
    await consumer.start()
    got: list[tuple[int, bytes | None, bytes | None]] = []
    try:
        deadline = time.monotonic() + scaled(20)
        while len(got) < want and time.monotonic() < deadline:
            for tp, messages in (await consumer.getmany(timeout_ms=200)).items():
                got += [(tp.partition, m.key, m.value) for m in messages]
    finally:
        await consumer.stop()
    return got


def test_send_delivers_in_order_with_the_key(sdk_broker: str, sdk_topics: Topics) -> None:
    """Values for two topics are acknowledged and stored in order, with the key; big ones compressed and read back."""
    logs, metrics = sdk_topics.raw("logs"), sdk_topics.raw("metrics")
    small = [b"one", b"two", b"three"]
    big = [bytes([65 + i]) * 30_000 for i in range(3)]
    transport = Transport(sdk_broker)
    try:
        messages = [(logs, b"run-1", v) for v in big] + [(metrics, b"run-1", v) for v in small]
        assert transport.send(messages) == [None] * 6
        assert transport.pending == 0
    finally:
        transport.close()
    assert [(k, v) for _, k, v in asyncio.run(_read(sdk_broker, logs, 3))] == [(b"run-1", v) for v in big]
    assert [(k, v) for _, k, v in asyncio.run(_read(sdk_broker, metrics, 3))] == [(b"run-1", v) for v in small]


def test_a_key_goes_to_the_partition_the_server_side_producers_pick(sdk_broker: str) -> None:
    """murmur2, as Kafka's Java client and aiokafka: every producer of a run writes to one partition."""
    from aiokafka.partitioner import DefaultPartitioner

    topic = f"part-{uuid.uuid4().hex[:8]}"
    asyncio.run(kafka.ensure_topics(sdk_broker, [topic], 6))
    keys = [f"run-{i}".encode() for i in range(24)]
    transport = Transport(sdk_broker)
    try:
        assert transport.send([(topic, k, k) for k in keys]) == [None] * len(keys)
    finally:
        transport.close()
    placed = {value: partition for partition, _, value in asyncio.run(_read(sdk_broker, topic, len(keys)))}
    expected = {k: DefaultPartitioner()(k, list(range(6)), list(range(6))) for k in keys}
    assert placed == expected
    assert len(set(placed.values())) > 1  # the keys do spread: the test can tell partitioners apart


def test_answers_come_from_serve_without_waiting(sdk_broker: str, sdk_topics: Topics) -> None:
    """produce() returns at once; serve() hands out the answers that came, wait() all of them."""
    topic = sdk_topics.raw("metrics")
    transport = Transport(sdk_broker)
    answers: list[SendError | None] = []
    try:
        for i in range(5):
            transport.produce(topic, b"k", b"v%d" % i, answers.append)
        assert transport.pending == 5 and answers == []
        deadline = time.monotonic() + scaled(10)
        while transport.pending and time.monotonic() < deadline:
            time.sleep(0.02)
            transport.serve()
        assert answers == [None] * 5
        transport.produce(topic, b"k", b"v5", answers.append)
        transport.wait()
        assert answers == [None] * 6 and transport.pending == 0
    finally:
        transport.close()


def test_a_topic_the_broker_does_not_know_is_a_retriable_answer_not_an_exception(sdk_broker: str) -> None:
    """No topic is created by a produce; the message is answered (retriable) within the request timeout."""
    topic = f"no-such-topic-{uuid.uuid4().hex[:8]}"
    transport = Transport(sdk_broker, request_timeout_ms=1000)
    try:
        (answer,) = transport.send([(topic, b"k", b"x")])
    finally:
        transport.close()
    assert isinstance(answer, SendError) and answer.retriable
    assert asyncio.run(kafka.end_offsets(sdk_broker, [topic])) == {}


def test_an_unreachable_broker_fails_a_probe_and_a_send_fast() -> None:
    """Connection refused: the probe and the send fail in well under their timeouts (no waiting them out)."""
    transport = Transport(f"127.0.0.1:{free_port()}", request_timeout_ms=20_000)
    try:
        began = time.monotonic()
        with pytest.raises(SendError) as failed:
            transport.probe(20.0)
        assert failed.value.retriable
        (answer,) = transport.send([("t", b"k", b"x")])
        assert isinstance(answer, SendError) and answer.retriable
        assert time.monotonic() - began < 5.0
    finally:
        transport.close()


def test_a_broker_killed_while_messages_wait_answers_them_at_once(tmp_path: Path) -> None:
    """The connection lost under waiting messages: they are taken back (retriable), not held for the timeout."""
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    broker = start_broker(port, tmp_path / "broker.log", ["k.metrics"])
    transport = Transport(bootstrap, request_timeout_ms=30_000, retry_initial_s=0.1, retry_max_s=0.5)
    try:
        assert transport.send([("k.metrics", b"k", b"before")]) == [None]
        broker.kill()
        broker.wait(10)
        began = time.monotonic()
        answers = transport.send([("k.metrics", b"k", b"during")])
        assert isinstance(answers[0], SendError) and answers[0].retriable
        assert time.monotonic() - began < 10.0
    finally:
        transport.close()
        stop_broker(broker)


ABANDONED_IN_CHILD = r"""
import gc, os, sys
from producers.transport import Transport
t = Transport(sys.argv[1], request_timeout_ms=60_000)
t.produce("no-such-topic-at-fork", b"k", b"x", lambda err: None)  # still waiting at the fork
pid = os.fork()
if pid == 0:
    producer = t._producer
    held = sys.getrefcount(producer)
    t.abandon()
    raised = sys.getrefcount(producer) == held + 1
    del t, producer
    gc.collect()  # the producer is not destroyed: its count stays above what anything will drop
    os._exit(0 if raised else 3)
_, status = os.waitpid(pid, 0)
t.close()
print("CHILD", os.waitstatus_to_exitcode(status))
"""


def test_abandoned_in_a_forked_child_the_producer_is_never_destroyed(tmp_path: Path) -> None:
    """Destroying the parent's librdkafka producer in a forked child can wait forever on threads the child
    lacks (seen here with messages waiting): abandon() keeps its reference count up for good."""
    script = tmp_path / "abandon.py"
    script.write_text(ABANDONED_IN_CHILD)
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, str(script), f"127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=scaled(60),
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert proc.returncode == 0, proc.stderr
    assert "CHILD 0" in proc.stdout


@pytest.mark.parametrize(("initial_s", "most_s"), [(3.0, 1.0), (2.0, 30.0), (0.0001, 0.0001)])
def test_any_backoff_options_make_a_transport(initial_s: float, most_s: float) -> None:
    """Options librdkafka would refuse as they are (a first backoff above the most) are brought within its
    bounds: a configuration error would leave the SDK retrying a producer it cannot make."""
    transport = Transport(f"127.0.0.1:{free_port()}", retry_initial_s=initial_s, retry_max_s=most_s)
    transport.close()


def test_errors_of_an_outage_nobody_polled_during_do_not_take_back_later_messages(tmp_path: Path) -> None:
    """Connection failures queued while nothing was waiting (the broker was down and came back) are old news:
    a message produced after the broker returned is delivered, not purged as if its connection were lost."""
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    broker = start_broker(port, tmp_path / "old.log", ["s.metrics"])
    transport = Transport(bootstrap, retry_initial_s=0.1, retry_max_s=0.2)
    try:
        assert transport.send([("s.metrics", b"k", b"before")]) == [None]
        broker.kill()
        broker.wait(10)
        time.sleep(1.0)  # failed reconnects queue their errors; nothing polls
        broker = start_broker(port, tmp_path / "new.log", ["s.metrics"])
        answers: list[SendError | None] = []
        transport.produce("s.metrics", b"k", b"after", answers.append)
        deadline = time.monotonic() + scaled(15)
        while transport.pending and time.monotonic() < deadline:
            time.sleep(0.05)
            transport.serve()  # what the sender does when it wakes
        assert answers == [None]
    finally:
        transport.close()
        stop_broker(broker)
