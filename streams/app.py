"""The faust app factory: the one module that imports faust.

One agent per raw topic validates each batch (see :mod:`streams.validate`)
and forwards the good records, as one envelope, to the matching ``clean.*``
topic, keyed by run id, and each bad record to ``dlq`` with its reason.  The
agent awaits the broker's acknowledgement of what it forwarded before it takes
the next message, so an offset is committed only once its output is safe
(at-least-once; the sinks store it exactly once).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust

from runstream.events import Limits
from runstream.settings import Settings
from runstream.topics import RAW_KINDS
from streams.validate import process

log = logging.getLogger("runstream.streams")

APP_ID = "runstream-streams"


@dataclass(frozen=True)
class StreamSettings:
    """What the stream processors need, built once at the edge."""

    settings: Settings
    limits: Limits = field(default_factory=Limits)
    partitions: int = 4
    app_id: str = APP_ID
    stats_interval_s: float = 30.0


@dataclass
class StreamStats:
    """Counters per worker, with bounded label values."""

    messages: Counter[str] = field(default_factory=Counter)
    records: Counter[str] = field(default_factory=Counter)
    discarded: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "messages": dict(self.messages),
            "records": dict(self.records),
            "discarded": dict(self.discarded),
        }


def create_app(conf: StreamSettings) -> tuple[faust.App, StreamStats]:
    """Build the faust app and the counters its agents update."""
    settings = conf.settings
    topics = settings.topics
    datadir = settings.data_path / "streams"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        conf.app_id,
        broker=[f"kafka://{server}" for server in settings.kafka.split(",")],
        store="memory://",
        datadir=str(datadir),
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        topic_partitions=conf.partitions,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=1,
        producer_linger=0.002,
        producer_max_request_size=16 * 1024 * 1024,
        consumer_max_fetch_size=16 * 1024 * 1024,
        broker_commit_interval=0.5,
    )
    stats = StreamStats()
    dlq = app.topic(topics.dlq, value_type=bytes, key_type=bytes)

    for kind in RAW_KINDS:
        source = app.topic(topics.raw(kind), value_type=bytes, key_type=bytes)
        clean = app.topic(topics.clean(kind), value_type=bytes, key_type=bytes)
        app.agent(source, name=f"validate_{kind}")(_validator(kind, clean, dlq, conf.limits, stats))

    @app.timer(interval=conf.stats_interval_s)
    async def report_stats() -> None:
        log.info("Streams counters. %s", " ".join(f"{k}={v}" for k, v in _flat(stats.as_dict())))

    return app, stats


def _validator(kind: str, clean: Any, dlq: Any, limits: Limits, stats: StreamStats) -> Any:
    async def validate(stream: Any) -> Any:
        async for event in stream.events():
            message = event.message
            outcome = process(
                event.value,
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                limits=limits,
                ingest_ns=time.time_ns(),
            )
            pending = []
            if outcome.clean is not None:
                pending.append(await clean.send(key=outcome.key, value=outcome.clean))
            for letter in outcome.dead:
                pending.append(await dlq.send(key=event.key, value=letter))
            for fut in pending:
                await fut
            stats.messages[kind] += 1
            stats.records[kind] += outcome.clean_records
            for reason, n in outcome.discarded.items():
                stats.discarded[reason] += n
            yield outcome.clean_records

    validate.__name__ = f"validate_{kind}"
    return validate


def _flat(doc: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in doc.items():
        if isinstance(value, dict):
            out += _flat(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def run_worker(conf: StreamSettings, *, loglevel: str = "warn", ready_file: Path | None = None) -> None:
    """Run one worker until SIGTERM/SIGINT; blocks; commits offsets on the way out."""
    app, _stats = create_app(conf)

    if ready_file is not None:
        ready_path = ready_file

        @app.on_rebalance_complete.connect
        async def _ready(sender: Any, **kwargs: Any) -> None:
            ready_path.write_text(str(time.time()))

    worker = faust.Worker(app, loglevel=loglevel, redirect_stdouts=False, quiet=True)
    worker.execute_from_commandline()
