"""The bounded in-memory queue between the training loop and the sender.

One :class:`collections.deque` per record kind.  Producers (``run.log``, the
console tee, the lifecycle) append tuples without a lock — ``deque.append``
and ``len`` are atomic — and the one consumer, the sender thread, takes from
the left.  Nothing here blocks or raises into the caller.

Overflow policy: each kind has its own bound (see
:data:`producers.options.DEFAULT_SHARES`); a record arriving while its kind
is full is **dropped (the newest)** and counted in ``dropped[kind]``.  The
bounds are sized so that resources are dropped first and logs last.

Counters per kind: ``enqueued`` (accepted into the queue), ``dropped``
(overflow), ``invalid`` (refused by ``run.log``'s checks), ``sent`` (handed to
the producer), ``acked`` (acknowledged by the broker), ``failed`` (refused
for good), ``spooled`` (written to the disk spool) and ``lost`` (could neither
be sent nor spooled).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Mapping
from itertools import islice
from typing import Any

from runstream.topics import RAW_KINDS

COUNTERS = ("enqueued", "dropped", "invalid", "sent", "acked", "failed", "spooled", "lost")


class Buffer:
    """Per-kind bounded deques with counters (one consumer, many producers)."""

    def __init__(self, bounds: Mapping[str, int]) -> None:
        self.bounds: dict[str, int] = {k: int(bounds.get(k, 1000)) for k in RAW_KINDS}
        self.queues: dict[str, deque[Any]] = {k: deque() for k in RAW_KINDS}
        #: Records taken by the consumer so far, per kind (their positions 0..taken-1).
        self.taken: dict[str, int] = dict.fromkeys(RAW_KINDS, 0)
        # Counters written by producers are only touched on the rare overflow
        # and invalid paths, under this lock (reentrant: a signal handler may
        # interrupt the same thread while it holds it).
        self._count_lock = threading.RLock()
        # Serialises the consumer's take() with mark(), so that
        # ``taken + len(queue)`` is an exact cut of what has been appended.
        self._take_lock = threading.Lock()
        self.counts: dict[str, dict[str, int]] = {
            name: dict.fromkeys(RAW_KINDS, 0) for name in COUNTERS if name != "enqueued"
        }
        #: Called before log records are taken or counted (the console capture turns
        #: its queued writes into log records there, off the training thread).
        self.before_logs: Callable[[], None] | None = None

    def put(self, kind: str, item: Any) -> bool:
        """Append ``item`` unless ``kind`` is full; return whether it was kept. Never blocks."""
        queue = self.queues[kind]
        if len(queue) >= self.bounds[kind]:
            self.count("dropped", kind)
            return False
        queue.append(item)
        return True

    def count(self, counter: str, kind: str, n: int = 1) -> None:
        """Add ``n`` to ``counter`` of ``kind`` (thread-safe; not for the hot path)."""
        with self._count_lock:
            self.counts[counter][kind] += n

    def take(self, kind: str, max_n: int) -> tuple[int, list[Any]]:
        """Pop up to ``max_n`` oldest items of ``kind``; return (position of the first, items).

        Only the sender thread calls this.
        """
        if kind == "logs" and self.before_logs is not None:
            self.before_logs()
        queue = self.queues[kind]
        if not queue:
            return self.taken[kind], []
        with self._take_lock:
            n = min(max_n, len(queue))
            start = self.taken[kind]
            # popleft called n times in C (producers may append meanwhile, on the right).
            items = list(islice(iter(queue.popleft, None), n))
            self.taken[kind] = start + n
        return start, items

    def mark(self) -> dict[str, int]:
        """For each kind, how many records have been accepted so far (an exact cut)."""
        if self.before_logs is not None:
            self.before_logs()
        with self._take_lock:
            return {k: self.taken[k] + len(self.queues[k]) for k in RAW_KINDS}

    def pending(self) -> int:
        """Records waiting in the buffer, all kinds."""
        return sum(len(q) for q in self.queues.values())

    def empty(self) -> bool:
        """Whether no record of any kind waits in the buffer."""
        return not any(self.queues.values())

    def stats(self) -> dict[str, dict[str, int]]:
        """A copy of every counter, per kind, ``enqueued`` included."""
        out = {"enqueued": self.mark()}
        with self._count_lock:
            out.update({name: dict(values) for name, values in self.counts.items()})
        return out
