"""Envelope building: buffered items of one kind into encoded wire envelopes (pure).

Each envelope holds records of one kind, at most ``max_records`` of them and
(unless a single record is bigger) at most ``max_bytes`` encoded; ``seq``
counts this producer's envelopes from 0 in the order they are built.  A
:class:`Batch` remembers which buffer positions it carries, so the sender can
tell when everything taken before a point has been acknowledged.

A record that MessagePack cannot carry (an exotic object, an integer beyond
64 bits) is first made wire-safe with :func:`producers.records.to_wire_safe`;
if even that fails it is refused and counted, never sent half-encoded.

Secrets are redacted here, on the sender thread, before anything is
encoded: log lines a batch at a time by a :class:`producers.redact.LineRedactor`
(which also redacts PEM blocks printed line by line), a run's name, tags,
config and argv by :data:`producers.records.REDACT`;
:attr:`Batcher.redacted` counts the spans replaced, per kind.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, overload

from producers.records import REDACT, TO_RECORDS, LogLine, to_wire_safe
from producers.redact import LineRedactor
from runstream.wire import Envelope, encode, pack


@dataclass
class Batch:
    """One encoded envelope and the buffer positions ``[start, start + count)`` it covers."""

    kind: str
    seq: int
    start: int
    count: int
    #: Records actually in the envelope (``count`` less those refused).
    records: int
    value: bytes
    attempts: int = 0


@dataclass
class Built:
    """What :meth:`Batcher.build` made of one run of items."""

    batches: list[Batch] = field(default_factory=list)
    #: Position ranges ``(start, count)`` covered by no batch (all refused).
    gaps: list[tuple[int, int]] = field(default_factory=list)
    refused: int = 0


_line_of = attrgetter("line")


class _Streams(Sequence[str]):
    """The stream of each record, read only where the redactor looks (lines it found, PEM blocks)."""

    def __init__(self, records: list[LogLine]) -> None:
        self._records = records

    def __len__(self) -> int:
        return len(self._records)

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [r.stream for r in self._records[i]]
        return self._records[i].stream


class Batcher:
    """Builds the envelopes of one producing process (not thread-safe: the sender owns it)."""

    def __init__(
        self,
        *,
        producer: str,
        run: str,
        node: str,
        rank: int,
        max_records: int = 1000,
        max_bytes: int = 900_000,
        clock: Callable[[], int] = time.time_ns,
        redact: bool = True,
    ) -> None:
        self.producer, self.run, self.node, self.rank = producer, run, node, rank
        self.redact = redact
        #: Secret spans replaced so far, per record kind.
        self.redacted: dict[str, int] = dict.fromkeys(TO_RECORDS, 0)
        self.max_records = max(1, max_records)
        self.max_bytes = max_bytes
        self.clock = clock
        #: The ``seq`` of the next envelope.
        self.seq = 0
        self._lines = LineRedactor()

    def build(self, kind: str, start: int, items: Sequence[Any]) -> Built:
        """Envelopes for ``items`` of ``kind``, taken from buffer position ``start`` on."""
        to_records = TO_RECORDS[kind]
        redact = REDACT.get(kind) if self.redact else None
        built = Built()
        for off in range(0, len(items), self.max_records):
            records: list[Any] = to_records(items[off : off + self.max_records])
            if kind == "logs" and self.redact:
                self._redact_lines(records)
            elif redact is not None:
                self._redact(kind, redact, records)
            self._emit(kind, start + off, records, built, repaired=False)
        return built

    def _redact_lines(self, records: list[LogLine]) -> None:
        try:
            changes, found = self._lines.redact(list(map(_line_of, records)), _Streams(records))
        except Exception:  # noqa: BLE001 - a redaction bug must not stop the sender
            return
        for i, line in changes.items():
            # Each LogLine is this batch's own: the sender took it out of the buffer.
            records[i].line = line
        if found:
            self.redacted["logs"] += found

    def _redact(self, kind: str, redact: Callable[[dict[str, Any]], int], records: list[Any]) -> None:
        found = 0
        for record in records:
            if isinstance(record, dict):
                try:
                    found += redact(record)
                except Exception:  # noqa: BLE001 - a redaction bug must not stop the sender
                    continue
        if found:
            self.redacted[kind] += found

    def _envelope(self, kind: str, records: list[Any]) -> Envelope:
        return Envelope(
            kind=kind,
            producer=self.producer,
            seq=self.seq,
            run=self.run,
            node=self.node,
            rank=self.rank,
            sent_ns=self.clock(),
            records=records,
        )

    def _emit(self, kind: str, pos: int, records: list[Any], built: Built, *, repaired: bool) -> None:
        # ``records`` maps 1:1 to positions; a refused record is a None placeholder.
        kept = records if not repaired else [r for r in records if r is not None]
        if not kept:
            built.gaps.append((pos, len(records)))
            return
        try:
            value = encode(self._envelope(kind, kept))
        except Exception:  # noqa: BLE001 - msgpack raises TypeError, OverflowError, ValueError
            if repaired:  # cannot happen: every kept record encodes alone
                built.gaps.append((pos, len(records)))
                built.refused += len(kept)
                return
            fixed = [_repair(r) for r in records]
            built.refused += sum(1 for r in fixed if r is None)
            self._emit(kind, pos, fixed, built, repaired=True)
            return
        if len(value) > self.max_bytes and len(records) > 1:
            half = len(records) // 2
            self._emit(kind, pos, records[:half], built, repaired=repaired)
            self._emit(kind, pos + half, records[half:], built, repaired=repaired)
            return
        built.batches.append(Batch(kind, self.seq, pos, len(records), len(kept), value))
        self.seq += 1


def _repair(record: Any) -> Any:
    """``record`` if it encodes, else its wire-safe form if that encodes, else None."""
    for candidate in (record, to_wire_safe(record)):
        try:
            pack(candidate)
        except Exception:  # noqa: BLE001
            continue
        return candidate
    return None
