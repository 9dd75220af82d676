"""Validation of raw batches: pure, no I/O, unit-testable.

One raw Kafka message in, at most one clean envelope and any number of dead
letters out.  A bad record goes to the dead-letter topic with its reason and
the rest of its batch carries on; a message that is not an envelope at all
becomes one dead letter.  Nothing here raises on any input.

Timestamps: a record keeps the producer's ``ts_ns``; the clean envelope
carries ``ingest_ns``, when this stage read it (stored beside it).  Old
records are accepted whatever their age (late data, a replayed spool, a
restore from checkpoint) down to 2000-01-01; a record stamped more than
``Limits.max_future_skew_s`` (5 min) after ``ingest_ns`` is kept and flagged
with ``future_ns`` (how far ahead, in ns) and counted as ``future_ts``: a
producer clock running ahead, which would otherwise sort its lines after
everything else.

Per-record cost matters (the target is 200k log lines/s per worker): the
common, well-formed ``logs`` and ``metrics`` records take a fast path
(:mod:`streams.fastpath`) that checks exactly what the validator checks with
exact-type tests and builds the same output; anything it is not sure about
(wrong types, a long line, an alias level, a NUL) falls back to the full
validator in :mod:`runstream.events`, which owns the reasons.  A raw ``logs``
or ``metrics`` message is first offered to its typed decoder (:mod:`streams.fastdecode`),
which decodes and checks the envelope and all its records in one C pass when
they are all plainly well-formed, and otherwise leaves it to the path above.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import itemgetter

from runstream import deadletter, wire
from runstream.errors import DecodeError, InvalidRecord, UnsupportedVersion
from runstream.events import VALIDATORS, Limits
from streams.enrich import LOG_METRICS_SUFFIX, LogEnricher
from streams.fastdecode import TypedDecoder, log_decoder, metric_decoder
from streams.fastpath import BatchChecker, FastChecker, fast_batch, fast_checker


@dataclass
class Outcome:
    """What one raw message became."""

    key: bytes | None = None
    clean: bytes | None = None
    clean_records: int = 0
    dead: list[bytes] = field(default_factory=list)
    #: reason class -> count, with bounded label values ("decode", "version", "record", ...)
    discarded: Counter[str] = field(default_factory=Counter)
    #: records kept but flagged, by flag ("future_ts")
    flagged: Counter[str] = field(default_factory=Counter)
    #: a ``clean.metrics`` envelope of the metrics extracted from log lines (key: ``key``)
    metrics: bytes | None = None
    metric_records: int = 0
    #: what ``clean`` and ``metrics`` decode to (for the detectors of this worker: no second decode)
    clean_env: wire.Envelope | None = None
    metrics_env: wire.Envelope | None = None


def process(
    value: bytes | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    limits: Limits,
    ingest_ns: int | None = None,
    enricher: LogEnricher | None = None,
    kind: str | None = None,
) -> Outcome:
    """Validate (and, for logs, enrich) one raw message; never raises.

    ``enricher`` carries traceback state across a producer's batches; without
    one, a fresh one is used (no state across calls).  ``kind``: the kind the
    message's topic carries, a hint for the typed fast decoders (the envelope's
    own ``kind`` decides what it is).
    """
    out = Outcome()
    now = time.time_ns() if ingest_ns is None else ingest_ns
    typed = _typed_decoder(kind, limits) if value and kind in _TYPED else None
    if typed is not None:
        env = typed(value)  # type: ignore[arg-type]  # ``value`` is non-empty bytes here
        if env is not None:
            _finish(env, env.records, now, limits, enricher, out)
            return out
    try:
        env = wire.decode(value)
    except UnsupportedVersion as exc:
        out.dead.append(_whole(topic, partition, offset, f"unsupported: {exc}", value, now))
        out.discarded["version"] += 1
        return out
    except DecodeError as exc:
        out.dead.append(_whole(topic, partition, offset, f"malformed envelope: {exc}", value, now))
        out.discarded["decode"] += 1
        return out
    except Exception as exc:  # noqa: BLE001 - a poison message must never stop a partition
        out.dead.append(_whole(topic, partition, offset, f"undecodable: {type(exc).__name__}", value, now))
        out.discarded["decode"] += 1
        return out

    if len(env.records) > limits.max_records_per_batch:
        reason = f"batch has {len(env.records)} records, more than {limits.max_records_per_batch}"
        out.dead.append(_whole(topic, partition, offset, reason, value, now, env))
        out.discarded["too_large"] += 1
        return out

    validator = VALIDATORS[env.kind]
    batch, fast = _checkers(env.kind, limits)
    whole = batch(env.records) if batch is not None else None
    clean: list[dict[str, object]] = whole if whole is not None else []
    for index, record in enumerate(env.records if whole is None else ()):
        if fast is not None:
            quick = fast(record, index)
            if quick is not None:
                clean.append(quick)
                continue
        try:
            rec = validator(record, limits)
        except InvalidRecord as exc:
            out.dead.append(
                deadletter.make(
                    topic=topic,
                    partition=partition,
                    offset=offset,
                    reason=f"invalid {env.kind} record: {exc}",
                    sample=record,
                    producer=env.producer,
                    seq=env.seq,
                    index=index,
                    run=env.run,
                    ts_ns=now,
                )
            )
            out.discarded["record"] += 1
            continue
        except Exception as exc:  # noqa: BLE001 - validators are total; this is a bug guard
            out.dead.append(
                deadletter.make(
                    topic=topic,
                    partition=partition,
                    offset=offset,
                    reason=f"validator failed: {type(exc).__name__}: {exc}",
                    sample=record,
                    producer=env.producer,
                    seq=env.seq,
                    index=index,
                    run=env.run,
                    ts_ns=now,
                )
            )
            out.discarded["bug"] += 1
            continue
        rec["i"] = index
        clean.append(rec)

    if clean:
        _finish(env, clean, now, limits, enricher, out)
    return out


def _finish(
    env: wire.Envelope,
    clean: list[dict[str, object]],
    now: int,
    limits: Limits,
    enricher: LogEnricher | None,
    out: Outcome,
) -> None:
    """Flag, enrich (logs) and encode the non-empty ``clean`` records of ``env`` into ``out``."""
    _flag_future(clean, now + int(limits.max_future_skew_s * 1e9), now, out)
    if env.kind == "logs":
        _enrich(env, clean, enricher or LogEnricher(), now, out)
    env.records = clean
    env.ingest_ns = now
    out.clean = wire.encode(env)
    out.clean_env = env
    out.clean_records = len(clean)
    out.key = env.run.encode()


#: The kinds with a typed decoder, and the decoders per (kind, limits), built once (building one defines its
#: struct types; the metrics one remembers the names already checked).
_TYPED: dict[str, Callable[[Limits], TypedDecoder]] = {"logs": log_decoder, "metrics": metric_decoder}
_TYPED_DECODERS: dict[tuple[str, Limits], TypedDecoder] = {}


def _typed_decoder(kind: str, limits: Limits) -> TypedDecoder:
    found = _TYPED_DECODERS.get((kind, limits))
    if found is None:
        found = _TYPED_DECODERS[(kind, limits)] = _TYPED[kind](limits)
    return found


_get_ts = itemgetter("ts_ns")


def _flag_future(clean: list[dict[str, object]], limit_ns: int, now: int, out: Outcome) -> None:
    """Mark the records stamped after ``limit_ns`` with ``future_ns`` (ahead of ``now``); one C scan when none is."""
    if max(map(_get_ts, clean)) <= limit_ns:  # type: ignore[type-var]
        return
    for rec in clean:
        ts = rec["ts_ns"]
        if ts > limit_ns:  # type: ignore[operator]
            rec["future_ns"] = ts - now  # type: ignore[operator]
            out.flagged["future_ts"] += 1


#: The fast paths per (kind, limits), built once: they remember the metric names already checked.
_CHECKERS: dict[tuple[str, Limits], tuple[BatchChecker | None, FastChecker | None]] = {}


def _checkers(kind: str, limits: Limits) -> tuple[BatchChecker | None, FastChecker | None]:
    found = _CHECKERS.get((kind, limits))
    if found is None:
        found = _CHECKERS[(kind, limits)] = (fast_batch(kind, limits), fast_checker(kind, limits))
    return found


def _enrich(env: wire.Envelope, clean: list[dict[str, object]], enricher: LogEnricher, now: int, out: Outcome) -> None:
    try:
        metrics = enricher.enrich(env.producer, env.seq, env.rank, clean)  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - enrichment is best effort; the lines are stored either way
        out.discarded["enrich_bug"] += 1
        return
    if metrics:
        derived = wire.Envelope(
            kind="metrics",
            producer=env.producer + LOG_METRICS_SUFFIX,
            seq=env.seq,
            run=env.run,
            node=env.node,
            rank=env.rank,
            sent_ns=env.sent_ns,
            records=metrics,
            v_minor=env.v_minor,
            ingest_ns=now,
        )
        out.metrics = wire.encode(derived)
        out.metrics_env = derived
        out.metric_records = len(metrics)


def _whole(
    topic: str,
    partition: int,
    offset: int,
    reason: str,
    value: bytes | None,
    now: int,
    env: wire.Envelope | None = None,
) -> bytes:
    return deadletter.make(
        topic=topic,
        partition=partition,
        offset=offset,
        reason=reason,
        sample=value[:256] if value else value,
        producer=env.producer if env else "",
        seq=env.seq if env else -1,
        run=env.run if env else "",
        ts_ns=now,
    )
