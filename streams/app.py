"""The faust app factory: the one module that imports faust.

One agent per raw topic validates each batch (see :mod:`streams.validate`)
and forwards the good records, as one envelope, to the matching ``clean.*``
topic, keyed by run id, and each bad record to ``dlq`` with its reason.

At-least-once without a round trip per message: the agent reads with manual
acks (``stream.noack().events()``), hands what it forwards to the producer
(``Topic.send`` returns once the message is in the producer's buffer, with a
future that resolves on the broker's acknowledgement) and goes on to the next
message at once.  A small task per message awaits those futures and only then
acks the source event.  Faust commits, per partition, the highest offset below
which *every* offset is acked (``Consumer._new_offset`` stops at the first
gap), so an offset is committed only once everything forwarded for it and for
all earlier messages is safe on the broker, whatever order the acks come in.
At most ``max_in_flight`` messages wait for acknowledgement at once (the agent
blocks on a semaphore beyond that), so memory stays bounded.  A send that fails
leaves its event unacked: the offset is never committed past it, and a restart
reads it again (the sinks store each record once, by identity).

Aggregation and detection (``detect=True``) run in separate agents, so the
validators stay a fast stage of their own: one per ``clean.*`` topic (runs,
metrics, resources) and, for logs, one on the ``log-digests`` topic.  A log
batch is by far the largest message and the detectors need little of it, so
the validator that has its records at hand sends, beside the clean batch, its
:class:`streams.digest.LogDigest` (counts, newest stamp, alerts; a few hundred
bytes), keyed by run id like the batch: the log detectors never fetch,
decompress or hash the batches a second time.  While more messages wait in
its queue the validator holds the digests (and the acks of their messages, up
to :data:`streams.digest.MAX_MERGED_DIGESTS` messages) and then sends one per run, node and
rank (:func:`streams.digest.merge_digests`; a digest with alerts goes alone,
so a replay repeats its alerts' identity): a busy worker sends a few digests
instead of one per batch, an idle one each at once.  Nor do the other detectors
decode what this worker's validators sent: :class:`streams.handoff.Handoff`
passes along, for the exact bytes sent, each decoded envelope (anything else
is decoded).  They keep their state in faust tables keyed by run id:

- ``runs``: :class:`streams.detect.RunState` (status, last heartbeat, nodes and
  ranks seen, line/warning/error counts, step times, last seen per rank);
- ``metrics``: :class:`streams.detect.MetricsState` (last/min/max/count per
  metric, loss-spike windows);
- ``gpus``: :class:`streams.detect.GpuState` per GPU;
- ``gpu_10s`` / ``gpu_1m``: tumbling windows (by sample time) per
  ``run/node/device`` of every GPU measure, ``[count, sum, max]`` (avg =
  sum/count); the GPU-idle detector reads the 10 s average.

Values are MessagePack of the state objects' ``to_map()`` (never pickle), and
every table has a changelog topic, so a restarted worker recovers its state.
The clean topics, the digests and the tables share the partitioning (run id,
same count), so faust assigns a partition of each together.  These agents ack
the usual faust way: their output (alerts, changelog records) is flushed before an offset is
committed, so they are at-least-once; alert keys are deterministic, so a replay
or two workers never store one alert twice.  A timer evaluates the run-wide
detectors (stalled after ``crashed_after_s`` without a heartbeat, silent rank,
straggler) every ``check_interval_s`` for the runs of this worker's partitions;
the keys it has sent go into the run's state in the ``runs`` table (its
changelog), and so do the loss series' and GPUs' "reported" flags (saved by
their agents), so a worker that takes a run over after a restart or a
rebalance does not send an alert again.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust

from runstream import kafka, wire
from runstream.events import Limits
from runstream.settings import Settings
from runstream.topics import DEFAULT_APP_ID, DEFAULT_PARTITIONS, RAW_KINDS, changelog_topics
from streams import detect
from streams.detect import DetectorSettings, GpuState, MetricsState, RunState
from streams.digest import DigestMerger, LogDigest, apply_log_digest, digest_logs, merge_limit
from streams.enrich import LogEnricher
from streams.handoff import Handoff, Live
from streams.validate import process

log = logging.getLogger("runstream.streams")

APP_ID = DEFAULT_APP_ID

#: The worker's garbage-collector thresholds (allocations before a young collection, then the older
#: generations' ratios); Python's defaults are (700, 10, 10).
GC_THRESHOLDS = (50_000, 20, 100)
#: Tumbling windows of the GPU rollups (seconds) and how long a closed window is kept.
GPU_WINDOWS_S: dict[str, tuple[float, float]] = {"gpu_10s": (10.0, 120.0), "gpu_1m": (60.0, 600.0)}


@dataclass(frozen=True)
class StreamSettings:
    """What the stream processors need, built once at the edge."""

    settings: Settings
    limits: Limits = field(default_factory=Limits)
    partitions: int = DEFAULT_PARTITIONS
    app_id: str = APP_ID
    stats_interval_s: float = 30.0
    #: Source messages whose forwarded output may await the broker's ack at once.
    max_in_flight: int = 64
    #: Run the aggregation and detection agents (tables, windows, alerts).
    detect: bool = True
    detectors: DetectorSettings = field(default_factory=DetectorSettings)
    #: How often the run-wide detectors (stalled, silent rank, straggler) are evaluated.
    check_interval_s: float = 5.0
    #: How long the group waits for a silent (killed) worker before moving its partitions.
    session_timeout_s: float = 30.0


@dataclass
class StreamStats:
    """Counters per worker, with bounded label values."""

    messages: Counter[str] = field(default_factory=Counter)
    records: Counter[str] = field(default_factory=Counter)
    discarded: Counter[str] = field(default_factory=Counter)
    #: records kept but flagged (``future_ts``: stamped too far ahead of ingest time)
    flagged: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "messages": dict(self.messages),
            "records": dict(self.records),
            "discarded": dict(self.discarded),
            "flagged": dict(self.flagged),
        }


#: The longest the broker may hold the worker's fetch when nothing new is there.  faust
#: hard-codes 1500 ms for its consumer, and Tansu answers such a fetch only after about a
#: quarter of the wait even when records arrive meanwhile (one hop measured: 1500 ms ->
#: p50 389 ms, 50 ms -> p50 9 ms): with faust's value every record waited ~0.4 s here.
FETCH_MAX_WAIT_MS = 50


def _shorten_fetch_wait(wait_ms: int) -> None:
    """Make faust's worker consumer use ``fetch_max_wait_ms=wait_ms`` (faust has no setting for it).

    The consumer is built by ``AIOKafkaConsumerThread._create_worker_consumer``;
    the wrapper sets the value aiokafka hands to its fetcher when the consumer
    starts.  Applied once per process.
    """
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    create = AIOKafkaConsumerThread._create_worker_consumer
    if getattr(create, "runstream_wait_ms", None) is not None:
        return

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = create(self, transport)
        consumer._fetch_max_wait_ms = wait_ms  # noqa: SLF001 - read by AIOKafkaConsumer.start()
        return consumer

    create_worker_consumer.runstream_wait_ms = wait_ms  # type: ignore[attr-defined]
    AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]


def create_app(conf: StreamSettings) -> tuple[faust.App, StreamStats]:
    """Build the faust app and the counters its agents update."""
    _shorten_fetch_wait(FETCH_MAX_WAIT_MS)
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
        # zstd, as the SDK's producer: about 1 µs of this worker's CPU per line (compressing what it
        # forwards; its input comes compressed too), against ~2 µs less for the broker (bench/broker.py).
        producer_compression_type=kafka.COMPRESSION,
        producer_max_request_size=16 * 1024 * 1024,
        consumer_max_fetch_size=16 * 1024 * 1024,
        broker_commit_interval=0.5,
        broker_session_timeout=conf.session_timeout_s,
        broker_heartbeat_interval=min(3.0, conf.session_timeout_s / 3),
        # State is recovered from the changelogs; a standby copy would make two workers report one run.
        table_standby_replicas=0,
    )
    stats = StreamStats()
    dlq = app.topic(topics.dlq, value_type=bytes, key_type=bytes)
    clean_metrics = app.topic(topics.clean("metrics"), value_type=bytes, key_type=bytes)

    handoff = Handoff() if conf.detect else None
    digests = app.topic(topics.log_digests, value_type=bytes, key_type=bytes) if conf.detect else None
    for kind in RAW_KINDS:
        source = app.topic(topics.raw(kind), value_type=bytes, key_type=bytes)
        clean = app.topic(topics.clean(kind), value_type=bytes, key_type=bytes)
        app.agent(source, name=f"validate_{kind}")(
            _validator(kind, clean, dlq, clean_metrics, conf.limits, stats, conf.max_in_flight, handoff, digests)
        )

    if handoff is not None:
        _add_detectors(app, conf, stats, handoff)

    @app.timer(interval=conf.stats_interval_s)
    async def report_stats() -> None:
        log.info("Streams counters. %s", " ".join(f"{k}={v}" for k, v in _flat(stats.as_dict())))

    return app, stats


def _validator(
    kind: str,
    clean: Any,
    dlq: Any,
    clean_metrics: Any,
    limits: Limits,
    stats: StreamStats,
    max_in_flight: int,
    handoff: Handoff | None,
    digests: Any | None,
) -> Any:
    async def validate(stream: Any) -> Any:
        slots = asyncio.Semaphore(max_in_flight)
        enricher = LogEnricher()
        merging = None
        if digests is not None and kind == "logs":
            merging = DigestMerger(digests, merge_limit(max_in_flight))
        async for event in stream.noack().events():
            message = event.message
            outcome = process(
                event.value,
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                limits=limits,
                ingest_ns=time.time_ns(),
                enricher=enricher,
                kind=kind,
            )
            await slots.acquire()
            pending = []
            env = outcome.clean_env
            if handoff is not None:
                if outcome.clean is not None and env is not None and env.kind != "logs":
                    handoff.put(outcome.clean, env)
                if outcome.metrics is not None and outcome.metrics_env is not None:
                    handoff.put(outcome.metrics, outcome.metrics_env)
            digest = None
            if outcome.clean is not None:
                pending.append(await clean.send(key=outcome.key, value=outcome.clean))
                if merging is not None and env is not None and env.kind == "logs":
                    digest = _digest(env)
            if outcome.metrics is not None:
                pending.append(await clean_metrics.send(key=outcome.key, value=outcome.metrics))
            for letter in outcome.dead:
                pending.append(await dlq.send(key=event.key, value=letter))
            if merging is not None:
                # The event is acked once its digest too is sent: held while more events are queued, so a busy
                # stream sends one digest for many batches of a run, and an idle one sends each at once.
                merging.add(event, pending, digest, outcome.key)
                if len(merging) >= merging.limit or stream.channel.empty():
                    stats.messages["log_digests"] += merging.groups
                    for held, held_pending in await merging.flush():
                        asyncio.ensure_future(_ack_when_sent(stream, held, held_pending, slots))
            else:
                asyncio.ensure_future(_ack_when_sent(stream, event, pending, slots))
            stats.messages[kind] += 1
            stats.records[kind] += outcome.clean_records
            stats.records["metrics_from_logs"] += outcome.metric_records
            for reason, n in outcome.discarded.items():
                stats.discarded[reason] += n
            for flag, n in outcome.flagged.items():
                stats.flagged[flag] += n
            yield outcome.clean_records

    validate.__name__ = f"validate_{kind}"
    return validate


def _digest(env: wire.Envelope) -> LogDigest:
    return digest_logs(
        run=env.run, producer=env.producer, seq=env.seq, node=env.node, rank=env.rank, records=env.records
    )


async def _ack_when_sent(stream: Any, event: Any, pending: list[Any], slots: asyncio.Semaphore) -> None:
    """Ack ``event`` once every future in ``pending`` resolved; leave it unacked if one failed."""
    try:
        await asyncio.gather(*pending)
    except Exception as exc:  # noqa: BLE001 - logged; the offset stays uncommitted and is read again
        log.error(
            "Forwarding failed; offset left uncommitted. topic=%s partition=%s offset=%s error=%s",
            event.message.topic,
            event.message.partition,
            event.message.offset,
            type(exc).__name__,
        )
    else:
        await stream.ack(event)
    finally:
        slots.release()


def _flat(doc: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in doc.items():
        if isinstance(value, dict):
            out += _flat(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def run_worker(conf: StreamSettings, *, loglevel: str = "warn", ready_file: Path | None = None) -> None:
    """Run one worker until SIGTERM/SIGINT; blocks; commits offsets on the way out.

    Creates the tables' changelog topics first (partitioned like the clean
    topics).  ``ready_file`` is rewritten after every rebalance with JSON
    ``{"ts": seconds, "assigned": ["topic:partition", ...]}``.
    """
    app, _stats = create_app(conf)
    # Each batch makes and drops thousands of dicts: with the default threshold (700 allocations) the
    # collector runs every few records and its older generations walk every long-lived object (modules,
    # faust's state, the hand-off).  Those go to the permanent generation, and collections come rarer.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # the worker below runs on this loop
    if conf.detect:
        loop.run_until_complete(
            kafka.ensure_topics(conf.settings.kafka, changelog_topics(conf.app_id), conf.partitions)
        )

    if ready_file is not None:
        ready_path = ready_file

        @app.on_rebalance_complete.connect  # type: ignore[arg-type]  # faust's stubs want a receiver of ``signal=``
        async def _ready(sender: Any, **kwargs: Any) -> None:
            assigned = sorted(f"{tp.topic}:{tp.partition}" for tp in app.consumer.assignment())
            tmp = ready_path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"ts": time.time(), "assigned": assigned}))
            tmp.replace(ready_path)  # readers never see a half-written file

    make_worker(app, loglevel).execute_from_commandline()


def make_worker(app: faust.App, loglevel: str) -> faust.Worker:
    """The faust worker that runs ``app``, logging at ``loglevel`` (to stdout) once it starts."""
    worker = faust.Worker(app, loglevel=loglevel, redirect_stdouts=False, quiet=True)
    # At "warn" and above faust's start-up spinner sets the root logger to DEBUG (to spin on every record) and
    # leaves it there: every ``log.debug`` of aiokafka, faust and mode then built a record the handlers drop, on
    # each message sent or fetched (~4 % of this worker's CPU).  No spinner: the root keeps ``loglevel``.
    worker.spinner = None
    return worker


# -- aggregation and detection --------------------------------------------------------------------


def _load(table: Any, key: str) -> dict[str, Any]:
    """The state map stored under ``key`` (empty when none)."""
    return _state_map(table[key])


def _state_map(raw: bytes) -> dict[str, Any]:
    """The state map of a table value (empty for the default, no value)."""
    return wire.unpack(raw) if raw else {}


def _alerts_message(run: str, producer: str, seq: int, node: str, rank: int, alerts: list[dict[str, Any]]) -> bytes:
    """An ``alerts`` envelope; ``producer``/``seq`` are derived from the input, so a replay repeats them."""
    for i, alert in enumerate(alerts):
        alert["i"] = i
    env = wire.Envelope(
        kind="alerts",
        producer=producer[: wire.MAX_ID_CHARS],
        seq=seq,
        run=run,
        node=node or "streams",
        rank=rank,
        sent_ns=time.time_ns(),
        records=alerts,
    )
    return wire.encode(env)


def _add_detectors(app: faust.App, conf: StreamSettings, stats: StreamStats, handoff: Handoff) -> None:
    """Add the tables, the detector agents on the clean topics and the run-wide timer to ``app``."""
    topics = conf.settings.topics
    dconf = conf.detectors
    alerts_topic = app.topic(topics.alerts, value_type=bytes, key_type=bytes)

    def table(name: str) -> Any:
        """A table of run id (JSON str in the changelog) -> MessagePack bytes (raw in the changelog)."""
        made = app.Table(name, default=bytes, partitions=conf.partitions, key_type=str, value_type=bytes)
        # faust derives a table's changelog serializers from its types (JSON for anything but a
        # Record); the values here are already MessagePack bytes, so they go to the changelog as is.
        made.value_serializer = "raw"  # type: ignore[attr-defined]
        return made

    runs_t = table("runs")
    metrics_t = table("metrics")
    gpus_t = table("gpus")
    # The windows follow sample time, not arrival time: ``clock`` holds the time of the sample being added.
    clock = [0.0]
    # Windowed keys are (key, (start, end)) tuples: JSON in the changelog, made tuples again on recovery.
    windows = {
        name: table(name).tumbling(size_s, expires=expires_s).relative_to(lambda event=None: clock[0])
        for name, (size_s, expires_s) in GPU_WINDOWS_S.items()
    }

    # The state objects the agents last saved, beside the very bytes they stored: while the table still holds those
    # bytes (no recovery, no write by the timer since), a run's next batch takes the object instead of decoding them.
    live_runs: Live[RunState] = Live()
    live_metrics: Live[MetricsState] = Live()

    def load_run(key: str) -> RunState:
        raw = runs_t[key]
        state = live_runs.take(key, raw)
        if state is None:
            state = RunState.from_map(_state_map(raw).get("s", {}))
        return state

    def save_run(key: str, partition: int, state: RunState) -> None:
        raw = wire.pack({"p": partition, "s": state.to_map()})
        runs_t[key] = raw
        live_runs.keep(key, raw, state)

    def load_metrics(key: str) -> MetricsState:
        raw = metrics_t[key]
        series = live_metrics.take(key, raw)
        return MetricsState.from_map(_state_map(raw)) if series is None else series

    def save_metrics(key: str, series: MetricsState) -> None:
        raw = wire.pack(series.to_map())
        metrics_t[key] = raw
        live_metrics.keep(key, raw, series)

    async def send_alerts(kind: str, env: wire.Envelope | LogDigest, alerts: list[dict[str, Any]]) -> None:
        if alerts:
            stats.records["alerts"] += len(alerts)
            await alerts_topic.send(
                key=env.run.encode(),
                value=_alerts_message(env.run, f"streams~{kind}~{env.producer}", env.seq, env.node, env.rank, alerts),
            )

    def clean_envelopes(stream: Any) -> Any:
        """The decoded envelopes of a clean topic; one that does not decode is counted and skipped, so a poison
        message never stops a detector's partition."""

        async def gen() -> Any:
            async for event in stream.events():
                env = handoff.take(event.value)
                if env is None:
                    stats.messages["detect_decoded"] += 1
                    try:
                        env = wire.decode(event.value)
                    except Exception:  # noqa: BLE001 - any undecodable bytes: skip, never stop
                        stats.discarded["detect_decode"] += 1
                        continue
                else:
                    stats.messages["detect_handed_off"] += 1
                yield env, event.message.partition

        return gen()

    async def on_runs(stream: Any) -> Any:
        async for env, part in clean_envelopes(stream):
            key = env.run
            state = load_run(key)
            detect.apply_runs(state, node=env.node, rank=env.rank, records=env.records)
            save_run(key, part, state)
            yield len(env.records)

    async def on_metrics(stream: Any) -> Any:
        async for env, part in clean_envelopes(stream):
            key = env.run
            state = load_run(key)
            series = load_metrics(key)
            alerts = detect.apply_metrics(state, series, dconf, node=env.node, rank=env.rank, records=env.records)
            save_run(key, part, state)
            save_metrics(key, series)
            await send_alerts("metrics", env, alerts)
            yield len(env.records)

    async def on_logs(stream: Any) -> Any:
        async for event in stream.events():
            try:
                digest = LogDigest.decode(event.value)
            except Exception:  # noqa: BLE001 - any undecodable bytes: skip, never stop
                stats.discarded["detect_decode"] += 1
                continue
            key = digest.run
            state = load_run(key)
            alerts = apply_log_digest(state, digest)
            save_run(key, event.message.partition, state)
            await send_alerts("logs", digest, alerts)
            yield digest.lines

    async def on_resources(stream: Any) -> Any:
        async for env, part in clean_envelopes(stream):
            key = env.run
            state = load_run(key)
            gpus = _load(gpus_t, key)
            alerts: list[dict[str, Any]] = []
            newest = 0
            for rec in env.records:
                newest = max(newest, rec["ts_ns"])
                device = rec["device"]
                if not device.startswith("gpu"):
                    continue
                clock[0] = rec["ts_ns"] / detect.NS
                wkey = f"{env.run}/{env.node}/{device}"
                avg: dict[str, float] = {}
                for name, window in windows.items():
                    raw = window[wkey].value()
                    roll: dict[str, list[float]] = wire.unpack(raw) if raw else {}
                    for measure, value in rec["values"].items():
                        cur = roll.get(measure)
                        if cur is None:
                            roll[measure] = [1, value, value]
                        else:
                            cur[0] += 1
                            cur[1] += value
                            cur[2] = max(cur[2], value)
                    window[wkey] = wire.pack(roll)
                    if name == "gpu_10s":
                        avg = {m: v[1] / v[0] for m, v in roll.items()}
                if "util_pct" in avg:
                    gkey = f"{env.node}/{device}"
                    gpu = GpuState.from_map(gpus.get(gkey, {}))
                    alerts += detect.on_gpu_sample(
                        gpu,
                        dconf,
                        running=state.status == "running",
                        node=env.node,
                        rank=env.rank,
                        device=device,
                        ts_ns=rec["ts_ns"],
                        util_pct=avg["util_pct"],
                    )
                    gpus[gkey] = gpu.to_map()
            if newest:
                detect.on_seen(state, node=env.node, rank=env.rank, ts_ns=newest)
            save_run(key, part, state)
            gpus_t[key] = wire.pack(gpus)
            await send_alerts("resources", env, alerts)
            yield len(env.records)

    for kind, fun in (("runs", on_runs), ("metrics", on_metrics), ("logs", on_logs), ("resources", on_resources)):
        name = topics.log_digests if kind == "logs" else topics.clean(kind)
        source = app.topic(name, value_type=bytes, key_type=bytes)
        fun.__name__ = f"detect_{kind}"
        app.agent(source, name=f"detect_{kind}")(fun)

    clean_runs = topics.clean("runs")

    def remember_reported(key: str, keys: list[str]) -> None:
        """Add ``keys`` to the run's ``reported`` in the table, from outside stream iteration (the timer).

        Faust refuses ``runs_t[key] = value`` without a current event (it takes the changelog partition from
        it), so the value goes to the changelog under the partition stored with it, and into the local
        store, as ``__setitem__`` does.  Read again here: an agent may have changed the state meanwhile
        (it never changes ``reported``), and its change must stay."""
        doc = wire.unpack(runs_t[key])
        state = RunState.from_map(doc.get("s", {}))
        state.reported = (state.reported + [k for k in keys if k not in state.reported])[-detect.MAX_REPORTED :]
        value = wire.pack({"p": doc["p"], "s": state.to_map()})
        runs_t.send_changelog(doc["p"], key, value)
        runs_t.data[key] = value

    # The consumer generation whose tables are recovered.  While a rebalance or a recovery is under way a
    # run's state may be an older version from the changelog (before its "reported" keys were saved): the
    # timer must not judge it then, or a restarted worker would send an alert again.
    settled: list[int | None] = [None]

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]  # faust's stubs want a receiver of ``signal=``
    async def _settled(sender: Any, **kwargs: Any) -> None:
        settled[0] = app.consumer_generation_id

    @app.timer(interval=conf.check_interval_s)
    async def check_runs() -> None:
        """Evaluate the run-wide detectors for the runs of the partitions this worker holds, once its tables
        are recovered.

        What was reported is kept with the run's state in the changelog-backed table, so the worker that
        holds the run after a restart or a rebalance does not send those alerts again."""
        if app.rebalancing or app.in_recovery or settled[0] != app.consumer_generation_id:
            return
        mine = {tp.partition for tp in app.consumer.assignment() if tp.topic == clean_runs}
        now_ns = time.time_ns()
        for key in list(runs_t.keys()):
            raw = runs_t.get(key)  # now, not from a list taken before the awaits below
            if not raw:
                continue
            doc = wire.unpack(raw)
            if doc.get("p") not in mine:
                continue
            state = RunState.from_map(doc.get("s", {}))
            fresh = detect.check_run(state, dconf, now_ns)  # the alerts not in state.reported
            if not fresh:
                continue
            stats.records["alerts"] += len(fresh)
            message = _alerts_message(key, "streams~check", now_ns // detect.NS, "", -1, fresh)
            # The alert first, then the state that says it was sent: a crash in between repeats the
            # alert (same key: the store keeps one) instead of losing it.
            await alerts_topic.send(key=key.encode(), value=message)
            remember_reported(key, [alert["key"] for alert in fresh])
