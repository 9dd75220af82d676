"""The background sender: buffer -> envelopes -> Kafka, on its own thread and event loop.

Every ``flush_interval_s``, but at most once per ``cycle_gap_s`` while records
keep coming (at once when a kind's backlog reaches ``batch_max_records``, or on
:meth:`Sender.flush`), the sender takes what the buffer holds, builds envelopes
(:mod:`producers.batch`) and sends each to the kind's raw topic keyed by run
id, then awaits the broker's acknowledgements.
A cycle's envelopes go out together, in one produce request (one record batch
per kind) awaited in the cycle (:func:`runstream.kafka.produce`): a cycle costs
one request and a handful of event-loop wake-ups, whatever it carries.

Guarantees:

* :meth:`Sender.flush` returns true once every record accepted before the
  call has been acknowledged; it never returns true while one of them failed
  or sits only in the disk spool.
* Per kind, envelopes are sent in ``seq`` order on one partition; only a
  retried envelope may arrive after a later one (its identity lets the sink
  store it once, in place).
* Broker unreachable: no crash and no busy loop.  The producer is retried
  with exponential backoff (``retry_initial_s`` .. ``retry_max_s``), a single
  warning line is logged per outage, records wait in the bounded buffer (at
  most ``max_unacked_records`` are taken out of it), and after
  ``spool_after_s`` built envelopes go to the disk spool
  (:mod:`producers.spool`), replayed once the broker answers.
* :meth:`Sender.close` is bounded: it waits up to its timeout for
  acknowledgements, then spools (or counts as lost) whatever is left.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from producers.batch import Batch, Batcher
from producers.buffer import Buffer
from producers.options import Options
from producers.spool import DiskSpool, SpoolEntry
from runstream import kafka
from runstream.settings import Settings
from runstream.topics import RAW_KINDS, Topics

log = logging.getLogger("runstream.sdk")

#: Kinds in the order the sender drains them: lifecycle first.
DRAIN_ORDER = ("runs", "metrics", "logs", "evals", "resources")

#: Most envelope bytes of one kind in one produce request (one record batch; a broker's
#: ``message.max.bytes`` defaults to 1 MiB + 12, framing included: 64 KiB are left for it,
#: should the envelopes not compress).  A bigger envelope goes alone.
MAX_REQUEST_BATCH_BYTES = (1 << 20) - (64 << 10)

#: An envelope that failed this many times for a reason not known to be
#: retriable is given up (counted ``failed``).
MAX_UNKNOWN_ATTEMPTS = 3

ProducerFactory = Callable[[], Any]


def is_retriable(exc: BaseException) -> bool:
    """Whether sending again can succeed (connection trouble, timeouts, leader moves)."""
    if isinstance(exc, (asyncio.TimeoutError, ConnectionError, OSError, asyncio.CancelledError)):
        return True
    if isinstance(exc, kafka.ConnectionLost):
        return True  # not retried inside aiokafka on purpose: we send it again, with a new producer
    if isinstance(exc, kafka.KafkaError):
        # aiokafka marks its KafkaTimeoutError (no metadata, delivery timed out)
        # as not retriable, but for a producer waiting out an outage it is.
        return bool(getattr(exc, "retriable", False)) or type(exc).__name__ == "KafkaTimeoutError"
    return False


class _QuietSenderThread(logging.Filter):
    """Drops aiokafka's own records from the sender thread (our one warning says it all)."""

    def __init__(self) -> None:
        super().__init__()
        self.thread_id: int | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread != self.thread_id or record.levelno >= logging.CRITICAL


class Sender:
    """Drains one :class:`Buffer` to Kafka from a daemon thread (see the module docstring)."""

    def __init__(
        self,
        buffer: Buffer,
        batcher: Batcher,
        *,
        settings: Settings,
        options: Options,
        key: bytes,
        spool: DiskSpool | None = None,
        heartbeat: Callable[[], None] | None = None,
        producer_factory: ProducerFactory | None = None,
    ) -> None:
        self.buffer = buffer
        self.batcher = batcher
        self.options = options
        self.bootstrap = settings.kafka
        self.topics: Topics = settings.topics
        #: The raw topic of each kind (looked up per envelope).
        self._topic: dict[str, str] = {k: settings.topics.raw(k) for k in RAW_KINDS}
        self.key = key
        self.spool = spool
        self._heartbeat = heartbeat
        self._factory = producer_factory or self._default_factory
        # Shared with other threads, under _cond.
        self._cond = threading.Condition()
        self._done_upto: dict[str, int] = dict.fromkeys(RAW_KINDS, 0)
        self._resolved: dict[str, dict[int, int]] = {k: {} for k in RAW_KINDS}
        #: Resolved but not acknowledged: position -> (end, "failed"|"spooled"|"lost").
        self._holes: dict[str, dict[int, tuple[int, str]]] = {k: {} for k in RAW_KINDS}
        #: True once a wake is on its way (read unlocked by the hot path).
        self.wake_pending = False
        # Loop-thread state.
        self._loop: asyncio.AbstractEventLoop | None = None
        #: What the main loop awaits between cycles (resolved by a wake or a tick with work).
        self._wake_fut: asyncio.Future[None] | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        #: A wake arrived while no wait was in progress (during a cycle): skip the next wait.
        self._woken = False
        #: The tick that ended the last wait found work to do (so the main loop skips its own look).
        self._work_seen = False
        self._producer: Any = None
        #: Partition of each topic our key goes to, asked of the current producer's partitioner
        #: once (a murmur2 hash in Python, ~10 us).  Forgotten with the producer (the topic may differ).
        self._partitions: dict[str, int] = {}
        self._outbox: deque[Batch] = deque()
        self._inflight: dict[int, Batch] = {}
        self._unacked = 0
        self._backoff_s = options.retry_initial_s
        self._next_attempt = 0.0
        self._outage_since: float | None = None
        self._replay_due = spool is not None
        self._stopping = False
        self._stop_deadline = 0.0
        self._thread: threading.Thread | None = None
        #: The task running :meth:`_main`, and whether it is inside a cycle (what a stop interrupts).
        self._main_task: asyncio.Task[Any] | None = None
        self._in_cycle = False
        #: Cycles run (a wake-up with nothing buffered, to send or to replay runs none).
        self.cycles = 0
        #: Loop time at which the last cycle began (see ``Options.cycle_gap_s``).
        self._cycle_began = -float("inf")
        self._started = threading.Event()
        self._quiet = _QuietSenderThread()

    # ----------------------------------------------------------- any thread

    def start(self) -> None:
        """Start the thread (returns once its loop runs, or after 5 s)."""
        self._thread = threading.Thread(target=self._thread_main, name="runstream-sender", daemon=True)
        self._thread.start()
        self._started.wait(5.0)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wake(self) -> None:
        """Ask the sender to drain now (thread-safe, cheap, never raises)."""
        self.wake_pending = True
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._on_wake)
        except RuntimeError:  # loop closed
            pass

    def flush(self, timeout_s: float) -> bool:
        """Wait until every record accepted before this call is acknowledged.

        Blocks the caller up to ``timeout_s`` (records in the disk spool are
        waited for: this process replays them once the broker answers).
        Returns false on timeout, as soon as one of those records failed or
        was lost for good, or when the sender is not running.  Never raises.
        """
        target = self.buffer.mark()
        deadline = time.monotonic() + max(0.0, timeout_s)
        self.wake()
        with self._cond:
            while True:
                resolved = all(self._done_upto[k] >= target[k] for k in RAW_KINDS)
                holes = [why for k in RAW_KINDS for start, (_, why) in self._holes[k].items() if start < target[k]]
                if resolved and not holes:
                    return True
                if resolved and any(why != "spooled" for why in holes):
                    return False  # failed or lost for good
                # Records in the spool may still be replayed by this process: wait on.
                left = deadline - time.monotonic()
                if left <= 0 or not self.alive:
                    return False
                self._cond.wait(min(left, 0.05))

    def close(self, timeout_s: float) -> bool:
        """Flush up to ``timeout_s``, then stop the thread (spooling what is left).

        Returns whether everything was acknowledged.  Blocks up to about
        ``timeout_s`` + 3 s; never raises.
        """
        ok = self.flush(timeout_s) if self.alive else False
        loop = self._loop
        self._stopping = True
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._stop_now)
            except RuntimeError:  # loop already closed
                pass
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        return ok

    def stats(self) -> dict[str, Any]:
        """The buffer's counters, secret spans redacted per kind, and the connection state."""
        out: dict[str, Any] = dict(self.buffer.stats())
        out["redacted"] = dict(self.batcher.redacted)
        out["state"] = {
            "connected": self._producer is not None and self._outage_since is None,
            "outage_s": 0.0 if self._outage_since is None else time.monotonic() - self._outage_since,
            "outbox": len(self._outbox),
            "in_flight": len(self._inflight),
            "cycles": self.cycles,
        }
        return out

    # ---------------------------------------------------------- loop thread

    def _stop_now(self) -> None:
        # Interrupts a cycle stuck on an unreachable broker so shutdown can spool.
        self._stopping = True
        task = self._main_task
        if self._in_cycle and task is not None and not task.done():
            task.cancel()  # delivered inside the cycle: the task is suspended there (see _main)
        self._on_wake()

    def _on_wake(self) -> None:
        fut = self._wake_fut
        if fut is not None and not fut.done():
            fut.set_result(None)
        else:
            self._woken = True

    def _on_tick(self) -> None:
        # Every flush_interval_s while waiting: an idle tick re-arms itself here, as a plain
        # loop callback; only a tick with work wakes the main loop (a task step costs more).
        self._tick_handle = None
        fut = self._wake_fut
        if fut is None or fut.done():
            return
        try:
            idle = not self._stopping and self._idle()
        except Exception:  # noqa: BLE001 - let the main loop run a cycle rather than stop ticking
            idle = False
        loop = self._loop
        if not idle:
            # Records wait: go now, or once cycle_gap_s has passed since the last cycle began (records
            # that keep coming go in fewer, fuller cycles; one after a quiet spell goes at once).
            wait = self._cycle_began + self.options.cycle_gap_s - loop.time() if loop is not None else 0.0
            if loop is not None and wait > 0 and not self._stopping:
                self._tick_handle = loop.call_later(wait, self._on_due)
                return
            self._on_due()
            return
        if loop is not None:
            self._tick_handle = loop.call_later(self.options.flush_interval_s, self._on_tick)

    def _on_due(self) -> None:
        """A tick found work and the gap since the last cycle is over: resolve the main loop's wait."""
        self._tick_handle = None
        fut = self._wake_fut
        if fut is not None and not fut.done():
            self._work_seen = True  # the main loop need not look again
            fut.set_result(None)

    def _default_factory(self) -> Any:
        return kafka.make_producer(
            self.bootstrap,
            client_id="runstream-sdk",
            request_timeout_ms=self.options.request_timeout_ms,
            max_batch_size=1 << 20,
            retry_backoff_ms=200,
            fail_on_disconnect=True,
            # The sender batches by itself (flush_interval_s, batch_max_records) and hands
            # each cycle's envelopes over together: aiokafka lingering on top only adds
            # timers and loop wake-ups (~20 % of the sender's CPU at one step per 100 ms).
            linger_ms=0,
        )

    def _thread_main(self) -> None:
        self._quiet.thread_id = threading.get_ident()
        names = [n for n in logging.Logger.manager.loggerDict if n == "aiokafka" or n.startswith("aiokafka.")]
        for name in names:
            logging.getLogger(name).addFilter(self._quiet)
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # noqa: BLE001 - the thread must end quietly
            log.warning("Sender stopped on an error. error=%s", type(exc).__name__)
        finally:
            self._loop = None
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            except BaseException:  # noqa: BLE001
                pass
            loop.close()
            for name in names:
                logging.getLogger(name).removeFilter(self._quiet)
            with self._cond:
                self._cond.notify_all()

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        task = asyncio.current_task()
        assert task is not None
        self._main_task = task
        self._started.set()
        beats = loop.create_task(self._beats())
        interval = self.options.flush_interval_s
        try:
            while True:
                self._woken = False
                self.wake_pending = False
                work_seen, self._work_seen = self._work_seen, False
                if self._stopping or work_seen or not self._idle():
                    self.cycles += 1
                    self._cycle_began = loop.time()
                    # The cycle runs in this task, not a task of its own (two loop wake-ups less per
                    # cycle); a stop cancels this task only while it is suspended inside the cycle.
                    self._in_cycle = True
                    try:
                        await self._cycle()
                    except asyncio.CancelledError:
                        if not self._stopping:
                            raise
                        if hasattr(task, "uncancel"):  # Python 3.11+ counts cancel requests: this one is handled
                            task.uncancel()
                    finally:
                        self._in_cycle = False
                if self._stopping:
                    break
                if self._woken:  # woken during the cycle: go round again at once
                    continue
                # Cheap waits matter: a sender that wakes every 50 ms was the SDK's largest
                # CPU cost.  The wait is one future; the ticks that find nothing to do are
                # handled by _on_tick alone (no task step, no new future), and a tick with
                # work or a wake resolves the future.
                fut: asyncio.Future[None] = loop.create_future()
                self._wake_fut = fut
                self._tick_handle = loop.call_later(interval, self._on_tick)
                try:
                    await fut
                finally:
                    self._wake_fut = None
                    if self._tick_handle is not None:
                        self._tick_handle.cancel()
                        self._tick_handle = None
        finally:
            beats.cancel()
            await self._shutdown()

    async def _beats(self) -> None:
        while self._heartbeat is not None:
            await asyncio.sleep(self.options.heartbeat_interval_s)
            try:
                self._heartbeat()
            except Exception:  # noqa: BLE001 - a heartbeat must never stop the sender
                pass

    def _idle(self) -> bool:
        """Whether a cycle would do nothing: no records buffered, nothing to send or replay."""
        if self._outbox or self._replay_due:
            return False
        if self.buffer.before_logs is not None:
            self.buffer.before_logs()  # queued console writes become log records
        return self.buffer.empty()

    async def _cycle(self) -> None:
        self._drain(self.options.max_unacked_records - self._unacked)
        if not self._outbox and not self._replay_due:
            return
        loop = asyncio.get_running_loop()
        if self._producer is None:
            await self._connect()
        if self._producer is not None:
            if self._replay_due and loop.time() >= self._next_attempt:
                await self._replay()
            if not self._replay_due:
                await self._send_outbox()
        if (
            self._outbox
            and self.spool is not None
            and self._outage_since is not None
            and time.monotonic() - self._outage_since >= self.options.spool_after_s
        ):
            self._spool_outbox()

    def _drain(self, budget: int) -> None:
        for kind in DRAIN_ORDER:
            if budget <= 0:
                return
            start, items = self.buffer.take(kind, budget)
            if not items:
                continue
            budget -= len(items)
            built = self.batcher.build(kind, start, items)
            for pos, count in built.gaps:
                self._resolve(kind, pos, count, "failed")
            if built.refused:
                self.buffer.count("failed", kind, built.refused)
                log.warning(
                    "Records could not be encoded and were dropped. kind=%s count=%d",
                    kind,
                    built.refused,
                )
            for batch in built.batches:
                self._outbox.append(batch)
                self._unacked += batch.count

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() < self._next_attempt:
            return
        producer = None
        try:
            producer = self._factory()
            await asyncio.wait_for(producer.start(), timeout=self.options.request_timeout_ms / 1000)
        except BaseException as exc:  # noqa: BLE001 - any failure to connect is an outage
            if producer is not None:
                await self._stop_producer(producer, 1.0)
            if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
                raise
            self._note_outage(exc)
            return
        self._producer = producer
        self._partitions.clear()

    async def _send_outbox(self) -> None:
        """Send the outbox, one produce request at a time, each awaited (see :func:`runstream.kafka.produce`).

        One request carries at most one record batch per kind (its envelopes
        in ``seq`` order, up to ``MAX_REQUEST_BATCH_BYTES``); the next goes
        once it is answered, so a kind's envelopes reach the broker in order.
        Cancelled (shutdown), the envelopes of the request stay in flight and
        are spooled.
        """
        loop = asyncio.get_running_loop()
        while self._outbox and loop.time() >= self._next_attempt and self._producer is not None:
            producer = self._producer
            topic = ""
            try:
                for topic in {self._topic[b.kind] for b in self._outbox} - self._partitions.keys():
                    self._partitions[topic] = await kafka.partition_for(producer, topic, self.key)
            except Exception as exc:  # noqa: BLE001 - no metadata: an outage, or a topic we may not use
                if is_retriable(exc):
                    self._note_outage(exc)
                    return
                for batch in [b for b in self._outbox if self._topic[b.kind] == topic]:
                    self._outbox.remove(batch)
                    self._give_up(batch, exc)
                continue
            parts = self._partitions
            chunk = self._next_request()
            values: dict[tuple[str, int], list[bytes]] = {}
            for batch in chunk:
                topic = self._topic[batch.kind]
                values.setdefault((topic, parts[topic]), []).append(batch.value)
                batch.attempts += 1
                self._inflight[batch.seq] = batch
                self.buffer.count("sent", batch.kind, batch.records)
            try:
                answers = await kafka.produce(producer, self.key, values)
            except Exception as exc:  # noqa: BLE001 - whatever failed, every envelope of the request did
                answers = dict.fromkeys(values, exc)
            self._answered(chunk, answers, {topic: part for (topic, part) in values})
            if self._outage_since is not None:
                return

    def _next_request(self) -> list[Batch]:
        """Take from the outbox the envelopes of the next produce request (``seq`` order kept per kind)."""
        taken: list[Batch] = []
        left: list[Batch] = []
        size: dict[str, int] = {}
        full: set[str] = set()
        for batch in self._outbox:
            kind = batch.kind
            if kind in full:
                left.append(batch)
                continue
            now = size.get(kind, 0) + len(batch.value)
            if kind in size and now > MAX_REQUEST_BATCH_BYTES:
                full.add(kind)  # later envelopes of this kind wait: they must not overtake this one
                left.append(batch)
                continue
            size[kind] = now
            taken.append(batch)
        self._outbox.clear()
        self._outbox.extend(left)
        return taken

    def _answered(
        self, chunk: list[Batch], answers: dict[tuple[str, int], BaseException | None], parts: dict[str, int]
    ) -> None:
        """Account for the broker's answer to each envelope of a request (acked, requeued or given up)."""
        outage: BaseException | None = None
        for batch in chunk:
            del self._inflight[batch.seq]  # still there: a shutdown spools only once the request is cancelled
            topic = self._topic[batch.kind]
            exc = answers.get((topic, parts[topic]), kafka.KafkaError("no answer"))
            if exc is None:
                self._unacked -= batch.count
                self.buffer.count("acked", batch.kind, batch.records)
                self._resolve(batch.kind, batch.start, batch.count, "")
                continue
            if is_retriable(exc) or batch.attempts < MAX_UNKNOWN_ATTEMPTS:
                self._requeue(batch)
                outage = exc
            else:
                self._give_up(batch, exc)
        if outage is None:
            self._note_recovered()
            return
        self._note_outage(outage)
        if isinstance(outage, kafka.ConnectionLost):
            self._drop_producer()

    def _requeue(self, batch: Batch) -> None:
        seqs = [b.seq for b in self._outbox]
        self._outbox.insert(bisect.bisect(seqs, batch.seq), batch)

    def _drop_producer(self) -> None:
        """Forget the producer after a lost connection; the next cycle connects a new one.

        The broker on the other side may have restarted with none of its
        topics: a new producer reads metadata afresh and waits for the topic
        to exist, where the old one would send on its stale metadata (see
        :func:`runstream.kafka._fail_on_disconnect`).  Its batches still in
        flight go back to the outbox; a late answer for one of them is ignored
        (at worst the batch is stored twice, once by identity).
        """
        producer, self._producer = self._producer, None
        self._partitions.clear()
        if producer is None:
            return
        for batch in sorted(self._inflight.values(), key=lambda b: b.seq):
            self._requeue(batch)
        self._inflight.clear()
        asyncio.get_running_loop().create_task(self._stop_producer(producer, 1.0))

    def _give_up(self, batch: Batch, exc: BaseException) -> None:
        self._unacked -= batch.count
        self.buffer.count("failed", batch.kind, batch.records)
        self._resolve(batch.kind, batch.start, batch.count, "failed")
        log.warning(
            "Broker refused an envelope; its records are dropped. kind=%s records=%d error=%s",
            batch.kind,
            batch.records,
            type(exc).__name__,
        )

    def _resolve(self, kind: str, start: int, count: int, hole: str) -> None:
        with self._cond:
            if hole:
                self._holes[kind][start] = (start + count, hole)
            resolved = self._resolved[kind]
            resolved[start] = start + count
            upto = self._done_upto[kind]
            while upto in resolved:
                upto = resolved.pop(upto)
            self._done_upto[kind] = upto
            self._cond.notify_all()

    def _fill_hole(self, kind: str, start: int) -> None:
        with self._cond:
            self._holes[kind].pop(start, None)
            self._cond.notify_all()

    def _note_outage(self, exc: BaseException) -> None:
        loop = asyncio.get_running_loop()
        self._next_attempt = loop.time() + self._backoff_s
        self._backoff_s = min(self._backoff_s * 2, self.options.retry_max_s)
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.warning(
                "Kafka broker unreachable; keeping records and retrying. bootstrap=%s error=%s",
                self.bootstrap,
                type(exc).__name__,
            )

    def _note_recovered(self) -> None:
        self._backoff_s = self.options.retry_initial_s
        self._next_attempt = 0.0
        if self._outage_since is not None:
            log.info(
                "Kafka broker reachable again. bootstrap=%s outage_s=%.1f",
                self.bootstrap,
                time.monotonic() - self._outage_since,
            )
            self._outage_since = None
            self._replay_due = self.spool is not None

    # ------------------------------------------------------------- spooling

    def _entry(self, batch: Batch) -> SpoolEntry:
        return SpoolEntry(
            topic=self.topics.raw(batch.kind),
            key=self.key,
            value=batch.value,
            kind=batch.kind,
            producer=self.batcher.producer,
            start=batch.start,
            count=batch.count,
        )

    def _spool_batches(self, batches: list[Batch]) -> None:
        """Write ``batches`` to the spool (or count them lost); they leave memory either way."""
        written = 0
        if self.spool is not None and batches:
            try:
                written = self.spool.write([self._entry(b) for b in batches])
            except OSError as exc:
                log.warning(
                    "Spool not writable; records are lost. dir=%s error=%s",
                    self.spool.directory,
                    type(exc).__name__,
                )
        for i, batch in enumerate(batches):
            self._unacked -= batch.count
            how = "spooled" if i < written else "lost"
            self.buffer.count(how, batch.kind, batch.records)
            self._resolve(batch.kind, batch.start, batch.count, how)
        if written < len(batches):
            why = "Spool full" if self.spool is not None else "Spool off"
            log.warning("%s; unsent records are lost. envelopes=%d", why, len(batches) - written)

    def _spool_outbox(self) -> None:
        batches = list(self._outbox)
        self._outbox.clear()
        self._spool_batches(batches)
        self._replay_due = True

    async def _replay(self) -> None:
        """Send the spool's segments (ours and earlier processes'), oldest first."""
        assert self.spool is not None
        self._replay_due = False
        mine = self.batcher.producer

        def acked(entries: list[SpoolEntry]) -> None:
            for e in entries:
                if e.producer == mine and e.kind in self._holes:
                    self._fill_hole(e.kind, e.start)

        try:
            sent = await replay(self._producer, self.spool, on_segment=acked)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - retried after the backoff
            self._replay_due = True
            self._note_outage(exc)
            return
        if sent:
            self._note_recovered()
            self._replay_due = False

    async def _shutdown(self) -> None:
        """Last drain, bounded stop of the producer, then spool what is left."""
        self._drain(1 << 62)
        if self._producer is not None:
            if self._outbox and self._outage_since is None:
                try:
                    await asyncio.wait_for(self._send_outbox(), timeout=1.0)
                except BaseException:  # noqa: BLE001 - what is not sent is spooled below
                    pass
            await self._stop_producer(self._producer, 2.0)
            self._producer = None
        left = sorted([*self._inflight.values(), *self._outbox], key=lambda b: b.seq)
        self._inflight.clear()
        self._outbox.clear()
        self._spool_batches(left)

    @staticmethod
    async def _stop_producer(producer: Any, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(producer.stop(), timeout=timeout_s)
        except BaseException:  # noqa: BLE001 - stopping is best effort
            pass


async def replay(
    producer: Any,
    spool: DiskSpool,
    on_segment: Callable[[list[SpoolEntry]], None] | None = None,
) -> int:
    """Send every segment of ``spool`` with a started ``producer``, oldest first.

    A segment is deleted once all its envelopes are acknowledged (then
    ``on_segment`` is called with its entries).  On the first failure the
    segment and the rest are given back and the error is raised.  Returns
    the number of envelopes sent.
    """
    paths = spool.claim()
    sent = 0
    for i, path in enumerate(paths):
        entries = list(spool.read(path))
        try:
            futs = [await producer.send(e.topic, e.value, key=e.key) for e in entries]
            results = await asyncio.gather(*futs, return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise errors[0]
        except BaseException:
            for p in paths[i:]:
                spool.release(p)
            raise
        spool.done(path)
        sent += len(entries)
        if on_segment is not None:
            on_segment(entries)
    return sent


async def sync(settings: Settings, timeout_s: float, spool_max_bytes: int = 1 << 30) -> int:
    """Replay the disk spool of ``settings`` (data directory, broker); return envelopes sent.

    What ``runstream sync`` runs.  Raises ``KafkaConnectionError`` (or the
    first send error) when the broker cannot take them; what was not sent
    stays in the spool.
    """
    spool = DiskSpool.for_settings(settings, spool_max_bytes)
    producer = kafka.make_producer(settings.kafka, client_id="runstream-sync", request_timeout_ms=int(timeout_s * 1000))
    await asyncio.wait_for(producer.start(), timeout=timeout_s)
    try:
        return await asyncio.wait_for(replay(producer, spool), timeout=timeout_s)
    finally:
        await Sender._stop_producer(producer, 5.0)
