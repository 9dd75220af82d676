"""Decoded clean envelopes handed from the validators to the detectors of one worker.

A validator has the records of every clean envelope it sends as Python
objects already; the detector agent that reads the same message back from the
``clean.*`` topic (in the same worker when it holds that partition, the usual
case: faust assigns co-partitioned topics together) would otherwise decode it
again.  The hand-off keys each envelope by the exact bytes sent, so a
detector gets an envelope only for a message with identical bytes: the same
answer decoding would give, never a stale or foreign one.  A message not
found here (read by another worker, sent before a restart, evicted) is simply
decoded.  Bounded by count and by total bytes; the oldest entries go first.
"""

from __future__ import annotations

from collections import OrderedDict

from runstream import wire

#: Most envelopes held, and most bytes of their messages (the decoded records take about as much again).
MAX_ITEMS = 256
MAX_BYTES = 64 * 1024 * 1024


class Handoff:
    """A bounded map from a clean message's bytes to its decoded envelope (single event loop, no locks)."""

    def __init__(self, max_items: int = MAX_ITEMS, max_bytes: int = MAX_BYTES) -> None:
        self._items: OrderedDict[bytes, wire.Envelope] = OrderedDict()
        self._bytes = 0
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, data: bytes, env: wire.Envelope) -> None:
        """Remember that ``data`` decodes to ``env`` (which nobody mutates afterwards)."""
        if len(data) > self.max_bytes:
            return
        if data in self._items:
            self._items.move_to_end(data)
            return
        self._items[data] = env
        self._bytes += len(data)
        while len(self._items) > self.max_items or self._bytes > self.max_bytes:
            old, _ = self._items.popitem(last=False)
            self._bytes -= len(old)
            self.evicted += 1

    def take(self, data: bytes) -> wire.Envelope | None:
        """The envelope ``data`` decodes to if it was put here (and is still held), removing it; else ``None``."""
        env = self._items.pop(data, None)
        if env is not None:
            self._bytes -= len(data)
        return env
