"""What the validators already decoded of a clean message, handed to the detectors of the same worker.

A validator has the records of every clean envelope it sends as Python
objects already; the detector agent that reads the same message back from the
``clean.*`` topic (in the same worker when it holds that partition, the usual
case: faust assigns co-partitioned topics together) would otherwise decode it
again.  So the validator puts the envelope here, under the message's bytes
(``runs``, ``metrics``, ``resources``; not ``logs``: the log detectors read a
small digest topic instead of the batches).  A detector gets an envelope only
for a message with identical bytes: the answer decoding would give, never a
stale or foreign one.  A message not found here (read by another worker, sent
before a restart, evicted) is simply decoded.

The bytes themselves are not kept: an entry is found by the message's length,
its hash (Python's keyed SipHash of the bytes, which a dict look-up of the
bytes computes anyway, once per bytes object) and its first and last
:data:`SAMPLE_BYTES` bytes (the head holds the envelope's identity: kind,
producer, seq, run).  Two different messages match only if they also agree
there and collide in a 64-bit hash keyed by a per-process secret.

Bounded by count and by weight, an estimate of the memory an entry holds:
:data:`ENVELOPE_WEIGHT_PER_BYTE` times its message's length (measured on the
benchmark's batches: a decoded ``metrics`` envelope takes about 5 times its
message's bytes).  The oldest entries go first.

The same holds from one batch to the next for the detectors' table values:
:class:`Live` keeps, per table key, the state object a detector saved beside
the very bytes object it stored, and gives it back only while the table still
holds that object (a recovery or rebalance, or any other writer, stores
another one: that value is decoded).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeAlias, TypeVar

from runstream import wire

#: Most entries held, and their most total weight (bytes of memory, estimated).
MAX_ITEMS = 4096
MAX_BYTES = 192 * 1024 * 1024
#: The weight of an entry per byte of its message.
ENVELOPE_WEIGHT_PER_BYTE = 5
#: How many bytes of each end of a message take part in its key.
SAMPLE_BYTES = 64

_Key: TypeAlias = tuple[int, int, bytes, bytes]


def _key(data: bytes) -> _Key:
    return hash(data), len(data), data[:SAMPLE_BYTES], data[-SAMPLE_BYTES:]


def weight_of(data: bytes) -> int:
    """The weight an entry for message ``data`` counts against :data:`MAX_BYTES`."""
    return ENVELOPE_WEIGHT_PER_BYTE * len(data)


class Handoff:
    """A bounded map from a clean message's bytes to its decoded envelope (single event loop, no locks)."""

    def __init__(self, max_items: int = MAX_ITEMS, max_bytes: int = MAX_BYTES) -> None:
        self._items: OrderedDict[_Key, tuple[wire.Envelope, int]] = OrderedDict()
        self._bytes = 0
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, data: bytes, value: wire.Envelope) -> None:
        """Remember that ``data`` decodes to ``value`` (an envelope nobody mutates afterwards)."""
        weight = weight_of(data)
        if weight > self.max_bytes:
            return
        key = _key(data)
        if key in self._items:
            self._items.move_to_end(key)
            return
        self._items[key] = (value, weight)
        self._bytes += weight
        while len(self._items) > self.max_items or self._bytes > self.max_bytes:
            _, (_, old) = self._items.popitem(last=False)
            self._bytes -= old
            self.evicted += 1

    def take(self, data: bytes) -> wire.Envelope | None:
        """The envelope put for ``data`` if it was (and is still held), removing it; else ``None``."""
        found = self._items.pop(_key(data), None)
        if found is None:
            return None
        self._bytes -= found[1]
        return found[0]


#: Most state objects a :class:`Live` keeps (one per run of this worker's partitions; the least recently used go).
MAX_LIVE = 1024

T = TypeVar("T")


class Live(Generic[T]):
    """Per table key, the state object whose encoding is the table's value (single event loop, no locks).

    Saves decoding a run's state on every batch: a detector takes the object (:meth:`take`, given the value the
    table holds now), changes it and keeps it with the bytes it stores (:meth:`keep`).  Found by the identity of
    those bytes, never by equality: a store that holds the object it was given (faust's memory store) gives the
    same object back until the key is written again, so an equal value written by anyone else (a recovery from
    the changelog, the run-wide timer) is decoded afresh.  Taking removes the entry, so a detector that fails
    before it stores the state leaves nothing behind that no longer matches the table.
    """

    def __init__(self, max_items: int = MAX_LIVE) -> None:
        self._items: dict[str, tuple[bytes, T]] = {}
        self.max_items = max_items

    def __len__(self) -> int:
        return len(self._items)

    def take(self, key: str, stored: bytes) -> T | None:
        """The object kept for ``key`` if ``stored`` is the very bytes object kept with it (removed); else ``None``."""
        found = self._items.pop(key, None)
        if found is None or found[0] is not stored:
            return None
        return found[1]

    def keep(self, key: str, stored: bytes, value: T) -> None:
        """Remember that the table's value ``stored`` under ``key`` encodes ``value`` (which nobody else changes)."""
        items = self._items
        items.pop(key, None)
        items[key] = (stored, value)
        if len(items) > self.max_items:
            del items[next(iter(items))]
