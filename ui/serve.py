"""``python -m ui.serve``: the storage-and-query process of an embedded deployment.

chDB allows one process per data directory, so the ClickHouse sink (which
writes) and the HTTP API (which reads) share this process and its single
chDB thread.  SIGTERM/SIGINT: the sink drains what the broker holds for it
(up to the end offsets at that moment), commits, and only then does the API
stop; the process exits 0 when everything was stored.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import signal
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

import uvicorn

from runstream import settings as settings_mod
from runstream.settings import Settings
from sinks.queries import Queries
from sinks.store import open_store
from sinks.writer import SinkWriter, WriterConfig
from ui.api import create_app
from ui.auth import default_allowed_hosts
from ui.feed import Feed
from ui.history import History
from ui.hub import Hub
from ui.live import LiveConfig, LiveSource

log = logging.getLogger("runstream.serve")

DRAIN_TIMEOUT_S = 120.0
#: Largest websocket frame a client may send (subscriptions are small).
MAX_WS_MESSAGE_BYTES = 64 * 1024


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: this process owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve(
    settings: Settings,
    host: str,
    port: int,
    token: str,
    ready_file: Path | None,
    with_sink: bool = True,
    feed_max_pending_items: int = 10_000,
    live_config: LiveConfig | None = None,
    sink_group_id: str = WriterConfig.group_id,
) -> int:
    """Run the sink (unless ``with_sink`` is false) and the API until a stop signal.

    ``sink_group_id`` is the sink's consumer group: this process's sink uses
    it, and the live feed reads its committed offsets to know what is stored
    (with ``with_sink`` false, it names the separate sinks' group).
    Returns the process exit code: 0 when everything received was stored.
    """
    store = open_store(settings.clickhouse_dsn, log_retention_days=settings.log_retention_days)
    queries = Queries(store)
    writer = SinkWriter(store, settings.kafka, settings.topics, WriterConfig(group_id=sink_group_id))
    live = LiveSource(
        Hub(),
        settings.kafka,
        settings.topics,
        dataclasses.replace(live_config or LiveConfig(), sink_group_id=sink_group_id),
    )

    async def health() -> dict[str, Any]:
        ok_queries = await store.read_call(queries.ping)
        if not with_sink:
            return {"ok": bool(ok_queries), "queries": ok_queries, "live": live.stats(), "feed": feed.stats()}
        ok_ingest = writer.healthy()
        return {
            "ok": bool(ok_queries and ok_ingest),
            "queries": ok_queries,
            "ingest": ok_ingest,
            "sink": writer.stats(),
            "live": live.stats(),
            "feed": feed.stats(),
        }

    hub = live.hub
    history = History(store, queries.limits.settings())
    feed = Feed(
        hub,
        live,
        history,
        queries.get_run,
        store.read_call,
        max_message_bytes=MAX_WS_MESSAGE_BYTES,
        max_pending_items=feed_max_pending_items,
    )
    app = create_app(
        queries,
        store.read_call,
        token=token,
        health=health,
        allowed_hosts=_allowed_hosts(host, port),
        feed=feed,
        step_times=history.step_times,
    )
    server = _Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            access_log=False,
            ws="websockets-sansio",
            ws_max_size=MAX_WS_MESSAGE_BYTES,
        )
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    writer_task = asyncio.create_task(writer.run() if with_sink else _forever(), name="sink-writer")
    server_task = asyncio.create_task(server.serve(), name="http")
    live_task = asyncio.create_task(live.run(), name="live-feed")
    stop_task = asyncio.create_task(stop.wait(), name="stop")
    while not server.started:
        if server_task.done() or writer_task.done():
            break
        await asyncio.sleep(0.02)
    if server.started and ready_file is not None:
        ready_file.write_text("ready")

    done, _ = await asyncio.wait({writer_task, server_task, live_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    for task in done:
        if task is not stop_task and task.exception() is not None:
            log.error("Component failed. task=%s error=%r", task.get_name(), task.exception())
            code = 1
    if with_sink and not writer_task.done():
        drained = await writer.drain(DRAIN_TIMEOUT_S)
        if not drained:
            log.error("Drain timed out. timeout_s=%s", DRAIN_TIMEOUT_S)
            code = code or 2
        await writer.stop()
        writer_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await writer_task
    if not writer_task.done():
        writer_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer_task
    server.should_exit = True
    with contextlib.suppress(asyncio.CancelledError):
        await server_task
    await live.stop()
    live_task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await live_task
    stop_task.cancel()
    store.close()
    log.info("Stopped. stats=%s", writer.stats())
    return code


async def _forever() -> None:
    await asyncio.Event().wait()


def _allowed_hosts(host: str, port: int) -> tuple[str, ...]:
    """Loopback names on this port when bound to loopback, else the bound name on this port."""
    if host in ("127.0.0.1", "localhost", "::1"):
        return default_allowed_hosts(port)
    return (f"[{host}]:{port}" if ":" in host else f"{host}:{port}",)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ui.serve", description=__doc__)
    parser.add_argument("--kafka", help="bootstrap servers host:port (RUNSTREAM_KAFKA)")
    parser.add_argument("--clickhouse", help="clickhouse-connect DSN (RUNSTREAM_CLICKHOUSE)")
    parser.add_argument("--data-dir", help="data directory (RUNSTREAM_DATA_DIR)")
    parser.add_argument("--topic-prefix", help="topic prefix (RUNSTREAM_TOPIC_PREFIX)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--ready-file", type=Path)
    parser.add_argument(
        "--no-sink", action="store_true", help="serve the API only (distributed mode, where `python -m sinks` writes)"
    )
    parser.add_argument(
        "--sink-group-id",
        default=WriterConfig.group_id,
        help="the sink's consumer group; with --no-sink, the one `python -m sinks --group-id` uses "
        f"(the live feed reads its committed offsets to know what is stored; default {WriterConfig.group_id})",
    )
    parser.add_argument(
        "--feed-recent-messages",
        type=int,
        default=LiveConfig.recent_messages,
        help="messages per run and stream the live feed keeps for new subscribers "
        f"(default {LiveConfig.recent_messages}; also bounded by {LiveConfig.recent_s:g} s and "
        f"{LiveConfig.recent_bytes >> 20} MiB)",
    )
    parser.add_argument(
        "--feed-max-pending-items",
        type=int,
        default=10_000,
        help="live records queued per websocket subscription before it is coalesced or dropped (default 10000)",
    )
    args = parser.parse_args(argv)
    settings = settings_mod.load(
        {
            "kafka": args.kafka,
            "clickhouse": args.clickhouse,
            "data_dir": args.data_dir,
            "topic_prefix": args.topic_prefix,
        }
    )
    if not settings.token:
        sys.exit("ui.serve: RUNSTREAM_TOKEN must be set (runstream up sets it)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    sys.exit(
        asyncio.run(
            serve(
                settings,
                args.host,
                args.port,
                settings.token,
                args.ready_file,
                with_sink=not args.no_sink,
                feed_max_pending_items=args.feed_max_pending_items,
                live_config=LiveConfig(recent_messages=args.feed_recent_messages),
                sink_group_id=args.sink_group_id,
            )
        )
    )


if __name__ == "__main__":
    main()
