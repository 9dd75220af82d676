"""The live source's window of each run's recent messages (see :mod:`ui.live` for why it exists).

Per (run, stream): the newest messages read, as raw bytes until someone needs
their records, bounded by age, count and bytes.  What it pushes out it
remembers as offsets (:meth:`Recent.evicted`), so a hand-off can tell whether
the sink has stored what the window no longer holds.  Pure: no I/O.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from ui.hub import Rec


class _Entry:
    """One message in the recent window: its bytes until someone needs its records, and where it was read."""

    __slots__ = ("at", "value", "recs", "tp", "offset")

    def __init__(self, at: float, value: bytes, recs: list[Rec] | None, tp: Any, offset: int) -> None:
        self.at = at
        self.value = value
        self.recs = recs
        self.tp = tp
        self.offset = offset


class Recent:
    """The newest messages per (run, stream), bounded in count, bytes and age; decoded on demand.

    ``decode`` turns a message's bytes into its feed records; it runs at most
    once per message, and only for a message someone asks for.

    It also remembers, per (run, stream) and partition, the offset just after
    the newest message it pushed out (:meth:`evicted`): a subscription's
    history is complete only once the sink has stored up to there.
    """

    def __init__(
        self,
        max_age_s: float,
        max_messages: int,
        max_bytes: int,
        decode: Callable[[bytes], list[Rec]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_age_s = max_age_s
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.decode = decode
        self.clock = clock
        self._rings: dict[tuple[str, str], deque[_Entry]] = {}
        self._bytes: dict[tuple[str, str], int] = {}
        #: Per (run, stream), per partition: the offset after the newest message pushed out of the window.
        self._evicted: dict[tuple[str, str], dict[Any, int]] = {}

    def add(
        self, run: str, stream: str, value: bytes, recs: list[Rec] | None = None, tp: Any = None, offset: int = -1
    ) -> None:
        """Keep one message (``recs``: its records when already decoded; ``tp``/``offset``: where it was read)."""
        key = (run, stream)
        ring = self._rings.get(key)
        if ring is None:
            ring = self._rings[key] = deque()
            self._bytes[key] = 0
        now = self.clock()
        ring.append(_Entry(now, value, recs, tp, offset))
        self._bytes[key] += len(value)
        self._expire(key, ring, now)

    def get(self, run: str, stream: str) -> list[Rec]:
        """The window's records in arrival order (decoding messages nobody asked for before)."""
        key = (run, stream)
        ring = self._rings.get(key)
        if ring is None:
            return []
        self._expire(key, ring, self.clock())
        out: list[Rec] = []
        for entry in ring:
            if entry.recs is None:
                entry.recs = self.decode(entry.value)
            out.extend(entry.recs)
        return out

    def evicted(self, run: str, stream: str) -> dict[Any, int]:
        """Per partition, the offset after the newest message of (run, stream) this window pushed out.

        Taken right after :meth:`get`: every message of (run, stream) read
        before then is in that answer or below these offsets.  Empty when the
        window never lost one (or the sink was known to have stored them when
        :meth:`prune` forgot them).
        """
        return dict(self._evicted.get((run, stream), ()))

    def _expire(self, key: tuple[str, str], ring: deque[_Entry], now: float) -> None:
        size = self._bytes[key]
        while ring and (now - ring[0].at > self.max_age_s or len(ring) > self.max_messages or size > self.max_bytes):
            entry = ring.popleft()
            size -= len(entry.value)
            if entry.tp is not None:
                marks = self._evicted.get(key)
                if marks is None:
                    marks = self._evicted[key] = {}
                marks[entry.tp] = entry.offset + 1
        self._bytes[key] = size

    def prune(self, stored: Mapping[Any, int]) -> set[Any]:
        """Forget runs whose window is empty, and their eviction marks that ``stored`` (committed offsets) covers.

        Returns the partitions of the marks it had to keep (their runs are
        idle, so only fresher committed offsets can let them go): the caller
        asks for those, which keeps the marks bounded by the sink's progress.
        """
        now = self.clock()
        for key in list(self._rings):
            self._expire(key, self._rings[key], now)
            if not self._rings[key]:
                del self._rings[key]
                del self._bytes[key]
        kept: set[Any] = set()
        for key in list(self._evicted):
            if key in self._rings:
                continue
            marks = self._evicted[key]
            short = [tp for tp, end in marks.items() if stored.get(tp, -1) < end]
            if short:
                kept.update(short)
            else:
                del self._evicted[key]
        return kept
