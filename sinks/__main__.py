"""``python -m sinks``: the ClickHouse sink on its own (distributed mode).

Consumes the clean topics and ``dlq`` into the ClickHouse named by
``--clickhouse``/``RUNSTREAM_CLICKHOUSE``; several of these share the work
through one consumer group.  SIGTERM/SIGINT: drain what the broker holds now,
commit, exit 0 (1 when the drain did not finish in time; nothing is lost,
the rest is read again on the next start).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from runstream import settings as settings_mod
from runstream.settings import Settings
from sinks.store import open_store
from sinks.writer import SinkWriter, WriterConfig

log = logging.getLogger("runstream.sink")

DRAIN_TIMEOUT_S = 120.0


async def serve(settings: Settings, config: WriterConfig, drain_timeout_s: float) -> int:
    """Run the writer until a stop signal; the exit code says whether everything was stored."""
    store = open_store(settings.clickhouse_dsn, log_retention_days=settings.log_retention_days)
    writer = SinkWriter(store, settings.kafka, settings.topics, config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.create_task(writer.run(), name="sink-writer")
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    drained = True
    if not task.done():
        drained = await writer.drain(drain_timeout_s)
        await writer.stop()
    stopper.cancel()
    try:
        await task
    finally:
        store.close()
    log.info("Stopped. drained=%s stats=%s", drained, writer.stats())
    return 0 if drained else 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sinks", description=__doc__)
    parser.add_argument("--kafka", help="bootstrap servers host:port (RUNSTREAM_KAFKA)")
    parser.add_argument("--clickhouse", help="clickhouse-connect DSN (RUNSTREAM_CLICKHOUSE)")
    parser.add_argument("--data-dir", help="data directory (RUNSTREAM_DATA_DIR)")
    parser.add_argument("--topic-prefix", help="topic prefix (RUNSTREAM_TOPIC_PREFIX)")
    parser.add_argument("--group-id", default=WriterConfig.group_id, help="consumer group")
    parser.add_argument(
        "--max-age-ms", type=int, default=WriterConfig.max_age_ms, help="longest a row waits before it is inserted"
    )
    parser.add_argument(
        "--busy-max-age-ms",
        type=int,
        default=WriterConfig.busy_max_age_ms,
        help="longest a row waits while the sink is busy or behind (larger, fewer inserts)",
    )
    parser.add_argument("--drain-timeout-s", type=float, default=DRAIN_TIMEOUT_S)
    parser.add_argument(
        "--log-retention-days", type=int, help="days log lines are kept (RUNSTREAM_LOG_RETENTION_DAYS, default 30)"
    )
    args = parser.parse_args(argv)
    settings = settings_mod.load(
        {
            "kafka": args.kafka,
            "clickhouse": args.clickhouse,
            "data_dir": args.data_dir,
            "topic_prefix": args.topic_prefix,
            "log_retention_days": args.log_retention_days,
        }
    )
    config = WriterConfig(group_id=args.group_id, max_age_ms=args.max_age_ms, busy_max_age_ms=args.busy_max_age_ms)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    sys.exit(asyncio.run(serve(settings, config, args.drain_timeout_s)))


if __name__ == "__main__":
    main()
