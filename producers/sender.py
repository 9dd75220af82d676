"""The background sender: buffer -> envelopes -> Kafka, on its own plain thread.

Every ``flush_interval_s``, but at most once per ``cycle_gap_s`` while records
keep coming (at once when a kind's backlog reaches ``batch_max_records``, or on
:meth:`Sender.flush`), the sender takes what the buffer holds, builds envelopes
(:mod:`producers.batch`) and hands each to the transport for the kind's raw
topic, keyed by run id (:class:`producers.transport.Transport`, librdkafka:
its network I/O, batching and compression run in its own threads, outside
the GIL).  The broker's acknowledgements are taken when the thread next
wakes up anyway, or waited for at once while :meth:`Sender.flush` waits.
Between cycles the thread sleeps on an event: no event loop, no timers.

Guarantees:

* :meth:`Sender.flush` returns true once every record accepted before the
  call has been acknowledged; it never returns true while one of them failed
  or sits only in the disk spool.
* Per kind, envelopes are sent in ``seq`` order on one partition; only a
  retried envelope may arrive after a later one (its identity lets the sink
  store it once, in place).
* Broker unreachable: no crash and no busy loop.  A lost connection is seen
  at once; the broker is asked again with exponential backoff
  (``retry_initial_s`` .. ``retry_max_s``), a single warning line is logged
  per outage, records wait in the bounded buffer (at most
  ``max_unacked_records`` are taken out of it), and after ``spool_after_s``
  built envelopes go to the disk spool (:mod:`producers.spool`), replayed
  once the broker answers.
* :meth:`Sender.close` is bounded: it waits up to its timeout for
  acknowledgements, then spools (or counts as lost) whatever is left.
"""

from __future__ import annotations

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
from producers.transport import SendError, Transport
from runstream.settings import Settings
from runstream.topics import RAW_KINDS, Topics

log = logging.getLogger("runstream.sdk")

#: Kinds in the order the sender drains them: lifecycle first.
DRAIN_ORDER = ("runs", "metrics", "logs", "evals", "resources")

#: An envelope that failed this many times for a reason not known to be
#: retriable is given up (counted ``failed``).
MAX_UNKNOWN_ATTEMPTS = 3

#: How long an outage's probe waits for the broker's metadata answer.
PROBE_TIMEOUT_S = 2.0

TransportFactory = Callable[[], Transport]


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
        transport_factory: TransportFactory | None = None,
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
        self._factory = transport_factory or self._default_factory
        # Shared with other threads, under _cond.
        self._cond = threading.Condition()
        self._done_upto: dict[str, int] = dict.fromkeys(RAW_KINDS, 0)
        self._resolved: dict[str, dict[int, int]] = {k: {} for k in RAW_KINDS}
        #: Resolved but not acknowledged: position -> (end, "failed"|"spooled"|"lost").
        self._holes: dict[str, dict[int, tuple[int, str]]] = {k: {} for k in RAW_KINDS}
        #: True once a wake is on its way (read unlocked by the hot path).
        self.wake_pending = False
        #: Set by wake() and close(): what the thread sleeps on between cycles.
        self._wake_event = threading.Event()
        # Sender-thread state.
        self._transport: Transport | None = None
        #: Whether the broker answered since the transport was made or the last outage began.
        self._reached = False
        self._outbox: deque[Batch] = deque()
        self._inflight: dict[int, Batch] = {}
        #: A retriable failure answered since the last look (noted as one outage).
        self._failure: SendError | None = None
        #: Callers of flush() waiting now (the sender then waits for answers instead of looking later).
        self._flushers = 0
        self._unacked = 0
        self._backoff_s = options.retry_initial_s
        self._next_attempt = 0.0
        self._outage_since: float | None = None
        self._replay_due = spool is not None
        self._stopping = False
        self._thread: threading.Thread | None = None
        #: Cycles run (a wake-up with nothing buffered, to send or to replay runs none).
        self.cycles = 0
        #: Monotonic time at which the last cycle began (see ``Options.cycle_gap_s``).
        self._cycle_began = -float("inf")
        self._started = threading.Event()

    # ----------------------------------------------------------- any thread

    def start(self) -> None:
        """Start the thread (returns once it runs, or after 5 s)."""
        self._thread = threading.Thread(target=self._thread_main, name="runstream-sender", daemon=True)
        self._thread.start()
        self._started.wait(5.0)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wake(self) -> None:
        """Ask the sender to drain now (thread-safe, cheap, never raises)."""
        self.wake_pending = True
        self._wake_event.set()

    def flush(self, timeout_s: float) -> bool:
        """Wait until every record accepted before this call is acknowledged.

        Blocks the caller up to ``timeout_s`` (records in the disk spool are
        waited for: this process replays them once the broker answers).
        Returns false on timeout, as soon as one of those records failed or
        was lost for good, or when the sender is not running.  Never raises.
        """
        target = self.buffer.mark()
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._cond:
            self._flushers += 1
        self.wake()
        try:
            return self._wait_resolved(target, deadline)
        finally:
            with self._cond:
                self._flushers -= 1

    def _wait_resolved(self, target: dict[str, int], deadline: float) -> bool:
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
        self._stopping = True  # ends a wait for acknowledgements within one poll slice
        self._wake_event.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        return ok

    def abandon(self) -> None:
        """In a forked child: leave the parent's producer alone, never to be used or destroyed here."""
        self._stopping = True
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.abandon()

    def stats(self) -> dict[str, Any]:
        """The buffer's counters, secret spans redacted per kind, and the connection state."""
        out: dict[str, Any] = dict(self.buffer.stats())
        out["redacted"] = dict(self.batcher.redacted)
        out["state"] = {
            "connected": self._transport is not None and self._reached and self._outage_since is None,
            "outage_s": 0.0 if self._outage_since is None else time.monotonic() - self._outage_since,
            "outbox": len(self._outbox),
            "in_flight": len(self._inflight),
            "cycles": self.cycles,
        }
        return out

    # ------------------------------------------------------- sender thread

    def _default_factory(self) -> Transport:
        return Transport(
            self.bootstrap,
            request_timeout_ms=self.options.request_timeout_ms,
            retry_initial_s=self.options.retry_initial_s,
            retry_max_s=self.options.retry_max_s,
        )

    def _thread_main(self) -> None:
        self._started.set()
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - the thread must end quietly
            log.warning("Sender stopped on an error. error=%s", type(exc).__name__)
        finally:
            try:
                self._shutdown()
            except BaseException as exc:  # noqa: BLE001
                log.warning("Sender could not spool on stop. error=%s", type(exc).__name__)
            with self._cond:
                self._cond.notify_all()

    def _loop(self) -> None:
        """Cycles when woken, or when a tick finds work, until stopped.

        Cheap waits matter (each wake-up of this thread costs tens of µs of
        CPU, and its CPU is what the training thread may wait on for the
        GIL): the thread sleeps on one event between ticks, a tick that finds
        nothing to do costs one look at the buffer, and a cycle costs one
        wait.  Ticks come every ``flush_interval_s``, the first after a cycle
        once ``cycle_gap_s`` has passed since it began: records that keep
        coming go in cycles at least that far apart, one after a quiet spell
        leaves within ``flush_interval_s``.  A wake (a full batch, flush,
        close) does not wait for either.
        """
        opts = self.options
        event = self._wake_event
        next_beat = time.monotonic() + opts.heartbeat_interval_s
        due = True  # at start: replay what earlier processes spooled
        work_seen = False  # the tick that ended the last wait found work (no need to look again)
        while not self._stopping:
            if due:
                event.clear()
                self.wake_pending = False
                if work_seen or not self._idle():
                    self.cycles += 1
                    self._cycle_began = time.monotonic()
                    self._cycle()
                    due = event.is_set()  # woken during the cycle: go round again at once
                    work_seen = False
                    if due:
                        continue
                elif self._inflight and self._flushers:
                    self._serve(wait=True)  # a flush waits for envelopes sent before it came
                due = work_seen = False
            now = time.monotonic()
            if self._heartbeat is not None and now >= next_beat:
                next_beat = now + opts.heartbeat_interval_s
                try:
                    self._heartbeat()
                except Exception:  # noqa: BLE001 - a heartbeat must never stop the sender
                    pass
            tick = max(opts.flush_interval_s, self._cycle_began + opts.cycle_gap_s - now)
            woken = event.wait(min(tick, max(0.0, next_beat - now)))
            if self._inflight:  # answers wait in librdkafka's queue: take them now that this thread is awake
                self._serve(wait=self._flushers > 0)
            if woken:
                due = True
                continue
            try:
                work_seen = due = not self._idle()
            except Exception:  # noqa: BLE001 - run a cycle rather than stop ticking
                work_seen = due = True

    def _idle(self) -> bool:
        """Whether a cycle would do nothing: no records buffered, nothing to send or replay."""
        if self._outbox or self._replay_due:
            return False
        if self.buffer.before_logs is not None:
            self.buffer.before_logs()  # queued console writes become log records
        return self.buffer.empty()

    def _cycle(self) -> None:
        self._drain(self.options.max_unacked_records - self._unacked)
        if not self._outbox and not self._replay_due:
            return
        if self._connect():
            if self._replay_due:
                self._replay()
            if not self._replay_due:
                self._send_outbox()
                if self._flushers:
                    self._serve(wait=True)
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

    def _connect(self) -> bool:
        """Whether the broker can be sent to now: the transport exists and, after an outage, answers a probe."""
        if time.monotonic() < self._next_attempt:
            return False
        if self._transport is None:
            try:
                self._transport = self._factory()
            except Exception as exc:  # noqa: BLE001 - a configuration librdkafka refuses: an outage to report
                self._note_outage(exc)
                return False
            self._reached = False
        if self._reached and self._outage_since is None:
            return True
        try:
            self._transport.probe(min(PROBE_TIMEOUT_S, self.options.request_timeout_ms / 1000))
        except SendError as exc:
            self._note_outage(exc)
            return False
        self._reached = True
        return True

    def _send_outbox(self) -> None:
        """Hand the outbox to the transport, in ``seq`` order; wait for the answers only if someone waits.

        librdkafka keeps a partition's messages in order (one request in
        flight), so a kind's envelopes reach the broker in order; only a
        retried one may come after a later one.  The answers are handed out
        by the loop's next look (:meth:`_serve`), which costs no wake-up of
        this thread of its own, or at once when :meth:`flush` waits.
        """
        transport = self._transport
        if transport is None:
            return
        topic = self._topic
        key = self.key
        outbox = self._outbox
        while outbox:
            batch = outbox.popleft()
            batch.attempts += 1
            self._inflight[batch.seq] = batch
            self.buffer.count("sent", batch.kind, batch.records)
            transport.produce(topic[batch.kind], key, batch.value, self._answer_for(batch))

    def _serve(self, *, wait: bool, stop: Callable[[], bool] | None = None) -> None:
        """Take the answers that came (all of them, waiting up to the request timeout, when ``wait``)."""
        transport = self._transport
        if transport is None:
            return
        if wait:
            transport.wait(stop or self._stopped)
        else:
            transport.serve()
        failure, self._failure = self._failure, None
        if failure is not None and not self._stopping:  # a stop takes the envelopes back: no outage in that
            self._note_outage(failure)

    def _stopped(self) -> bool:
        return self._stopping

    def _answer_for(self, batch: Batch) -> Callable[[SendError | None], None]:
        def on_answer(exc: SendError | None) -> None:
            self._answered(batch, exc)

        return on_answer

    def _answered(self, batch: Batch, exc: SendError | None) -> None:
        """Account for the broker's answer to one envelope (acked, requeued or given up)."""
        self._inflight.pop(batch.seq, None)
        if exc is None:
            self._unacked -= batch.count
            self.buffer.count("acked", batch.kind, batch.records)
            self._resolve(batch.kind, batch.start, batch.count, "")
            self._note_recovered()
            return
        if exc.retriable or batch.attempts < MAX_UNKNOWN_ATTEMPTS:
            self._requeue(batch)
            self._failure = exc  # one outage per look, however many envelopes it took back
        else:
            self._give_up(batch, exc)

    def _requeue(self, batch: Batch) -> None:
        seqs = [b.seq for b in self._outbox]
        self._outbox.insert(bisect.bisect(seqs, batch.seq), batch)

    def _give_up(self, batch: Batch, exc: BaseException) -> None:
        self._unacked -= batch.count
        self.buffer.count("failed", batch.kind, batch.records)
        self._resolve(batch.kind, batch.start, batch.count, "failed")
        log.warning(
            "Broker refused an envelope; its records are dropped. kind=%s records=%d error=%s",
            batch.kind,
            batch.records,
            _name(exc),
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
        self._reached = False
        self._next_attempt = time.monotonic() + self._backoff_s
        self._backoff_s = min(self._backoff_s * 2, self.options.retry_max_s)
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.warning(
                "Kafka broker unreachable; keeping records and retrying. bootstrap=%s error=%s",
                self.bootstrap,
                _name(exc),
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

    def _replay(self) -> None:
        """Send the spool's segments (ours and earlier processes'), oldest first."""
        assert self.spool is not None and self._transport is not None
        self._replay_due = False
        mine = self.batcher.producer

        def acked(entries: list[SpoolEntry]) -> None:
            for e in entries:
                if e.producer == mine and e.kind in self._holes:
                    self._fill_hole(e.kind, e.start)

        try:
            sent = replay(self._transport, self.spool, on_segment=acked, stop=self._stopped)
        except Exception as exc:  # noqa: BLE001 - retried after the backoff
            self._replay_due = True
            self._note_outage(exc)
            return
        if sent:
            self._note_recovered()
            self._replay_due = False

    def _shutdown(self) -> None:
        """Last drain, a bounded last send, then spool what is left and release the transport."""
        self._drain(1 << 62)
        transport = self._transport
        if transport is not None:
            if self._outage_since is None and self._reached:
                deadline = time.monotonic() + 1.0
                self._send_outbox()
                self._serve(wait=True, stop=lambda: time.monotonic() > deadline)
            transport.close()  # what is still waiting is answered as purged: back into the outbox
            self._transport = None
        left = sorted([*self._inflight.values(), *self._outbox], key=lambda b: b.seq)
        self._inflight.clear()
        self._outbox.clear()
        self._spool_batches(left)


def _name(exc: BaseException) -> str:
    return exc.name if isinstance(exc, SendError) else type(exc).__name__


def replay(
    transport: Transport,
    spool: DiskSpool,
    on_segment: Callable[[list[SpoolEntry]], None] | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> int:
    """Send every segment of ``spool`` through ``transport``, oldest first.

    A segment is deleted once all its envelopes are acknowledged (then
    ``on_segment`` is called with its entries).  On the first failure the
    segment and the rest are given back and the error is raised.  Returns
    the number of envelopes sent.
    """
    paths = spool.claim()
    sent = 0
    for i, path in enumerate(paths):
        try:
            entries = list(spool.read(path))
            answers = transport.send([(e.topic, e.key, e.value) for e in entries], stop=stop)
            errors = [a for a in answers if a is not None]
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


def sync(settings: Settings, timeout_s: float, spool_max_bytes: int = 1 << 30) -> int:
    """Replay the disk spool of ``settings`` (data directory, broker); return envelopes sent.

    What ``runstream sync`` runs.  Raises :class:`SendError` (or the first
    send error) when the broker cannot take them within about ``timeout_s``;
    what was not sent stays in the spool.
    """
    spool = DiskSpool.for_settings(settings, spool_max_bytes)
    transport = Transport(settings.kafka, client_id="runstream-sync", request_timeout_ms=int(timeout_s * 1000))
    try:
        transport.probe(timeout_s)
        return replay(transport, spool)
    finally:
        transport.close()
