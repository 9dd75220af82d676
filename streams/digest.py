"""Log digests: what the log detectors take from a clean ``logs`` batch, and how validators send them.

A log batch is by far the largest message and the detectors need little of it,
so the validator that has the records at hand computes its :class:`LogDigest`
(counts by level, newest stamp, the alerts its tags raise; a few hundred bytes)
and sends that on the internal ``log-digests`` topic, keyed like the batch.
Each digest message costs the worker about 0.4 ms to send and read back, so a
validator merges the digests of the messages waiting in its queue
(:class:`DigestMerger`, :func:`merge_digests`): one per run, node and rank per
flush, a digest with alerts on its own.  No faust here: the merger is given
the topic to send on.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import Any

from runstream import wire
from runstream.errors import DecodeError
from streams.detect import RunState, on_log, on_seen

__all__ = [
    "DIGEST_VERSION",
    "MAX_MERGED_DIGESTS",
    "DigestMerger",
    "LogDigest",
    "apply_log_digest",
    "apply_logs",
    "digest_logs",
    "merge_digests",
    "merge_limit",
]

_get_ts = itemgetter("ts_ns")


#: The version of a :class:`LogDigest`'s encoded map (a worker skips, and counts, a digest of another).
DIGEST_VERSION = 1


@dataclass
class LogDigest:
    """All that the log detectors take from one clean ``logs`` batch: its identity, its line counts by level,
    its newest stamp and the alerts its tags raise.

    Small whatever the batch's size, so the validator that has the records at hand sends it to the log
    detectors (on the ``log-digests`` topic) instead of their reading the batch.  :func:`apply_log_digest` of
    :func:`digest_logs` is :func:`apply_logs`."""

    run: str
    producer: str
    seq: int
    node: str
    rank: int
    lines: int
    warnings: int
    errors: int
    #: the newest ``ts_ns`` of the batch, ``None`` for an empty one
    newest_ns: int | None
    alerts: list[dict[str, Any]]

    def encode(self) -> bytes:
        """This digest as the validators send it on the ``log-digests`` topic (a versioned MessagePack map)."""
        return wire.pack(
            {
                "v": DIGEST_VERSION,
                "run": self.run,
                "producer": self.producer,
                "seq": self.seq,
                "node": self.node,
                "rank": self.rank,
                "lines": self.lines,
                "warnings": self.warnings,
                "errors": self.errors,
                "newest_ns": self.newest_ns,
                "alerts": self.alerts,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> LogDigest:
        """The digest that :meth:`encode` made ``data`` from; raises :class:`DecodeError` for anything else
        (not MessagePack, another version, a field missing or of another type)."""
        doc = wire.unpack(data)
        if not isinstance(doc, dict) or doc.get("v") != DIGEST_VERSION:
            raise DecodeError(f"not a log digest of version {DIGEST_VERSION}")
        try:
            digest = cls(
                run=doc["run"],
                producer=doc["producer"],
                seq=doc["seq"],
                node=doc["node"],
                rank=doc["rank"],
                lines=doc["lines"],
                warnings=doc["warnings"],
                errors=doc["errors"],
                newest_ns=doc["newest_ns"],
                alerts=doc["alerts"],
            )
        except KeyError as exc:
            raise DecodeError(f"log digest without {exc}") from None
        texts = (digest.run, digest.producer, digest.node)
        numbers = (digest.seq, digest.rank, digest.lines, digest.warnings, digest.errors)
        if (
            not all(type(t) is str for t in texts)
            or not all(type(n) is int for n in numbers)
            or not (digest.newest_ns is None or type(digest.newest_ns) is int)
            or type(digest.alerts) is not list
            or not all(type(a) is dict for a in digest.alerts)
        ):
            raise DecodeError("log digest field of the wrong type")
        return digest


def digest_logs(*, run: str, producer: str, seq: int, node: str, rank: int, records: list[dict[str, Any]]) -> LogDigest:
    """The :class:`LogDigest` of one clean, enriched ``logs`` batch (``run``: its run id)."""
    # C loops over the batch: most lines carry no tags and need nothing else, and most batches hold a few
    # levels only, so a level is counted only when the batch holds it.
    levels = list(map(dict.get, records, repeat("level"), repeat("")))
    held = set(levels)
    warnings = levels.count("WARNING") if "WARNING" in held else 0
    errors = sum(levels.count(level) for level in _ERROR_LEVELS if level in held)
    out: list[dict[str, Any]] = []
    for rec in [rec for rec in records if "tags" in rec]:
        out += on_log(rec, producer=producer, seq=seq, node=node, rank=rank)
    # One traceback's lines raise one alert per tag: keep the first of each key.
    seen: set[str] = set()
    alerts = [a for a in out if not (a["key"] in seen or seen.add(a["key"]))]  # type: ignore[func-returns-value]
    return LogDigest(
        run=run,
        producer=producer,
        seq=seq,
        node=node,
        rank=rank,
        lines=len(levels),
        warnings=warnings,
        errors=errors,
        newest_ns=max(map(_get_ts, records)) if records else None,
        alerts=alerts,
    )


#: The levels counted as errors.
_ERROR_LEVELS = ("ERROR", "CRITICAL")


def merge_digests(digests: list[LogDigest]) -> LogDigest:
    """One digest that applies as ``digests`` (non-empty, one run, node and rank, none with alerts) applied in
    turn: their counts summed and their newest stamp; the identity (``producer``, ``seq``) of the last.

    A digest with alerts is sent on its own: the alerts' envelope takes its identity from the digest, and a
    replay must give the same one (merged digests may be merged differently after a restart)."""
    last = digests[-1]
    if len(digests) == 1:
        return last
    newest = [d.newest_ns for d in digests if d.newest_ns is not None]
    return LogDigest(
        run=last.run,
        producer=last.producer,
        seq=last.seq,
        node=last.node,
        rank=last.rank,
        lines=sum(d.lines for d in digests),
        warnings=sum(d.warnings for d in digests),
        errors=sum(d.errors for d in digests),
        newest_ns=max(newest) if newest else None,
        alerts=[],
    )


def apply_log_digest(run: RunState, digest: LogDigest) -> list[dict[str, Any]]:
    """Apply one clean ``logs`` batch's digest: counts (as :func:`streams.detect.on_log_levels`), last seen;
    return its alerts."""
    counts = run.counts
    counts["lines"] = counts.get("lines", 0) + digest.lines
    if digest.warnings:
        counts["warnings"] = counts.get("warnings", 0) + digest.warnings
    if digest.errors:
        counts["errors"] = counts.get("errors", 0) + digest.errors
    if digest.newest_ns is not None:
        on_seen(run, node=digest.node, rank=digest.rank, ts_ns=digest.newest_ns)
    return digest.alerts


def apply_logs(
    run: RunState, *, producer: str, seq: int, node: str, rank: int, records: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Apply one clean, enriched ``logs`` batch: counts, last seen; return the log-tag alerts it raises."""
    return apply_log_digest(run, digest_logs(run="", producer=producer, seq=seq, node=node, rank=rank, records=records))


def merge_limit(max_in_flight: int) -> int:
    """The most events whose digests wait to be merged: under half the in-flight slots (each holds one), so the
    semaphore never waits on events that only a flush would ack."""
    return max(1, min(MAX_MERGED_DIGESTS, max_in_flight // 2))


#: The most log batches whose digests are merged into one message (a digest message costs the worker about as
#: much to send and read back as validating 100 lines).
MAX_MERGED_DIGESTS = 32


class DigestMerger:
    """The events a validator holds until their log batches' digests are sent: per run, node and rank, one
    digest for the batches without alerts (:func:`merge_digests`), and each with alerts alone."""

    def __init__(self, topic: Any, limit: int) -> None:
        self.topic = topic
        self.limit = limit
        self._events: list[tuple[Any, list[Any], tuple[str, str, int, int] | None]] = []
        self._groups: dict[tuple[str, str, int, int], tuple[bytes, list[LogDigest]]] = {}

    def __len__(self) -> int:
        return len(self._events)

    @property
    def groups(self) -> int:
        """How many digest messages :meth:`flush` would send now."""
        return len(self._groups)

    def add(self, event: Any, pending: list[Any], digest: LogDigest | None, key: bytes | None) -> None:
        """Hold ``event`` (its sends so far in ``pending``) and its batch's ``digest``, if any, keyed ``key``."""
        group = None
        if digest is not None and key is not None:
            # A digest with alerts is a group of its own (the last part of the key is unique to it).
            group = (digest.run, digest.node, digest.rank, len(self._events) if digest.alerts else -1)
            self._groups.setdefault(group, (key, []))[1].append(digest)
        self._events.append((event, pending, group))

    async def flush(self) -> list[tuple[Any, list[Any]]]:
        """Send the held digests (merged; awaits each send's hand-over to the producer, not the broker's
        acknowledgement); return each held event with every future its ack waits for."""
        sent = {
            group: await self.topic.send(key=key, value=merge_digests(found).encode())
            for group, (key, found) in self._groups.items()
        }
        out = [
            (event, [*pending, sent[group]] if group is not None else pending) for event, pending, group in self._events
        ]
        self._events.clear()
        self._groups.clear()
        return out
