"""The SDK's Kafka transport: librdkafka (``confluent-kafka``), driven from the sender's plain thread.

Why librdkafka and not aiokafka (which the server side uses): the SDK runs
inside the training process, and what its sending costs that process is the
CPU its thread holds the GIL for.  librdkafka's network I/O, batching and
compression run in its own C threads, outside the GIL: ``python
bench/overhead.py`` measured 364-384 µs of sender-thread CPU per sending
cycle with it, against 641-983 µs for the aiokafka sender on its asyncio loop
in the same sitting.

What the sender relies on:

* :meth:`Transport.produce` queues an envelope (keyed by run id,
  partitioned with murmur2 like Kafka's Java client and aiokafka, so every
  producer of a run picks the same partition) and returns at once; its
  answer (None once acknowledged, else a :class:`SendError` saying whether
  sending again can work) comes from :meth:`Transport.serve` (no waiting:
  the sender takes answers when it wakes up anyway, which costs no wake-up
  of its own) or :meth:`Transport.wait` (for a flush).  A kind's envelopes
  keep their order: one request in flight per connection.
* A lost connection is reported at once (librdkafka's error callback): the
  envelopes still waiting are purged and answered with a retriable error,
  so the sender can back off and spool rather than wait out the request
  timeout.  librdkafka reads metadata afresh after a reconnect and holds a
  record for a topic the broker does not know (a restarted memory-only
  broker) until the topic exists: it never sends on the metadata of a
  broker that died.
* :meth:`Transport.probe` asks the broker for metadata: the cheap "is it
  there" of an outage's retries.
* Nothing is written to the process's stderr: librdkafka's log goes to a
  logger with no handler, its errors to the error callback.

Not fork-safe (librdkafka's threads do not survive a fork): a forked child
must not use or destroy the transport; :meth:`Transport.abandon` keeps it
from ever being destroyed there.
"""

from __future__ import annotations

import ctypes
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

#: librdkafka's log, when it has one to give: no handler, not propagated (the sender logs one line per outage).
_RDKAFKA_LOG = logging.getLogger("runstream.sdk.librdkafka")
_RDKAFKA_LOG.propagate = False
_RDKAFKA_LOG.addHandler(logging.NullHandler())

#: Delivery and client errors that say "the broker could not be reached (or not in time)": sending again can work.
_RETRIABLE_CODES = frozenset(
    {
        KafkaError._MSG_TIMED_OUT,  # noqa: SLF001 - librdkafka's local error codes are underscored
        KafkaError._TIMED_OUT,  # noqa: SLF001
        KafkaError._TRANSPORT,  # noqa: SLF001
        KafkaError._ALL_BROKERS_DOWN,  # noqa: SLF001
        KafkaError._PURGE_QUEUE,  # noqa: SLF001
        KafkaError._PURGE_INFLIGHT,  # noqa: SLF001
        KafkaError._UNKNOWN_TOPIC,  # noqa: SLF001
        KafkaError._UNKNOWN_PARTITION,  # noqa: SLF001
        KafkaError._RESOLVE,  # noqa: SLF001
        KafkaError._WAIT_COORD,  # noqa: SLF001
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NETWORK_EXCEPTION,
    }
)
#: Client errors that mean the connection to the broker is gone.
_CONNECTION_CODES = frozenset({KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError._RESOLVE})  # noqa: SLF001

#: What hears a message's answer: None once acknowledged, else why not.
Answer = Callable[["SendError | None"], None]

#: How long one wait for acknowledgements blocks in librdkafka before the sender looks again.
POLL_SLICE_S = 0.05
#: How long one metadata request of a probe may take before the probe looks for a failed connection.
PROBE_SLICE_S = 0.1


class SendError(Exception):
    """An envelope (or a probe) that did not reach the broker; ``retriable`` says whether sending again can work."""

    def __init__(self, message: str, *, name: str = "SendError", retriable: bool = True) -> None:
        super().__init__(message)
        self.name = name
        self.retriable = retriable

    @classmethod
    def of(cls, err: KafkaError) -> SendError:
        retriable = err.code() in _RETRIABLE_CODES or bool(err.retriable())
        return cls(err.str(), name=err.name(), retriable=retriable)

    @classmethod
    def raised(cls, exc: Exception) -> SendError:
        """What librdkafka raised (``KafkaException`` carrying a ``KafkaError``, or ``BufferError``), as an answer."""
        err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        return cls.of(err) if err is not None else cls(str(exc), retriable=True)


class Transport:
    """One librdkafka producer, used from one thread (see the module docstring)."""

    def __init__(
        self,
        bootstrap: str,
        *,
        client_id: str = "runstream-sdk",
        request_timeout_ms: int = 10_000,
        retry_initial_s: float = 0.2,
        retry_max_s: float = 5.0,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.request_timeout_s = request_timeout_ms / 1000
        #: Monotonic time of the last "connection lost" report (0: none yet).
        self.lost_at = 0.0
        #: The last client-level error reported, for the outage warning.
        self.last_error: SendError | None = None
        initial_ms = max(1, int(retry_initial_s * 1000))
        most_ms = max(1, int(retry_max_s * 1000))
        conf: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "client.id": client_id,
            "acks": 1,
            # Records of a run go to one partition, the one Kafka's Java client and aiokafka pick for its key.
            "partitioner": "murmur2_random",
            # The sender batches (flush_interval_s, cycle_gap_s) and waits for each request: librdkafka need
            # not linger, and one request in flight keeps a kind's envelopes in order across its retries.
            "linger.ms": 1,
            "max.in.flight.requests.per.connection": 1,
            "enable.idempotence": False,
            "compression.type": "zstd",
            # Level 1: on batches of real log lines faster than the default and also smaller (runstream.kafka).
            "compression.level": 1,
            "message.timeout.ms": request_timeout_ms,
            "request.timeout.ms": request_timeout_ms,
            "socket.connection.setup.timeout.ms": max(1000, request_timeout_ms),
            # librdkafka refuses a first reconnect backoff above the most.
            "reconnect.backoff.ms": min(initial_ms, most_ms),
            "reconnect.backoff.max.ms": most_ms,
            "retry.backoff.ms": min(initial_ms, most_ms),
            # Topics are runstream's to create (runstream up, the admin tools), never a side effect of a produce.
            "allow.auto.create.topics": False,
            "message.max.bytes": 16 * 1024 * 1024,
            "log.connection.close": False,
            "log_level": 3,
            "logger": _RDKAFKA_LOG,
            "error_cb": self._on_error,
        }
        conf.update(config or {})
        self._producer = Producer(conf)
        self._closed = False
        #: Messages produced and not answered, and since when some have been waiting.
        self._pending = 0
        self._pending_since = 0.0

    def _on_error(self, err: KafkaError) -> None:
        # Runs inside poll()/flush()/list_topics(), on the caller's thread.
        self.last_error = SendError.of(err)
        if err.code() in _CONNECTION_CODES:
            self.lost_at = time.monotonic()

    def probe(self, timeout_s: float) -> None:
        """Return once the broker answers a metadata request; raise :class:`SendError` if it does not.

        Gives up after ``timeout_s``, or as soon as a connection attempt made
        after the call began is reported failed (a refused connection fails
        the probe in a few milliseconds, not after the timeout).
        """
        producer = self._producer
        began = self._settle()
        deadline = began + timeout_s
        while True:
            try:
                producer.list_topics(timeout=max(0.001, min(PROBE_SLICE_S, deadline - time.monotonic())))
                return
            except KafkaException as exc:
                failure = SendError.raised(exc)
            producer.poll(0)
            if self.lost_at >= began:
                raise self.last_error or failure
            if time.monotonic() >= deadline:
                raise failure

    @property
    def pending(self) -> int:
        """Messages produced and not answered yet."""
        return self._pending

    def produce(self, topic: str, key: bytes | None, value: bytes, on_answer: Answer) -> None:
        """Queue one message; ``on_answer`` gets its answer (None: acknowledged) from :meth:`serve` or :meth:`wait`.

        A message librdkafka refuses outright (too big, queue full) is
        answered at once, before this returns.  Never raises for a broker's
        or a connection's failure.
        """

        def callback(err: KafkaError | None, _msg: Any) -> None:
            self._pending -= 1
            on_answer(None if err is None else SendError.of(err))

        if not self._pending:
            self._pending_since = self._settle()
        try:
            self._producer.produce(topic, value, key, on_delivery=callback)
        except (KafkaException, BufferError) as exc:
            on_answer(SendError.raised(exc))
            return
        self._pending += 1

    def serve(self) -> None:
        """Hand out the answers that came, without waiting; take back what waits on a lost connection.

        Messages waiting when the connection is reported lost are purged
        (answered with a retriable error) rather than left to librdkafka's
        own retries: the caller backs off, and spools after a while.
        """
        self._producer.poll(0)
        if self._pending and self.lost_at >= self._pending_since:
            self._purge()

    def wait(self, stop: Callable[[], bool] = lambda: False) -> None:
        """Block until every message produced is answered.

        Gives up waiting, and purges what is left (answered with a retriable
        error), when the connection is reported lost while messages wait,
        when ``stop()`` turns true, or after the request timeout and a margin.
        """
        deadline = time.monotonic() + self.request_timeout_s + 5.0
        producer = self._producer
        while self._pending:
            producer.flush(POLL_SLICE_S)  # sends at once (no linger) and hands out the answers as they come
            if not self._pending:
                return
            if self.lost_at >= self._pending_since or stop() or time.monotonic() > deadline:
                self._purge()
                return

    def send(
        self, messages: Sequence[tuple[str, bytes | None, bytes]], stop: Callable[[], bool] = lambda: False
    ) -> list[SendError | None]:
        """Produce ``(topic, key, value)`` messages and :meth:`wait`; return one answer per message, in order."""
        answers: list[SendError | None] = [None] * len(messages)

        def answered(index: int) -> Answer:
            def on_answer(err: SendError | None) -> None:
                answers[index] = err

            return on_answer

        for i, (topic, key, value) in enumerate(messages):
            self.produce(topic, key, value, answered(i))
        self.wait(stop)
        return answers

    def _settle(self) -> float:
        """Take the error reports queued while nobody polled, and return the time from which reports are news.

        A report is timed when it is taken, not when it happened: one from an
        outage that ended while nothing waited would otherwise count as a
        connection lost under the messages (or probe) that come next.
        """
        self._producer.poll(0)
        return time.monotonic()

    def _purge(self) -> None:
        """Take back every message librdkafka holds; their callbacks answer with a retriable error."""
        self._producer.purge(in_queue=True, in_flight=True, blocking=True)
        self._producer.poll(0)
        if len(self._producer):
            self._producer.flush(1.0)  # serves the purged messages' callbacks

    def close(self) -> None:
        """Drop whatever is still queued (answered as purged) and release the producer's threads."""
        if self._closed:
            return
        self._closed = True
        try:
            self._purge()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass
        del self._producer

    def abandon(self) -> None:
        """In a forked child: never destroy this producer (librdkafka's threads are not in the child).

        Its reference count is raised once more than anything will lower it,
        so neither the child's garbage collector nor its interpreter shutdown
        calls into librdkafka.
        """
        if not self._closed:
            self._closed = True
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(self._producer))
